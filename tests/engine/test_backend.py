"""Backend selection, host/device moves, memory-sized batching with OOM retry."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from cryoweave.engine import (
    _backend,
    array_namespace,
    batch_size_for,
    cupy_available,
    fft_workers,
    free_device_memory_bytes,
    get_namespace,
    is_out_of_memory,
    map_batches_with_oom_retry,
    resolve_device,
    to_device,
    to_host,
)


class _FakeCupyArray:
    """Looks like a CuPy array to `array_namespace` (type defined in a 'cupy' module)."""


_FakeCupyArray.__module__ = "cupy._core.core"


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(_backend, "cupy_available", lambda: False)


@pytest.fixture
def with_gpu(monkeypatch):
    monkeypatch.setattr(_backend, "cupy_available", lambda: True)


# ------------------------------------------------------------------------------------ namespaces


def test_array_namespace_follows_the_inputs(xp):
    assert array_namespace(xp.zeros(3), xp.ones((2, 2))) is xp


def test_array_namespace_accepts_numpy_scalars():
    assert array_namespace(np.float32(1.0), np.zeros(2)) is np


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ((), "at least one array"),
        (([1.0, 2.0],), "got list.*numpy.asarray"),
        ((np.zeros(2), _FakeCupyArray()), "mixed NumPy and CuPy.*to_device"),
    ],
)
def test_array_namespace_rejects_non_arrays_and_mixtures(arrays, match):
    with pytest.raises(TypeError, match=match):
        array_namespace(*arrays)


def test_cupy_available_is_false_when_cupy_cannot_import(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    cupy_available.cache_clear()
    try:
        assert cupy_available() is False
    finally:
        cupy_available.cache_clear()


# ------------------------------------------------------------------------------------ devices


@pytest.mark.parametrize(("request_", "expected"), [("cpu", "cpu"), (" CPU ", "cpu")])
def test_resolve_device_explicit_cpu(request_, expected):
    assert resolve_device(request_) == expected


def test_resolve_device_auto(no_gpu, monkeypatch):
    monkeypatch.delenv("CRYOWEAVE_DEVICE", raising=False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device(None) == "cpu"
    monkeypatch.setattr(_backend, "cupy_available", lambda: True)
    assert resolve_device("auto") == "gpu"
    assert resolve_device(None) == "gpu"


def test_resolve_device_reads_the_environment(with_gpu, monkeypatch):
    monkeypatch.setenv("CRYOWEAVE_DEVICE", "cpu")
    assert resolve_device(None) == "cpu"
    monkeypatch.setenv("CRYOWEAVE_DEVICE", "gpu")
    assert resolve_device(None) == "gpu"


def test_gpu_without_cupy_says_how_to_install(no_gpu, monkeypatch):
    with pytest.raises(ValueError, match=r"pip install cryoweave\[gpu\]"):
        resolve_device("gpu")
    monkeypatch.setenv("CRYOWEAVE_DEVICE", "gpu")
    with pytest.raises(ValueError, match=r"pip install cryoweave\[gpu\]"):
        get_namespace(None)


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match=r"device='tpu' is not one of cpu, gpu, auto"):
        resolve_device("tpu")


def test_cpu_namespace_and_moves_do_not_copy():
    x = np.arange(4.0)
    assert get_namespace("cpu") is np
    assert to_host(x) is x
    assert to_device(x, "cpu") is x


def test_to_device_and_back_round_trips(xp):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    device = "cpu" if xp is np else "gpu"
    on_device = to_device(host, device)
    assert array_namespace(on_device) is xp
    back = to_host(on_device)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)


def test_free_cpu_memory_is_plausible():
    free_bytes = free_device_memory_bytes("cpu")
    total_bytes = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < free_bytes <= total_bytes


# ------------------------------------------------------------------------------------ batching


@pytest.mark.parametrize(
    ("per_item", "budget", "max_batch", "expected"),
    [(100, 1_000, 50, 10), (100, 10_000, 50, 50), (100, 50, 50, 1), (100, 199, 50, 1)],
)
def test_batch_size_for(per_item, budget, max_batch, expected):
    assert batch_size_for(per_item, budget, max_batch) == expected


@pytest.mark.parametrize(
    ("per_item", "max_batch", "match"), [(0, 10, "bytes_per_item=0"), (10, 0, "max_batch=0")]
)
def test_batch_size_for_rejects_bad_values(per_item, max_batch, match):
    with pytest.raises(ValueError, match=match):
        batch_size_for(per_item, 1000, max_batch)


def _fails_above(limit: int, calls: list[tuple[int, int]]):
    def fn(start: int, stop: int) -> list[int]:
        calls.append((start, stop))
        if stop - start > limit:
            raise MemoryError("out of memory")
        return list(range(start, stop))

    return fn


def test_oom_halves_the_batch_and_keeps_the_smaller_size():
    calls: list[tuple[int, int]] = []
    results = list(map_batches_with_oom_retry(_fails_above(3, calls), 11, 8))
    assert calls[:3] == [(0, 8), (0, 4), (0, 2)]
    assert [(start, stop) for start, stop, _ in results] == [
        (0, 2),
        (2, 4),
        (4, 6),
        (6, 8),
        (8, 10),
        (10, 11),
    ]
    assert [i for _, _, chunk in results for i in chunk] == list(range(11))


def test_oom_at_batch_size_one_is_reraised():
    calls: list[tuple[int, int]] = []
    with pytest.raises(MemoryError):
        list(map_batches_with_oom_retry(_fails_above(0, calls), 5, 4))
    assert calls == [(0, 4), (0, 2), (0, 1)]


def test_other_errors_are_not_retried():
    calls = []

    def fn(start: int, stop: int) -> None:
        calls.append((start, stop))
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        list(map_batches_with_oom_retry(fn, 10, 4))
    assert calls == [(0, 4)]


def test_batches_are_lazy_and_empty_input_yields_nothing():
    calls: list[tuple[int, int]] = []
    batches = map_batches_with_oom_retry(_fails_above(100, calls), 10, 4)
    assert calls == []
    assert next(batches)[:2] == (0, 4)
    assert list(map_batches_with_oom_retry(_fails_above(100, calls), 0, 4)) == []


@pytest.mark.parametrize(
    ("n_items", "batch", "match"), [(-1, 4, "n_items=-1"), (4, 0, "batch_size=0")]
)
def test_batch_helper_rejects_bad_values(n_items, batch, match):
    with pytest.raises(ValueError, match=match):
        list(map_batches_with_oom_retry(lambda a, b: None, n_items, batch))


def test_is_out_of_memory():
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("CUDA error"))


# ------------------------------------------------------------------------------------ FFT threads


def test_fft_workers_default_and_environment(monkeypatch):
    monkeypatch.delenv("CRYOWEAVE_FFT_WORKERS", raising=False)
    assert fft_workers() == (os.cpu_count() or 1)
    monkeypatch.setenv("CRYOWEAVE_FFT_WORKERS", "3")
    assert fft_workers() == 3


@pytest.mark.parametrize("value", ["0", "-2", "many"])
def test_fft_workers_rejects_bad_environment(monkeypatch, value):
    monkeypatch.setenv("CRYOWEAVE_FFT_WORKERS", value)
    with pytest.raises(ValueError, match=f"CRYOWEAVE_FFT_WORKERS='{value}' must be a positive"):
        fft_workers()
