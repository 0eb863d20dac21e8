"""FFT wrappers that follow the input's backend, plus centring and frequency grids.

NumPy input goes to SciPy's pocketfft (single precision stays single, multi-threaded with
`workers`, default `fft_workers()`); CuPy input goes to `cupy.fft` (cuFFT). The engine calls
SciPy's compiled pocketfft module directly (`_compiled_pocketfft`), with the arguments
`scipy.fft` would pass it, so the results are scipy.fft's bit for bit: `import scipy.fft` takes
~0.2 s of every command's start on the benchmark machine (it imports most of NumPy's submodules),
the compiled module alone a few ms (`benchmarks/fft_import.py`). Inputs outside that path (integer
or float16 arrays, empty axes, other `norm` or `workers` values) go to `scipy.fft` itself.
pocketfft's results do not depend on the thread count or on how many transforms one call holds, and
must not: a step's FFT threads follow the runtime's budget, which changes with what else runs
(`test_numpy_transforms_do_not_depend_on_threads_or_batch`). ducc0, pocketfft's successor and
faster on some shapes, fails that test at float rounding, so it is not used.

Transforms act on the trailing axes: the last 2 for images `(..., y, x)`, the last `ndim`
(default 3) for volumes `(..., z, y, x)`. `norm` has NumPy's meaning ("backward": 1/N on the
inverse, "forward": 1/N on the forward, "ortho").

Complex-to-real inverses (`irfft`, `irfft2`, `irfftn`) have FFTW's meaning on every backend: the
inverse runs over the leading axes first, then the c2r along the last axis uses only the real
parts of its self-conjugate terms (index 0 and, for even n, n/2). Callers rely on this: a cropped,
shifted or interpolated half spectrum is not Hermitian there (e.g. `fourier_crop` to an even box
keeps a complex Nyquist column). SciPy's pocketfft drops those imaginary parts itself; cuFFT leaves
a non-Hermitian C2R input undefined (some of its kernels read the imaginary parts; the CuPy
`fourier_crop` 256² -> 128 float32 error of 6.3 % is the size of the Nyquist column's imaginary
part), so on CuPy the input is made Hermitian first (`_hermitian_c2r_input`).

Convention (docs/conventions): the centre of an N-point axis is index N // 2 for odd and even N;
index i of an FFT axis has digital frequency i/N for i ≤ N/2, else (i − N)/N (cycles/pixel), so
for even N the Nyquist index N/2 is +0.5.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace, fft_workers

Axes = Sequence[int]


def _backend_fft(x: Any, workers: int | None) -> tuple[Any, dict[str, int]]:
    """The FFT module for `x` and the extra keyword arguments it takes (`scipy.fft` for NumPy
    input that `_direct` does not take)."""
    xp = array_namespace(x)
    if xp is numpy:
        import scipy.fft  # here, not at module level: keeps `import cryoweave` fast (~0.2 s)

        return scipy.fft, {"workers": fft_workers() if workers is None else workers}
    return xp.fft, {}


_POCKETFFT = "scipy.fft._pocketfft.pypocketfft"
_FORWARD_INORM = {"backward": 0, "ortho": 1, "forward": 2}  # scipy.fft's map; inverse: 2 − it
_DIRECT_DTYPES = frozenset(numpy.dtype(t) for t in ("<f4", "<f8", "<c8", "<c16"))


@functools.cache
def _compiled_pocketfft() -> ModuleType | None:
    """SciPy's compiled pocketfft, the module `scipy.fft` calls, loaded without importing the
    `scipy.fft` package; None when it is not where SciPy has kept it (scipy/fft/_pocketfft/,
    since 1.4) or does not answer as expected, and `scipy.fft` then does every transform. It is
    registered under its own name, so a later `import scipy.fft` uses this same module. Threads
    that need it first at the same moment (a downsample's workers) load it once: the import
    system's lock does not cover a module loaded by hand."""
    with _LOAD_LOCK:
        return _load_compiled_pocketfft()


_LOAD_LOCK = threading.Lock()


def _load_compiled_pocketfft() -> ModuleType | None:
    if _POCKETFFT in sys.modules:
        return sys.modules[_POCKETFFT]
    try:
        # where SciPy is installed, without running its __init__ (`import scipy` alone took
        # 54 ms of `cryoweave downsample`'s start, `python -X importtime`)
        scipy_spec = importlib.util.find_spec("scipy")
        if scipy_spec is None or not scipy_spec.submodule_search_locations:
            return None
        folder = Path(next(iter(scipy_spec.submodule_search_locations))) / "fft" / "_pocketfft"
        path = next((folder / f"pypocketfft{suffix}"
                     for suffix in importlib.machinery.EXTENSION_SUFFIXES
                     if (folder / f"pypocketfft{suffix}").is_file()), None)
        spec = importlib.util.spec_from_file_location(_POCKETFFT, path) if path else None
        if spec is None or spec.loader is None:
            return None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # the calling convention scipy.fft uses: (a, axes, forward, inorm, out, nthreads)
        probe = module.r2c(numpy.ones(4, numpy.float32), (0,), True, 0, None, 1)
        if not numpy.array_equal(probe, numpy.array([4, 0, 0], numpy.complex64)):
            return None
    except Exception:  # any surprise: scipy.fft serves, as before
        return None
    sys.modules.setdefault(_POCKETFFT, module)
    return sys.modules[_POCKETFFT]


def _direct(x: Any, axes: Sequence[int], norm: str, workers: int | None, *, real: bool
            ) -> tuple[Any, tuple[int, ...], int, int] | None:
    """(compiled pocketfft, axes made non-negative, forward inorm, threads) when `x` can go to
    it straight, as `scipy.fft` would send it: an aligned little-endian float32/float64 NumPy
    array (or complex64/complex128 unless `real`), no empty axis, distinct valid axes, a known
    `norm`, `workers` ≥ 1. None otherwise (`scipy.fft` then converts or raises)."""
    if not isinstance(x, numpy.ndarray) or x.dtype not in _DIRECT_DTYPES \
            or not x.flags.aligned or (real and x.dtype.kind != "f") or 0 in x.shape:
        return None
    if norm not in _FORWARD_INORM:
        return None
    threads = fft_workers() if workers is None else workers
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        return None
    if not all(isinstance(a, int) and -x.ndim <= a < x.ndim for a in axes):
        return None
    normal = tuple(a % x.ndim for a in axes)
    if len(set(normal)) != len(normal):
        return None
    module = _compiled_pocketfft()
    return None if module is None else (module, normal, _FORWARD_INORM[norm], threads)


def _fit_axes(x: Any, axes: Sequence[int], sizes: Sequence[int]) -> Any:
    """`x` cropped or zero-padded to `sizes` along `axes` (NumPy's and SciPy's rule for `n`/`s`)."""
    xp = array_namespace(x)
    for axis, size in zip(axes, sizes, strict=True):
        axis %= x.ndim
        have = x.shape[axis]
        if have > size:
            x = x[(slice(None),) * axis + (slice(0, size),)]
        elif have < size:
            pad = [(0, 0)] * x.ndim
            pad[axis] = (0, size - have)
            x = xp.pad(x, pad)
    return x


def _c2c(x: Any, axes: tuple[int, ...], norm: str, workers: int | None, *,
         inverse: bool) -> Any:
    direct = _direct(x, axes, norm, workers, real=False)
    if direct is not None:
        module, normal, inorm, threads = direct
        return module.c2c(x, normal, not inverse, 2 - inorm if inverse else inorm, None, threads)
    backend, kw = _backend_fft(x, workers)
    if len(axes) == 1:
        return (backend.ifft if inverse else backend.fft)(x, axis=axes[0], norm=norm, **kw)
    return (backend.ifftn if inverse else backend.fftn)(x, axes=axes, norm=norm, **kw)


def _r2c(x: Any, axes: tuple[int, ...], norm: str, workers: int | None) -> Any:
    direct = _direct(x, axes, norm, workers, real=True)
    if direct is not None:
        module, normal, inorm, threads = direct
        return module.r2c(x, normal, True, inorm, None, threads)
    backend, kw = _backend_fft(x, workers)
    if len(axes) == 1:
        return backend.rfft(x, axis=axes[0], norm=norm, **kw)
    return backend.rfftn(x, axes=axes, norm=norm, **kw)


def _c2r(x: Any, axes: tuple[int, ...], shape: tuple[int, ...], norm: str,
         workers: int | None) -> Any:
    """Inverse real FFT over `axes` to output lengths `shape` (the last axis half-complex)."""
    direct = _direct(x, axes, norm, workers, real=False)
    if direct is not None and all(n >= 1 for n in shape):
        module, normal, inorm, threads = direct
        fitted = _fit_axes(x, normal, (*shape[:-1], shape[-1] // 2 + 1))
        if fitted.dtype.kind == "f":  # scipy.fft's rule: a real input stands for x + 0j
            fitted = fitted + 0j
        return module.c2r(fitted, normal, shape[-1], False, 2 - inorm, None, threads)
    backend, kw = _backend_fft(x, workers)
    if array_namespace(x) is not numpy:  # cuFFT's C2R needs Hermitian input (module notes)
        x = _hermitian_c2r_input(x, shape[-1], axes, shape[:-1])
    if len(axes) == 1:
        return backend.irfft(x, n=shape[0], axis=axes[0], norm=norm, **kw)
    return backend.irfftn(x, s=shape, axes=axes, norm=norm, **kw)


def _hermitian_c2r_input(x: Any, n: int, axes: tuple[int, ...], shape: tuple[int, ...]) -> Any:
    """Copy of the c2r input `x` whose self-conjugate terms are Hermitian (CuPy path only).

    `axes` are the transform axes (last = the half-complex axis, inverse length `n`), `shape` the
    full lengths of the other axes. The c2r terms at index 0 and (even n) n/2 of the last axis are
    replaced by their Hermitian part over the other axes, (X(k) + conj X(−k)) / 2 — the spectrum
    whose inverse over those axes is the real part of the original one's, which is what FFTW and
    pocketfft use. The leading axes are cropped or zero-padded to `shape` first (NumPy's rule).
    """
    xp = array_namespace(x)
    lead = axes[:-1]
    x = _fit_axes(x, lead, shape).copy()
    last = axes[-1] % x.ndim
    columns = [0] + ([n // 2] if n % 2 == 0 and 0 < n // 2 < x.shape[last] else [])
    for column in columns:
        where = (slice(None),) * last + (column,)
        plane = x[where]
        if not lead:
            x[where] = plane.real
            continue
        # after taking the column, the leading axes keep their positions (they precede `last`)
        plane_axes = tuple(a % x.ndim for a in lead)
        flipped = xp.flip(plane, axis=plane_axes)
        mirrored = xp.conj(xp.roll(flipped, (1,) * len(plane_axes), axis=plane_axes))
        x[where] = (plane + mirrored) * plane.real.dtype.type(0.5)
    return x


def _last_axes(ndim: int) -> tuple[int, ...]:
    if ndim < 1:
        raise ValueError(f"ndim={ndim} must be at least 1")
    return tuple(range(-ndim, 0))


def rfft(x: Any, *, axis: int = -1, norm: str = "backward", workers: int | None = None) -> Any:
    """1-D real-to-half-complex FFT along `axis`: N reals -> N // 2 + 1 complex values."""
    return _r2c(x, (axis,), norm, workers)


def irfft(
    x: Any, n: int, *, axis: int = -1, norm: str = "backward", workers: int | None = None
) -> Any:
    """1-D half-complex-to-real inverse FFT to `n` points along `axis`.

    The input is cropped or zero-padded to n // 2 + 1 values first; the imaginary parts of the
    DC and (even n) Nyquist values are ignored, as in FFTW's c2r.
    """
    return _c2r(x, (axis,), (int(n),), norm, workers)


def fft(x: Any, *, axis: int = -1, norm: str = "backward", workers: int | None = None) -> Any:
    """1-D complex FFT along `axis`."""
    return _c2c(x, (axis,), norm, workers, inverse=False)


def ifft(x: Any, *, axis: int = -1, norm: str = "backward", workers: int | None = None) -> Any:
    """1-D complex inverse FFT along `axis`."""
    return _c2c(x, (axis,), norm, workers, inverse=True)


def rfft2(x: Any, *, norm: str = "backward", workers: int | None = None) -> Any:
    """Real FFT over the last two axes: `(..., y, x)` real -> `(..., y, x // 2 + 1)` complex.

    float32 -> complex64, float64 -> complex128.
    """
    return rfftn(x, ndim=2, norm=norm, workers=workers)


def irfft2(
    x: Any, shape: tuple[int, int], *, norm: str = "backward", workers: int | None = None
) -> Any:
    """Inverse of `rfft2`: `(..., y, x // 2 + 1)` complex -> `(..., y, x)` real, `shape=(y, x)`."""
    return irfftn(x, shape, norm=norm, workers=workers)


def rfftn(x: Any, *, ndim: int = 3, norm: str = "backward", workers: int | None = None) -> Any:
    """Real FFT over the last `ndim` axes; the last axis becomes half-complex (N // 2 + 1)."""
    return _r2c(x, _last_axes(ndim), norm, workers)


def irfftn(
    x: Any, shape: Sequence[int], *, norm: str = "backward", workers: int | None = None
) -> Any:
    """Inverse of `rfftn` over the last `len(shape)` axes, to real arrays of trailing `shape`."""
    shape = tuple(int(n) for n in shape)
    return _c2r(x, _last_axes(len(shape)), shape, norm, workers)


def fftn(x: Any, *, ndim: int = 3, norm: str = "backward", workers: int | None = None) -> Any:
    """Complex FFT over the last `ndim` axes."""
    return _c2c(x, _last_axes(ndim), norm, workers, inverse=False)


def ifftn(x: Any, *, ndim: int = 3, norm: str = "backward", workers: int | None = None) -> Any:
    """Complex inverse FFT over the last `ndim` axes."""
    return _c2c(x, _last_axes(ndim), norm, workers, inverse=True)


def fftshift(x: Any, axes: Axes = (-2, -1)) -> Any:
    """Move the zero frequency (index 0) to the centre index N // 2 along `axes` (odd and even N).

    Also centres a real-space array whose origin is at index 0. Inverse: `ifftshift`.
    """
    xp = array_namespace(x)
    return xp.fft.fftshift(x, axes=tuple(axes))


def ifftshift(x: Any, axes: Axes = (-2, -1)) -> Any:
    """Move the centre index N // 2 back to index 0 along `axes` (inverse of `fftshift`)."""
    xp = array_namespace(x)
    return xp.fft.ifftshift(x, axes=tuple(axes))


def fft_wave_numbers(
    n: int, xp: ModuleType = numpy, *, rfft: bool = False, dtype: Any = numpy.float64
) -> Any:
    """Signed wave numbers (cycles per N-point box) of the indices of an N-point FFT axis.

    Full axis (`rfft=False`): `(n,)`, index i -> i for i ≤ N // 2, else i − N, so for even N
    the Nyquist index N/2 is +N/2 — RELION's FFTW layout (`FOR_ALL_ELEMENTS_IN_FFTW_TRANSFORM`:
    ip = i < N/2 + 1 ? i : i − N). NumPy's `fftfreq` puts it at −N/2 instead; the two differ
    only there. Half-complex axis of `rfft`/`rfftn` (`rfft=True`): `(n // 2 + 1,)`, 0 … N // 2.
    This is the one place the engine maps FFT indices to frequencies; divide by N (or use
    `fft_frequencies`) for cycles/pixel.
    """
    if rfft:
        return xp.arange(n // 2 + 1, dtype=dtype)
    index = xp.arange(n, dtype=dtype)
    return xp.where(index <= n // 2, index, index - n)


def fft_frequencies(
    n: int, xp: ModuleType = numpy, *, rfft: bool = False, dtype: Any = numpy.float64
) -> Any:
    """Digital frequencies (cycles/pixel) of an N-point FFT axis: `fft_wave_numbers(n) / n`
    (even N: +0.5 at the Nyquist index of a full axis), computed in float64, cast to `dtype`."""
    return (fft_wave_numbers(n, xp, rfft=rfft) / n).astype(dtype)


def _sparse(axis_values: list[Any], xp: ModuleType) -> tuple[Any, ...]:
    ndim = len(axis_values)
    grids = []
    for axis, values in enumerate(axis_values):
        shape = [1] * ndim
        shape[axis] = -1
        grids.append(xp.reshape(values, tuple(shape)))
    return tuple(grids)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(n) for n in shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"shape={shape} must be a non-empty sequence of positive sizes")
    return shape


def frequency_grid(
    shape: Sequence[int], xp: ModuleType = numpy, dtype: Any = numpy.float32
) -> tuple[Any, ...]:
    """Digital frequencies (cycles/pixel) of the full FFT grid of a real array of `shape`.

    Returns one array per axis (e.g. `(fz, fy, fx)`), each broadcastable to `shape` (sparse
    grid). Index i -> i/N for i ≤ N/2 else (i − N)/N; even N puts +0.5 at the Nyquist index.
    Divide by the pixel size in Å for 1/Å.
    """
    shape = _check_shape(shape)
    return _sparse([fft_frequencies(n, xp, dtype=dtype) for n in shape], xp)


def frequency_grid_rfft(
    shape: Sequence[int], xp: ModuleType = numpy, dtype: Any = numpy.float32
) -> tuple[Any, ...]:
    """Digital frequencies (cycles/pixel) of the half-complex grid of `rfftn` of `shape`.

    `shape` is the real-space shape, e.g. `(y, x)` or `(z, y, x)`. Returns one sparse array per
    axis, broadcastable to `(*shape[:-1], shape[-1] // 2 + 1)`; the last axis runs over
    0, 1/N, …, (N // 2)/N, the others as in `frequency_grid`.
    """
    shape = _check_shape(shape)
    values = [fft_frequencies(n, xp, dtype=dtype) for n in shape[:-1]]
    values.append(fft_frequencies(shape[-1], xp, rfft=True, dtype=dtype))
    return _sparse(values, xp)
