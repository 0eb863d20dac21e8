"""FFT wrappers that follow the input's backend, plus centring and frequency grids.

NumPy input goes to `scipy.fft` (single precision stays single, multi-threaded with `workers`,
default `fft_workers()`); CuPy input goes to `cupy.fft` (cuFFT). Transforms act on the trailing
axes: the last 2 for images `(..., y, x)`, the last `ndim` (default 3) for volumes
`(..., z, y, x)`. `norm` has NumPy's meaning ("backward": 1/N on the inverse, "forward": 1/N on
the forward, "ortho").

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

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace, fft_workers

Axes = Sequence[int]


def _backend_fft(x: Any, workers: int | None) -> tuple[Any, dict[str, int]]:
    """The FFT module for `x` and the extra keyword arguments it takes."""
    xp = array_namespace(x)
    if xp is numpy:
        import scipy.fft  # here, not at module level: keeps `import cryoweave` fast (~0.1 s)

        return scipy.fft, {"workers": fft_workers() if workers is None else workers}
    return xp.fft, {}


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
    for axis, size in zip(lead, shape, strict=True):
        have = x.shape[axis]
        if have > size:
            x = x[(slice(None),) * (axis % x.ndim) + (slice(0, size),)]
        elif have < size:
            pad = [(0, 0)] * x.ndim
            pad[axis % x.ndim] = (0, size - have)
            x = xp.pad(x, pad)
    x = x.copy()
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
    fft, kw = _backend_fft(x, workers)
    return fft.rfft(x, axis=axis, norm=norm, **kw)


def irfft(
    x: Any, n: int, *, axis: int = -1, norm: str = "backward", workers: int | None = None
) -> Any:
    """1-D half-complex-to-real inverse FFT to `n` points along `axis`.

    The input is cropped or zero-padded to n // 2 + 1 values first; the imaginary parts of the
    DC and (even n) Nyquist values are ignored, as in FFTW's c2r.
    """
    fft, kw = _backend_fft(x, workers)
    if array_namespace(x) is not numpy:  # cuFFT's C2R needs Hermitian input (module notes)
        x = _hermitian_c2r_input(x, int(n), (axis,), ())
    return fft.irfft(x, n=n, axis=axis, norm=norm, **kw)


def fft(x: Any, *, axis: int = -1, norm: str = "backward", workers: int | None = None) -> Any:
    """1-D complex FFT along `axis`."""
    backend, kw = _backend_fft(x, workers)
    return backend.fft(x, axis=axis, norm=norm, **kw)


def ifft(x: Any, *, axis: int = -1, norm: str = "backward", workers: int | None = None) -> Any:
    """1-D complex inverse FFT along `axis`."""
    backend, kw = _backend_fft(x, workers)
    return backend.ifft(x, axis=axis, norm=norm, **kw)


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
    fft_module, kw = _backend_fft(x, workers)
    return fft_module.rfftn(x, axes=_last_axes(ndim), norm=norm, **kw)


def irfftn(
    x: Any, shape: Sequence[int], *, norm: str = "backward", workers: int | None = None
) -> Any:
    """Inverse of `rfftn` over the last `len(shape)` axes, to real arrays of trailing `shape`."""
    fft_module, kw = _backend_fft(x, workers)
    shape = tuple(int(n) for n in shape)
    if array_namespace(x) is not numpy:  # cuFFT's C2R needs Hermitian input (module notes)
        x = _hermitian_c2r_input(x, shape[-1], _last_axes(len(shape)), shape[:-1])
    return fft_module.irfftn(x, s=shape, axes=_last_axes(len(shape)), norm=norm, **kw)


def fftn(x: Any, *, ndim: int = 3, norm: str = "backward", workers: int | None = None) -> Any:
    """Complex FFT over the last `ndim` axes."""
    fft_module, kw = _backend_fft(x, workers)
    return fft_module.fftn(x, axes=_last_axes(ndim), norm=norm, **kw)


def ifftn(x: Any, *, ndim: int = 3, norm: str = "backward", workers: int | None = None) -> Any:
    """Complex inverse FFT over the last `ndim` axes."""
    fft_module, kw = _backend_fft(x, workers)
    return fft_module.ifftn(x, axes=_last_axes(ndim), norm=norm, **kw)


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
