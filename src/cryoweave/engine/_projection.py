"""Fourier projection (central slices) and its exact adjoint, back-projection.

A volume V `(N, N, N)` (centre N // 2) is divided by the gridding correction, zero padded to
P = round(padding · N) (centre P // 2) and transformed (`rfftn`). Image wave number
k = (kx, ky) samples that transform at q = (P/N) · Aᵀ (kx, ky, 0) by trilinear interpolation,
with V̂(−q) = conj V̂(q) for qx < 0. Pixels with |k| > r_max_px (default N // 2, capped at
(P // 2)·N/P) are zero. Then the CTF multiplies, the RELION origin translates the image (a
particle is its centred projection translated by −origin) and `irfft2` gives
P(x, y) = Σ_z V(Aᵀ (x, y, z)) with the centre at N // 2, odd and even N. (`relion_project`
agrees to 1e-4 for even N; for odd N its images sit one pixel further along +x and +y.)

Trilinear interpolation in Fourier space multiplies the padded real-space volume by
sinc²(x/P)·sinc²(y/P)·sinc²(z/P) (x from the centre, normalised sinc): the gridding correction
divides by it (before projecting; after reconstructing).

`backproject` is the exact adjoint of `project`: ⟨project(x), y⟩ = ⟨x, backproject(y)⟩.
Reconstruction (weights, gridding, division) is `_reconstruction`; the grid layout, kernels and
backend rules are in `_slicing`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy

from ._backend import array_namespace
from ._fft import irfft2, irfftn, rfft2, rfftn
from ._reconstruction import ReconstructionAccumulator, reconstruct
from ._slicing import (
    SliceGeometry,
    _at_pixels,
    _batch_ctf,
    _batch_size,
    _check_ctf,
    _check_matrices,
    _column_multiplicity,
    _interpolate,
    _phase_factors,
    _real_dtype,
    _splat,
    extend_grid,
    fold_grid,
    pixel_subset,
    slice_geometry,
    trilinear_gridding_correction,
)

# ReconstructionAccumulator and reconstruct moved to `_reconstruction`; re-exported for old imports
__all__ = ["Projector", "ReconstructionAccumulator", "backproject", "project", "reconstruct"]


@dataclasses.dataclass(frozen=True)
class Projector:
    """A volume prepared for projection: its padded, gridding-corrected half transform on the
    extended grid (`_slicing` notes). Build with `from_volume`, then call `project` per batch."""

    geometry: SliceGeometry
    grid: Any

    @classmethod
    def from_volume(
        cls, volume: Any, *, padding: float = 2.0, r_max_px: float | None = None
    ) -> Projector:
        """volume: `(N, N, N)` float32 (float64 stays float64), centre at N // 2."""
        xp = array_namespace(volume)
        if volume.ndim != 3 or len(set(volume.shape)) != 1:
            raise ValueError(f"volume must be a cubic (N, N, N) array; got {volume.shape}")
        geometry = slice_geometry(volume.shape[0], padding, r_max_px)
        n, p = geometry.box_px, geometry.padded_px
        padded = xp.zeros((p, p, p), dtype=_real_dtype(xp, volume.dtype))
        window = (xp.arange(n) - n // 2) % p  # centre N // 2 -> index 0 (FFT origin)
        padded[xp.ix_(window, window, window)] = volume / trilinear_gridding_correction(n, p, xp)
        return cls(geometry, extend_grid(rfftn(padded, ndim=3)))

    def project(
        self,
        matrices: Any,
        *,
        origin_xy_px: Any | None = None,
        ctf: Any | None = None,
        spectra: bool = False,
        batch_size: int | None = None,
    ) -> Any:
        """Projections `(n, N, N)` (real, the volume's dtype) at orientations `(n, 3, 3)`.

        origin_xy_px: `(n, 2)` RELION origins in pixels (rlnOriginX/YAngst / pixel size); each
        image is its centred projection translated by −origin. ctf: `(n, N, N//2+1)` or shared
        `(N, N//2+1)` CTF on the rfft2 grid (`ctf_2d`), multiplied in. spectra=True returns the
        half spectra `(n, N, N//2+1)` complex instead (rfft2 of the images).
        """
        xp = array_namespace(self.grid)
        matrices = _check_matrices(matrices, xp)
        _check_ctf(ctf, self.grid)
        geometry, n_img = self.geometry, matrices.shape[0]
        n, h = geometry.box_px, geometry.box_px // 2 + 1
        flat, *_ = geometry.pixels(xp)
        view = self.grid.view(_real_dtype(xp, self.grid.dtype)).reshape(-1, 2)
        out = xp.zeros((n_img, n * h), dtype=self.grid.dtype)
        step = _batch_size(geometry, n_img, batch_size)
        centred = (_phase_factors(geometry, None, 1, xp, self.grid.dtype)  # the same per image
                   if origin_xy_px is None else None)
        for start in range(0, n_img, step):
            stop = min(n_img, start + step)
            pair = _interpolate(geometry, view, matrices[start:stop])
            values = (pair[:, 0] + 1j * pair[:, 1]).astype(self.grid.dtype)
            values = values.reshape(stop - start, -1)
            if origin_xy_px is None:
                values *= centred
            else:
                values *= _phase_factors(geometry, origin_xy_px[start:stop], stop - start, xp,
                                         values.dtype)
            if ctf is not None:
                values *= _at_pixels(geometry, _batch_ctf(ctf, start, stop), stop - start, xp)
            out[start:stop, flat] = values
        out = out.reshape(n_img, n, h)
        return out if spectra else irfft2(out, (n, n))

    def sample(self, matrices: Any, flat: Any) -> Any:
        """Half-spectrum values `(n, len(flat))` (the grid's complex dtype) of the centred
        projections at orientations `(n, 3, 3)`, at the pixels `flat` only (host ints into
        `(N, N//2+1)`, each within the projector's radius): the same numbers as
        ``project(matrices, spectra=True)`` there, without the rest of the spectrum."""
        xp = array_namespace(self.grid)
        matrices = _check_matrices(matrices, xp)
        subset = pixel_subset(self.geometry, flat)
        if matrices.shape[0] == 0:
            return xp.zeros((0, len(subset.flat)), dtype=self.grid.dtype)
        view = self.grid.view(_real_dtype(xp, self.grid.dtype)).reshape(-1, 2)
        pair = _interpolate(subset, view, matrices)  # (Re, Im) rows: a complex array's layout
        values = pair.view(self.grid.dtype).reshape(matrices.shape[0], -1)
        values *= _phase_factors(subset, None, 1, xp, values.dtype)
        return values


def project(
    volume: Any,
    matrices: Any,
    *,
    padding: float = 2.0,
    origin_xy_px: Any | None = None,
    ctf: Any | None = None,
    spectra: bool = False,
    r_max_px: float | None = None,
    batch_size: int | None = None,
) -> Any:
    """Project a volume `(N, N, N)` at orientations `(n, 3, 3)` into images `(n, N, N)`.

    `Projector.from_volume(volume, padding=…).project(matrices, …)` in one call; see there and
    the module notes for the conventions.
    """
    projector = Projector.from_volume(volume, padding=padding, r_max_px=r_max_px)
    return projector.project(matrices, origin_xy_px=origin_xy_px, ctf=ctf, spectra=spectra,
                             batch_size=batch_size)


def backproject(
    images: Any,
    matrices: Any,
    *,
    padding: float = 2.0,
    origin_xy_px: Any | None = None,
    ctf: Any | None = None,
    r_max_px: float | None = None,
    batch_size: int | None = None,
) -> Any:
    """Exact adjoint of `project` (same arguments): images `(n, N, N)` -> volume `(N, N, N)`.

    ⟨project(x, A, …), y⟩ = ⟨x, backproject(y, A, …)⟩ for real x, y. Sums in float64; returns
    the images' float dtype. Reconstruction (CTF weights, division) is
    `ReconstructionAccumulator`.
    """
    xp = array_namespace(images)
    real = _real_dtype(xp, images.dtype)
    matrices = _check_matrices(matrices, xp)
    _check_ctf(ctf, images)
    geometry = slice_geometry(images.shape[-1], padding, r_max_px)
    n, p = geometry.box_px, geometry.padded_px
    # adjoint of irfft2: rfft2 with each column weighted by its multiplicity, / N²
    spectra = rfft2(xp.asarray(images, dtype=real)) * (_column_multiplicity(n, xp) / n**2)
    accumulator = xp.zeros((int(numpy.prod(geometry.extended_shape)), 2), dtype=xp.float64)
    step = _batch_size(geometry, matrices.shape[0], batch_size)
    for start in range(0, matrices.shape[0], step):
        stop = min(matrices.shape[0], start + step)
        values = _at_pixels(geometry, spectra[start:stop], stop - start, xp)
        origins = None if origin_xy_px is None else origin_xy_px[start:stop]
        values = values * xp.conj(_phase_factors(geometry, origins, stop - start, xp,
                                                 values.dtype))
        if ctf is not None:
            values = values * _at_pixels(geometry, _batch_ctf(ctf, start, stop), stop - start, xp)
        _splat(geometry, accumulator, matrices[start:stop], xp.reshape(values, (-1,)))
    folded = fold_grid(accumulator.reshape(*geometry.extended_shape, 2))
    half = (folded[..., 0] + 1j * folded[..., 1]) / _column_multiplicity(p, xp)
    padded = irfftn(half, (p, p, p))
    window = (xp.arange(n) - n // 2) % p  # adjoint of the centred zero padding
    volume = padded[window][:, window][:, :, window] * float(p) ** 3
    return (volume / trilinear_gridding_correction(n, p, xp)).astype(real)
