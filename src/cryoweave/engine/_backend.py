"""Array backends: NumPy on the CPU, CuPy on a GPU.

Kernels never choose a backend themselves: they take the namespace from their inputs with
`array_namespace` (NumPy in -> NumPy out, CuPy in -> CuPy out). Moving data between host and
device happens only here (`to_device`, `to_host`), at the edges of a pipeline.

CuPy is imported lazily, the first time a GPU is asked for or a CuPy array is seen, never when
`cryoweave` is imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, Literal, TypeVar

import numpy

Device = Literal["cpu", "gpu"]
T = TypeVar("T")

DEVICE_ENV_VAR = "CRYOWEAVE_DEVICE"
FFT_WORKERS_ENV_VAR = "CRYOWEAVE_FFT_WORKERS"
_DEVICE_CHOICES = ("cpu", "gpu", "auto")
_GPU_INSTALL_HINT = (
    "install the GPU extra with `pip install cryoweave[gpu]` (CuPy for CUDA 12) on a machine "
    "with an NVIDIA GPU, or choose device='cpu'"
)


def _is_cupy_array(x: object) -> bool:
    # Decided by the type's module so that CuPy need not be imported to recognise NumPy input.
    return type(x).__module__.split(".", 1)[0] == "cupy"


def array_namespace(*arrays: Any) -> ModuleType:
    """Return the array module (`numpy` or `cupy`) that all `arrays` belong to.

    NumPy arrays and NumPy scalars map to `numpy`, CuPy arrays to `cupy`. Raises `TypeError` when
    no array is given, when an argument is not an array, or when NumPy and CuPy arrays are mixed
    (the caller must move data explicitly with `to_device` / `to_host`).
    """
    if not arrays:
        raise TypeError("array_namespace() needs at least one array")
    kinds = set()
    for x in arrays:
        if isinstance(x, numpy.ndarray | numpy.generic):
            kinds.add("numpy")
        elif _is_cupy_array(x):
            kinds.add("cupy")
        else:
            raise TypeError(
                f"expected a NumPy or CuPy array, got {type(x).__name__}; "
                "convert it with numpy.asarray() first"
            )
    if len(kinds) > 1:
        raise TypeError(
            "mixed NumPy and CuPy arrays; move them to one device first with "
            "cryoweave.engine.to_device(x, 'gpu') or to_host(x)"
        )
    if kinds == {"cupy"}:
        import cupy

        return cupy
    return numpy


@functools.cache
def cupy_available() -> bool:
    """True when CuPy imports and at least one CUDA device is usable (cached after first call)."""
    try:
        import cupy

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # ImportError, CUDA driver/runtime errors: all mean "no GPU for us"
        return False


def resolve_device(device: str | None = None) -> Device:
    """Turn a device request into "cpu" or "gpu".

    `device` is "cpu", "gpu", "auto" or None. None reads the environment variable
    `CRYOWEAVE_DEVICE` (default "auto"); "auto" means "gpu" when `cupy_available()`, else "cpu".
    Raises `ValueError` for an unknown name, or for "gpu" when CuPy or a GPU is missing.
    """
    if device is None:
        device = os.environ.get(DEVICE_ENV_VAR, "auto")
    name = str(device).strip().lower()
    if name not in _DEVICE_CHOICES:
        raise ValueError(f"device={device!r} is not one of {', '.join(_DEVICE_CHOICES)}")
    if name == "auto":
        return "gpu" if cupy_available() else "cpu"
    if name == "gpu" and not cupy_available():
        raise ValueError(
            f"device='gpu' was requested but CuPy or a CUDA GPU is missing; {_GPU_INSTALL_HINT}"
        )
    return "gpu" if name == "gpu" else "cpu"


def get_namespace(device: str | None = None) -> ModuleType:
    """Array module for a device request (see `resolve_device`): `numpy` or `cupy`."""
    if resolve_device(device) == "gpu":
        import cupy

        return cupy
    return numpy


def to_device(x: Any, device: str | None = None) -> Any:
    """Return `x` as an array on `device` ("cpu" -> numpy.ndarray, "gpu" -> cupy.ndarray).

    No copy when `x` already lives there. Host -> device and device -> host copies are explicit
    calls of this function (or `to_host`), never hidden inside kernels.
    """
    if resolve_device(device) == "cpu":
        return to_host(x)
    import cupy

    return cupy.asarray(x)


def to_host(x: Any) -> numpy.ndarray:
    """Return `x` as a NumPy array (copies from the GPU for CuPy input, no copy for NumPy)."""
    if _is_cupy_array(x):
        return x.get()
    return numpy.asarray(x)


def free_device_memory_bytes(device: str | None = None) -> int:
    """Bytes of memory available for new arrays on `device`.

    GPU: free device memory (CUDA memGetInfo) plus blocks held free in CuPy's memory pool.
    CPU: `MemAvailable` from /proc/meminfo, else available physical pages from `os.sysconf`.
    """
    if resolve_device(device) == "gpu":
        import cupy

        free_bytes, _total = cupy.cuda.runtime.memGetInfo()
        return int(free_bytes) + int(cupy.get_default_memory_pool().free_bytes())
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the value is in kB
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def batch_size_for(bytes_per_item: int, budget_bytes: int, max_batch: int) -> int:
    """Largest batch (≥ 1, ≤ `max_batch`) whose working memory fits in `budget_bytes`.

    `bytes_per_item` is the peak working memory of one item (all temporaries included). A budget
    smaller than one item still gives 1: the caller then relies on the OOM retry.
    """
    if bytes_per_item <= 0:
        raise ValueError(f"bytes_per_item={bytes_per_item} must be positive")
    if max_batch < 1:
        raise ValueError(f"max_batch={max_batch} must be at least 1")
    return int(max(1, min(max_batch, budget_bytes // bytes_per_item)))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for host or device out-of-memory errors (MemoryError, CuPy OutOfMemoryError, cuFFT
    allocation failures)."""
    if isinstance(exc, MemoryError):  # cupy.cuda.memory.OutOfMemoryError is a MemoryError
        return True
    if "cupy" in sys.modules:
        cufft = getattr(getattr(sys.modules["cupy"], "cuda", None), "cufft", None)
        cufft_error = getattr(cufft, "CuFFTError", None)
        if cufft_error is not None and isinstance(exc, cufft_error):
            return "ALLOC_FAILED" in str(exc)
    return False


