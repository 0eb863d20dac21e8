"""Low-pass filters, soft masks and B-factor sharpening for maps and images.

Raised-cosine edges: a value 1 inside, 0 outside, and (1 + cos(π t))/2 across an edge of the
given width (t from 0 to 1). Distances are from the box centre N // 2 (real space) or in
Fourier pixels N·|f| (frequency space).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace
from ._fft import fft_wave_numbers, irfftn, rfftn


def _raised_cosine(distance: Any, inner: float, width: float, xp: ModuleType) -> Any:
    if width <= 0:
        return (distance <= inner).astype(xp.float64)
    t = xp.clip((distance - inner) / width, 0.0, 1.0)
    return 0.5 * (1.0 + xp.cos(numpy.pi * t))


def _spectral_radius_px(shape: tuple[int, ...], xp: ModuleType) -> Any:
    n = shape[-1]
    axes = [fft_wave_numbers(size, xp) * (n / size) for size in shape[:-1]]
    axes.append(fft_wave_numbers(n, xp, rfft=True))
    grids = xp.meshgrid(*axes, indexing="ij", sparse=True)
    return xp.sqrt(sum(g * g for g in grids))


def _check_ndim(data: Any, ndim: int) -> None:
    if ndim not in (2, 3) or data.ndim < ndim:
        raise ValueError(
            f"ndim={ndim} must be 2 (images (..., y, x)) or 3 (maps (..., z, y, x)) and at most "
            f"data.ndim={data.ndim}"
        )


def lowpass_filter_a(
    data: Any,
    resolution_a: float,
    pixel_size_a: float,
    *,
    edge_width_px: float = 2.0,
    ndim: int = 3,
) -> Any:
    """Raised-cosine low-pass to `resolution_a` (Å) of maps `(..., N, N, N)` (or images, ndim=2).

    Transmission 1 below the cutoff radius r_c = N·pixel_size_a/resolution_a (Fourier px) minus
    half the edge, 0 beyond r_c plus half the edge, a raised cosine across `edge_width_px`.
    Returns the input's float dtype (float32 for other dtypes).
    """
    _check_ndim(data, ndim)
    if not resolution_a > 0 or not pixel_size_a > 0:
        raise ValueError(
            f"resolution_a={resolution_a} and pixel_size_a={pixel_size_a} must be positive (Å)"
        )
    xp = array_namespace(data)
    real = xp.float64 if data.dtype == xp.float64 else xp.float32
    shape = tuple(int(s) for s in data.shape[-ndim:])
    cutoff_px = shape[-1] * pixel_size_a / resolution_a
    radius = _spectral_radius_px(shape, xp)
    transmission = _raised_cosine(radius, cutoff_px - edge_width_px / 2, edge_width_px, xp)
    spectrum = rfftn(xp.asarray(data, dtype=real), ndim=ndim) * transmission.astype(real)
    return irfftn(spectrum, shape).astype(real, copy=False)


def apply_bfactor(
    data: Any, bfactor_a2: float, pixel_size_a: float, *, ndim: int = 3
) -> Any:
    """Multiply the spectrum by exp(−B u²/4) (u in 1/Å): B < 0 sharpens, B > 0 blurs (RELION).

    Maps `(..., N, N, N)` or images (ndim=2); returns the input's float dtype.
    """
    _check_ndim(data, ndim)
    if not pixel_size_a > 0:
        raise ValueError(f"pixel_size_a={pixel_size_a} must be positive (Å)")
    xp = array_namespace(data)
    real = xp.float64 if data.dtype == xp.float64 else xp.float32
    shape = tuple(int(s) for s in data.shape[-ndim:])
    u = _spectral_radius_px(shape, xp) / (shape[-1] * pixel_size_a)
    factor = xp.exp(-float(bfactor_a2) / 4.0 * u * u)
    spectrum = rfftn(xp.asarray(data, dtype=real), ndim=ndim) * factor.astype(real)
    return irfftn(spectrum, shape).astype(real, copy=False)


def _centred_axes(box_px: int, ndim: int, xp: ModuleType) -> list[Any]:
    axis = xp.arange(box_px, dtype=xp.float64) - box_px // 2
    shape = [1] * ndim
    axes = []
    for i in range(ndim):
        s = list(shape)
        s[i] = box_px
        axes.append(xp.reshape(axis, s))
    return axes


def soft_sphere_mask(
    box_px: int,
    radius_px: float,
    *,
    edge_width_px: float = 3.0,
    ndim: int = 3,
    dtype: Any = numpy.float32,
    xp: ModuleType = numpy,
) -> Any:
    """Spherical (ndim=3) or circular (ndim=2) mask: 1 within `radius_px` of the centre
    N // 2, a raised-cosine edge of `edge_width_px` outside it, then 0. `(N,)*ndim` float32."""
    if not radius_px > 0 or edge_width_px < 0:
        raise ValueError(
            f"radius_px={radius_px} must be > 0 and edge_width_px={edge_width_px} ≥ 0 (pixels)"
        )
    axes = _centred_axes(int(box_px), ndim, xp)
    distance = xp.sqrt(sum(a * a for a in axes))
    return _raised_cosine(distance, float(radius_px), float(edge_width_px), xp).astype(dtype)


def soft_cylinder_mask(
    box_px: int,
    radius_px: float,
    height_px: float,
    *,
    edge_width_px: float = 3.0,
    dtype: Any = numpy.float32,
    xp: ModuleType = numpy,
) -> Any:
    """Cylinder along z about the centre: 1 for x² + y² ≤ radius² and |z| ≤ height/2, with
    raised-cosine edges of `edge_width_px` on the side and the caps. `(N, N, N)` float32."""
    if not radius_px > 0 or not height_px > 0 or edge_width_px < 0:
        raise ValueError(
            f"radius_px={radius_px} and height_px={height_px} must be > 0, edge_width_px="
            f"{edge_width_px} ≥ 0 (pixels)"
        )
    z, y, x = _centred_axes(int(box_px), 3, xp)
    radial = _raised_cosine(xp.sqrt(x * x + y * y), float(radius_px), edge_width_px, xp)
    axial = _raised_cosine(xp.abs(z), float(height_px) / 2.0, edge_width_px, xp)
    return (radial * axial).astype(dtype)
