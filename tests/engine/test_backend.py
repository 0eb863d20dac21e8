"""Backend selection, host/device moves, memory-sized batching with OOM retry."""

from __future__ import annotations

import itertools
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


# ------------------------------------------------- batch sizing + OOM retry with a real kernel


def _crop_with_memory_cap(images, box_px: int, cap_bytes: int, sizes: list[int]):
    """fourier_crop of images[start:stop] that fails like an allocator over `cap_bytes`."""
    from cryoweave.engine import fourier_crop, fourier_crop_working_bytes

    per_image = fourier_crop_working_bytes(images.shape[-1], box_px)

    def fn(start: int, stop: int):
        sizes.append(stop - start)
        if (stop - start) * per_image > cap_bytes:
            raise MemoryError(f"cannot allocate {(stop - start) * per_image} bytes")
        return fourier_crop(images[start:stop], box_px)

    return fn, per_image


@pytest.mark.parametrize(("n_items", "first_batch"), [(23, 16), (24, 8), (5, 64)])
def test_oom_retry_and_batch_sizing_around_fourier_crop(monkeypatch, xp, n_items, first_batch):
    from cryoweave.engine import fourier_crop

    released = []
    monkeypatch.setattr(_backend, "_release_cached_device_memory", lambda: released.append(1))
    images = xp.asarray(
        np.random.default_rng(n_items).standard_normal((n_items, 48, 48)).astype(np.float32))
    sizes: list[int] = []
    fn, per_image = _crop_with_memory_cap(images, 24, 3 * _per_image_bytes(48, 24), sizes)
    batch = batch_size_for(per_image, 10 * per_image, max_batch=first_batch)
    assert batch == min(10, first_batch)
    results = list(map_batches_with_oom_retry(fn, n_items, batch))
    spans = [(start, stop) for start, stop, _ in results]
    assert spans[0][0] == 0 and spans[-1][1] == n_items
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # each item once
    assert max(stop - start for start, stop in spans) <= 3  # halved until it fits the cap
    assert len(released) == sum(1 for size in sizes if size > 3)  # one release per failure
    whole = to_host(fourier_crop(images, 24))
    stacked = np.concatenate([to_host(out) for _, _, out in results])
    np.testing.assert_allclose(stacked, whole, rtol=0, atol=1e-6 * np.abs(whole).max())


def _per_image_bytes(big: int, small: int) -> int:
    from cryoweave.engine import fourier_crop_working_bytes

    return fourier_crop_working_bytes(big, small)


def test_cufft_alloc_failure_counts_as_out_of_memory(monkeypatch):
    import types

    class CuFFTError(Exception):
        pass

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(cufft=types.SimpleNamespace(CuFFTError=CuFFTError))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    assert is_out_of_memory(CuFFTError("CUFFT_ALLOC_FAILED"))
    assert not is_out_of_memory(CuFFTError("CUFFT_INVALID_PLAN"))


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")
def test_capped_cupy_pool_triggers_the_oom_retry_and_the_result_matches_numpy():
    """A real device OutOfMemoryError: CuPy's pool capped below one batch's working memory."""
    import cupy

    from cryoweave.engine import fourier_crop, fourier_crop_working_bytes

    n_items, big, small = 64, 256, 128
    host = np.random.default_rng(3).standard_normal((n_items, big, big)).astype(np.float32)
    want = fourier_crop(host, small)
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    cupy.fft.config.get_plan_cache().clear()
    per_image = fourier_crop_working_bytes(big, small)
    sizes: list[int] = []
    limit = pool.get_limit()
    try:
        # room for the whole input stack plus ~6 images of working memory (plans included)
        pool.set_limit(size=host.nbytes + 6 * per_image)
        images = cupy.asarray(host)

        def fn(start: int, stop: int):
            sizes.append(stop - start)
            return cupy.asnumpy(fourier_crop(images[start:stop], small))

        results = list(map_batches_with_oom_retry(fn, n_items, n_items))
    finally:
        pool.set_limit(size=limit)
        pool.free_all_blocks()
    assert sizes[0] == n_items and len(set(sizes)) > 1  # the first batch ran out and was halved
    got = np.concatenate([out for _, _, out in results])
    assert np.linalg.norm(got - want) <= 1e-5 * np.linalg.norm(want)