def _release_cached_device_memory() -> None:
    cupy = sys.modules.get("cupy")
    if cupy is None:
        return
    cupy.get_default_memory_pool().free_all_blocks()
    plan_cache = getattr(getattr(cupy.fft, "config", None), "get_plan_cache", None)
    if plan_cache is not None:
        plan_cache().clear()


def map_batches_with_oom_retry(
    fn: Callable[[int, int], T], n_items: int, batch_size: int
) -> Iterator[tuple[int, int, T]]:
    """Call `fn(start, stop)` over consecutive batches of `range(n_items)`, lazily, in order.

    Yields `(start, stop, fn(start, stop))`. When `fn` runs out of host or device memory
    (`is_out_of_memory`), the batch size is halved (after releasing CuPy's cached blocks and FFT
    plans) and the same batch is retried; the smaller size is kept for the rest of the run. A
    failure on a single item is re-raised. `fn` must be safe to retry (no partial side effects).
    """
    if n_items < 0:
        raise ValueError(f"n_items={n_items} must be ≥ 0")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    start = 0
    while start < n_items:
        stop = min(n_items, start + batch_size)
        try:
            result = fn(start, stop)
        except Exception as exc:
            if stop - start == 1 or not is_out_of_memory(exc):
                raise
            out_of_memory = True
        else:
            out_of_memory = False
        if out_of_memory:  # outside the except block, so the failed call's arrays are freed
            batch_size = max(1, (stop - start) // 2)
            _release_cached_device_memory()
            continue
        yield start, stop, result
        start = stop


_THREAD_BUDGET: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "cryoweave_thread_budget", default=None)


@contextlib.contextmanager
def thread_budget(threads: int | None) -> Iterator[None]:
    """Within the block (in this thread), `fft_workers()` is `threads`: the runtime gives each
    step its share of the cores (two steps side by side on two cores: one thread each), so the
    engine's FFTs and scatter threads do not oversubscribe them. BLAS products (in any thread)
    use at most the smallest budget in force (`_blas`). None leaves both unchanged."""
    if threads is None:
        yield
        return
    if int(threads) < 1:
        raise ValueError(f"threads={threads} must be at least 1")
    from ._blas import blas_threads_at_most

    token = _THREAD_BUDGET.set(int(threads))
    try:
        with blas_threads_at_most(int(threads)):
            yield
    finally:
        _THREAD_BUDGET.reset(token)


def fft_workers() -> int:
    """Number of CPU threads for SciPy FFTs and the engine's own threads: the step's share of
    the cores inside `thread_budget`, else `CRYOWEAVE_FFT_WORKERS`, else `os.cpu_count()`."""
    budget = _THREAD_BUDGET.get()
    if budget is not None:
        return budget
    value = os.environ.get(FFT_WORKERS_ENV_VAR, "").strip()
    if not value:
        return os.cpu_count() or 1
    try:
        workers = int(value)
    except ValueError:
        workers = 0
    if workers < 1:
        raise ValueError(
            f"{FFT_WORKERS_ENV_VAR}={value!r} must be a positive integer (number of FFT threads)"
        )
    return workers
