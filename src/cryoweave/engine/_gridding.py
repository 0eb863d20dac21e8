"""From accumulated Fourier sums to a map: Friedel pairs on the x = 0 plane, iterative gridding
weights (density compensation) and the soft mask outside the inscribed sphere.

These follow what `relion_reconstruct` does by default (RELION 3.1, `BackProjector::reconstruct`
with 10 pre-weighting iterations, a Kaiser–Bessel blob of order 0, radius 3.8 padded-grid voxels,
α = 15, no regularisation, then `windowToOridimRealSpace`, whose `softMaskOutsideMap` sets the
corners beyond radius N/2 to their mean with a 3-pixel raised-cosine edge). Where we differ:
images keep their DC term (RELION zeroes it in the data, not the weights), the gridding correction
is the separable trilinear sinc² (RELION: radial), the mask comes after it, and the convolution
runs in float32 on the P³ grid, using its point symmetry to transform only half of it (RELION:
double, on 2·(P/2 + 1) + 1 voxels). All arrays here are half transforms `(P, P, P // 2 + 1)` in
FFT layout unless said otherwise.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace
from ._fft import fft_wave_numbers, irfft, irfft2, rfft, rfft2

BLOB_RADIUS_VOXELS = 3.8  # RELION: --blob_r 1.9 times 2 (fixed, whatever the padding)
BLOB_ALPHA = 15.0
MASK_EDGE_PX = 3.0
_MIN_CONVOLVED = 1e-6  # RELION's floor on the convolved weight (weights normalised to mean 1)


def inside_radius(padded_px: int, radius_voxels: float, xp: ModuleType) -> Any:
    """Half-grid voxels with |q| < radius: `(P, P, P // 2 + 1)` bool."""
    k = fft_wave_numbers(padded_px, xp)  # only squared: the Nyquist sign does not matter here
    kx = fft_wave_numbers(padded_px, xp, rfft=True)
    r2 = k[:, None, None] ** 2 + k[None, :, None] ** 2 + kx[None, None, :] ** 2
    return r2 < radius_voxels**2


def add_friedel_mates(data: Any, weight: Any) -> None:
    """Sums each x = 0 plane voxel with its Friedel mate (−z, −y), in place.

    The half grid keeps both (0, y, z) and (0, −y, −z); a sample near qx = 0 reaches only one of
    them, its mirror image only the other. `data` complex, `weight` real.
    """
    xp = array_namespace(data, weight)
    p = data.shape[0]
    mirror = (-xp.arange(p)) % p
    plane, plane_weight = data[:, :, 0], weight[:, :, 0]
    mates = xp.conj(plane[mirror][:, mirror])
    mate_weights = plane_weight[mirror][:, mirror]
    data[:, :, 0] = plane + mates
    weight[:, :, 0] = plane_weight + mate_weights


def blob_fourier_transform(w: Any, radius: float = BLOB_RADIUS_VOXELS,
                           alpha: float = BLOB_ALPHA) -> Any:
    """3-D Fourier transform of the order-0 Kaiser–Bessel blob, normalised to 1 at w = 0.

    w: frequency in cycles per voxel (any shape, float64); radius in voxels. Zero for w ≥ 0.5
    (RELION tabulates it up to 0.5).
    """
    xp = array_namespace(w)
    sigma2 = alpha**2 - (2 * numpy.pi * radius * w) ** 2
    s = xp.sqrt(xp.abs(sigma2))
    small = xp.abs(sigma2) < 1e-4
    s_safe = xp.where(small, 1.0, s)
    # (σ cosh σ − sinh σ)/σ³ ∝ I₃/₂(σ)/σ^3/2 for real σ; (sin s − s cos s)/s³ for σ = i·s
    real_branch = (s_safe * xp.cosh(s_safe) - xp.sinh(s_safe)) / s_safe**3
    imag_branch = (xp.sin(s_safe) - s_safe * xp.cos(s_safe)) / s_safe**3
    value = xp.where(sigma2 > 0, real_branch, imag_branch)
    value = xp.where(small, 1.0 / 3.0 + sigma2 / 30.0, value)
    at_zero = (alpha * numpy.cosh(alpha) - numpy.sinh(alpha)) / alpha**3
    return xp.where(w < 0.5, value / at_zero, 0.0)


def blob_multiplier(padded_px: int, xp: ModuleType, z_slices: int | None = None) -> Any:
    """Real-space multiplier of the blob convolution on the P³ grid (FFT layout): `(P, P, P)`
    float32, the blob transform at |x| / P; only the first `z_slices` slices when given."""
    half = padded_px // 2
    # radial and even in each axis: tabulate per integer |x|², fill one octant, mirror it
    table = xp.sqrt(xp.arange(3 * half**2 + 1, dtype=xp.float64)) / padded_px
    table = blob_fourier_transform(table).astype(xp.float32)
    k = xp.arange(half + 1) ** 2
    octant = xp.take(table, k[:, None, None] + k[None, :, None] + k[None, None, :])
    folded = xp.minimum(xp.arange(padded_px), padded_px - xp.arange(padded_px))
    # one axis at a time: the same values as one 3-D fancy index, several times faster
    return xp.take(xp.take(xp.take(octant, folded[:z_slices], axis=0), folded, axis=1), folded,
                   axis=2)


def gridding_weights(weight: Any, inside: Any, iterations: int, *,
                     fft_workers: int | None = None) -> Any:
    """Iterative gridding weights w `(P, P, P//2+1)` float32 with (weight·w) ∗ blob ≈ 1.

    Pipe & Menon (1999) / Matej (2001) density compensation as in RELION: w starts at 1 where
    the weight is positive inside the radius (0 elsewhere: no data there) and is divided by the
    blob-smoothed product |(weight·w) ∗ blob| (floored at 1e-6) each iteration. weight:
    `(P, P, P//2+1)` real, normalised to mean 1 over sampled voxels; inside: same shape, bool.
    fft_workers: threads of each SciPy FFT (None: `fft_workers()`; 1 when several solves run
    side by side in threads). CuPy ignores it.

    weight·w is the half spectrum of a real, point-symmetric array (real weights, F(−k) =
    F(k)), so the convolution runs on half of it (`_symmetric_inverse`/`_symmetric_forward`):
    the same result as full 3-D transforms up to float32 rounding, in about half the time.
    """
    xp = array_namespace(weight)
    p = weight.shape[0]
    # float32 throughout: products are O(1), w ~ 1/density stays far inside float32's range
    # and the result needs ~1e-6 precision, not 1e-15
    factor = (inside & (weight > 0)).astype(xp.float32)
    weight = weight.astype(xp.float32, copy=False)
    product = xp.empty(weight.shape, dtype=xp.float32)  # reused: no page faults per pass
    multiplier = _half_blob_multiplier(p, xp)
    for _ in range(iterations):
        xp.multiply(factor, weight, out=product)
        real = _symmetric_inverse(product, p, fft_workers)
        real *= multiplier
        magnitude = _symmetric_forward(real, p, fft_workers)
        del real
        xp.abs(magnitude, out=magnitude)
        factor /= xp.maximum(magnitude, xp.float32(_MIN_CONVOLVED), out=magnitude)
        del magnitude
    return factor


@functools.lru_cache(maxsize=2)
def _half_blob_multiplier(padded_px: int, xp: ModuleType) -> Any:
    """`blob_multiplier` of the z ≤ P//2 slices, made once per grid size: the maps of a run
    (halves and average, every iteration) share it. Read-only."""
    multiplier = blob_multiplier(padded_px, xp, z_slices=padded_px // 2 + 1)
    if xp is numpy:
        multiplier.flags.writeable = False
    return multiplier


def _symmetric_inverse(spectrum: Any, padded_px: int, fft_workers: int | None) -> Any:
    """`irfftn` of the real half spectrum `(P, P, P//2+1)` of a real array f with
    f(−x) = f(x), on the slices z = 0 … P//2 only (the others mirror them): `(P//2+1, P, P)`.

    Along z the spectrum is real, so a real FFT gives the z ≤ P//2 half; each of those slices
    is then the half spectrum of a real image (`irfft2`).
    """
    xp = array_namespace(spectrum)
    lines = rfft(spectrum, axis=0, norm="forward", workers=fft_workers)  # 1/P of the inverse
    xp.conjugate(lines, out=lines)  # e^{+2πi kz z/P}: the inverse's sign (spectrum is real)
    return irfft2(lines, (padded_px, padded_px), workers=fft_workers)


def _symmetric_forward(half: Any, padded_px: int, fft_workers: int | None) -> Any:
    """`rfftn` of the real array f with f(−x) = f(x) whose slices z = 0 … P//2 are `half`
    `(P//2+1, P, P)`: the real part `(P, P, P//2+1)` (the imaginary part is zero).

    The 2-D spectra g(z) of the slices satisfy g(−z) = conj g(z), so the transform along z is a
    half-complex-to-real one of the z ≤ P//2 half.
    """
    xp = array_namespace(half)
    planes = rfft2(half, workers=fft_workers)
    xp.conjugate(planes, out=planes)  # Σ_z g(z) e^{−iθz} = Σ_z conj g(z) e^{+iθz} (it is real)
    return irfft(planes, padded_px, axis=0, norm="forward", workers=fft_workers)


def mask_corners(volume: Any, edge_px: float = MASK_EDGE_PX) -> Any:
    """The volume `(N, N, N)` with everything beyond radius N/2 from the centre N // 2 set to
    its mean there, through a raised-cosine edge of `edge_px` (RELION's softMaskOutsideMap)."""
    xp = array_namespace(volume)
    n = volume.shape[0]
    c = (xp.arange(n, dtype=xp.float64) - n // 2) ** 2
    r = xp.sqrt(c[:, None, None] + c[None, :, None] + c[None, None, :])
    radius = n / 2.0
    outer = xp.clip((r - radius) / edge_px, 0.0, 1.0)
    background_weight = xp.where(r < radius, 0.0, 0.5 - 0.5 * xp.cos(numpy.pi * outer))
    total = float(xp.sum(background_weight))
    if total == 0:
        return volume
    background = float(xp.sum(background_weight * volume)) / total
    return volume * (1.0 - background_weight) + background * background_weight
