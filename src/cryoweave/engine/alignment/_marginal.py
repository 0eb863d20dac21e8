"""Marginalised ("soft") insertion around given poses, as RELION's reconstruction weighs each
particle over its orientations and origins by their posterior probability.

For each particle, a local grid of poses around its own (rotation vectors E on a cubic grid
of ±M·step inside a ball, composed on the left of its rotation A like the local search;
origins on a ±M·step disc around its origin) is scored with the Gaussian log-likelihood

    L = −Σ_k |X_k·e^{−2πik·o/N} − CTF_k·P_k(E·A)|² / σ²(|k|)

over the band 1 < |k| ≤ r_max (σ²: the residual power per shell at the given poses,
`shell_residual_power`). The probabilities exp(L − max L), normalised, below
`min_probability` are dropped (each dropped pose changes the map by less than that fraction
of the particle: no threshold effect when the inputs change in the last digits, as a
cumulative cut would have); the particle is then inserted once per kept orientation,
its kept origins combined into one image (shifted in Fourier space, so an even box loses the
imaginary part of its Nyquist lines: a particle with one kept pose gives the hard insertion's
map to FSC > 0.9999 up to N/2 − 3), with the weight of their summed probability.
Measured in benchmarks/highres_soft_insertion.py (issue 9).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import numpy

from .._backend import array_namespace, to_host
from .._fft import fft_wave_numbers, irfft2, rfft2
from ._local import rotation_from_vector
from ._score import band, band_rows, shift_phases

if TYPE_CHECKING:
    from .._projection import Projector
    from .._reconstruction import ReconstructionAccumulator


@dataclasses.dataclass(frozen=True)
class LocalGrid:
    """Offsets around a pose: rotations `(R, 3, 3)` (applied on the left) and origin offsets
    `(S, 2)` px, host float64; the first of each is the identity / zero."""

    rotations: numpy.ndarray
    shifts_px: numpy.ndarray

    @classmethod
    def around(cls, angle_step_deg: float, angle_steps: int, shift_step_px: float,
               shift_steps: int) -> LocalGrid:
        """Cubic grids of ±steps·step inside a ball: rotation vectors (3-D) and origins (2-D)."""
        if not (angle_step_deg > 0 and shift_step_px > 0 and angle_steps >= 0
                and shift_steps >= 0):
            raise ValueError("steps must be > 0 and step counts ≥ 0; got "
                             f"{angle_step_deg}° × {angle_steps}, {shift_step_px} px × "
                             f"{shift_steps}")
        vectors = _ball(angle_steps, angle_step_deg, 3)
        return cls(rotation_from_vector(vectors), _ball(shift_steps, shift_step_px, 2))


def _ball(steps: int, step: float, dims: int) -> numpy.ndarray:
    axis = numpy.arange(-steps, steps + 1) * step
    points = numpy.stack(numpy.meshgrid(*[axis] * dims, indexing="ij"), -1).reshape(-1, dims)
    points = points[numpy.linalg.norm(points, axis=1) <= steps * step + 1e-9]
    return points[numpy.argsort(numpy.linalg.norm(points, axis=1), kind="stable")]


def _band_values(spectra: Any, ctfs: Any, r_max_px: float) -> tuple[Any, Any, Any]:
    """(the band, X `(b, C)` complex64, CTF `(b, C)` float32) of a batch's rfft2 spectra
    `(b, N, N//2+1)`."""
    xp = array_namespace(spectra)
    n, b = spectra.shape[-2], spectra.shape[0]
    the_band = band(n, 1.0, r_max_px)
    flat = xp.asarray(the_band.flat)
    x = xp.reshape(spectra, (b, -1))[:, flat]
    ctf = xp.reshape(xp.asarray(ctfs, dtype=xp.float32), (-1, n * (n // 2 + 1)))[:, flat]
    return the_band, x.astype(xp.complex64), xp.broadcast_to(ctf, x.shape)


def _rows(projector: Projector, matrices: Any, the_band: Any) -> Any:
    xp = array_namespace(matrices)
    rows = band_rows(projector, xp.reshape(matrices, (-1, 3, 3)), the_band)
    return xp.reshape(rows.view(xp.complex64), (*matrices.shape[:-2], -1))


def shell_residual_power(images: Any, ctfs: Any, matrices: Any, origins_px: Any,
                         projector: Projector, r_max_px: float) -> tuple[numpy.ndarray, int]:
    """Σ over the batch of the mean |X·e^{−2πik·o/N} − CTF·P|² of a coefficient, per integer
    shell `(⌊r_max⌋ + 2,)` (host float64), and the batch size: sum both over batches, then
    `inverse_noise_power`."""
    xp = array_namespace(images)
    spectra = rfft2(xp.asarray(images, dtype=xp.float32))
    the_band, x, ctf = _band_values(spectra, ctfs, r_max_px)
    residual = x * shift_phases(the_band, origins_px) - ctf * _rows(projector, matrices,
                                                                     the_band)
    power = to_host(xp.sum(residual.real ** 2 + residual.imag ** 2, axis=0))
    shells = numpy.rint(the_band.radius).astype(int)
    sums, coefficients = numpy.zeros(int(r_max_px) + 2), numpy.zeros(int(r_max_px) + 2)
    numpy.add.at(sums, shells, power.astype(numpy.float64))
    numpy.add.at(coefficients, shells, 1.0)
    return sums / numpy.maximum(coefficients, 1.0), int(images.shape[0])


def inverse_noise_power(shell_sums: numpy.ndarray, count: int) -> numpy.ndarray:
    """1/σ² per shell from `shell_residual_power`'s sums (0 where a shell had no power)."""
    mean = numpy.asarray(shell_sums, numpy.float64) / max(count, 1)
    return numpy.where(mean > 0, 1.0 / numpy.where(mean > 0, mean, 1.0), 0.0)


def _posteriors(x: Any, ctf: Any, rows: Any, phases: Any, inv_sigma2: Any,
                min_probability: float) -> Any:
    """Probabilities `(b, S, R)` over origin offsets × orientations, those below
    `min_probability` dropped."""
    xp = array_namespace(x)
    b, s, r = x.shape[0], phases.shape[1], rows.shape[1]
    y = (x * ctf * inv_sigma2)[:, None, :] * phases  # (b, S, C)
    cross = (xp.einsum("bsc,brc->bsr", y.real, rows.real)
             + xp.einsum("bsc,brc->bsr", y.imag, rows.imag))
    energy = xp.einsum("bc,brc->br", ctf * ctf * inv_sigma2,
                       rows.real ** 2 + rows.imag ** 2)
    log_like = xp.reshape(2 * cross - energy[:, None, :], (b, s * r)).astype(xp.float64)
    p = xp.exp(log_like - xp.max(log_like, axis=1, keepdims=True))
    p /= xp.sum(p, axis=1, keepdims=True)
    p = xp.where(p >= min_probability, p, 0.0)
    return xp.reshape(p / xp.sum(p, axis=1, keepdims=True), (b, s, r))


def _scored(images: Any, ctfs: Any, matrices: Any, origins_px: Any, projector: Projector,
            grid: LocalGrid, r_max_px: float, inverse_sigma2: numpy.ndarray,
            min_probability: float) -> tuple[Any, Any, Any, Any]:
    """(the batch's spectra, trial rotations `(b, R, 3, 3)`, trial origins `(b, S, 2)`,
    posteriors `(b, S, R)`)."""
    xp = array_namespace(images)
    spectra = rfft2(xp.asarray(images, dtype=xp.float32))
    the_band, x, ctf = _band_values(spectra, ctfs, r_max_px)
    shells = numpy.minimum(numpy.rint(the_band.radius).astype(int), len(inverse_sigma2) - 1)
    inv_sigma2 = xp.asarray(numpy.asarray(inverse_sigma2)[shells], dtype=xp.float32)
    rotations = xp.asarray(grid.rotations)
    trial = rotations[None] @ xp.asarray(matrices, dtype=xp.float64)[:, None]  # (b, R, 3, 3)
    origins = xp.asarray(origins_px, dtype=xp.float64)[:, None] + xp.asarray(grid.shifts_px)
    p = _posteriors(x, ctf, _rows(projector, trial, the_band),
                    shift_phases(the_band, origins), inv_sigma2, min_probability)
    return spectra, trial, origins, p


def kept_poses(images: Any, ctfs: Any, matrices: Any, origins_px: Any, projector: Projector,
               grid: LocalGrid, *, r_max_px: float, inverse_sigma2: numpy.ndarray,
               min_probability: float = 1e-5) -> numpy.ndarray:
    """How many of the `grid`'s poses each particle of the batch keeps (`marginal_insert`'s
    posterior, nothing inserted), host `(b,)`: a particle that keeps them all has a posterior
    that reaches the grid's edge."""
    xp = array_namespace(images)
    *_, p = _scored(images, ctfs, matrices, origins_px, projector, grid, r_max_px,
                    inverse_sigma2, min_probability)
    return to_host(xp.sum(xp.reshape(p, (p.shape[0], -1)) > 0, axis=1))


def marginal_insert(accumulator: ReconstructionAccumulator, images: Any, ctfs: Any,
                    matrices: Any, origins_px: Any, projector: Projector, grid: LocalGrid, *,
                    r_max_px: float, inverse_sigma2: numpy.ndarray, symmetry: str = "c1",
                    particle_weights: Any | None = None, min_probability: float = 1e-5
                    ) -> dict[str, Any]:
    """Insert a batch (images `(b, N, N)`, ctfs `(b, N, N//2+1)`, poses `(b, 3, 3)` and
    `(b, 2)` px) over the local `grid` around its poses, weighted by the posterior against
    `projector` (module notes) times `particle_weights` `(b,)` if given; `inverse_sigma2` per
    shell (`inverse_noise_power`). Returns
    host arrays: `kept` poses per particle `(b,)` and the `top` probability `(b,)`."""
    xp = array_namespace(images, accumulator.sums)
    n, b = images.shape[-1], images.shape[0]
    spectra, trial, origins, p = _scored(images, ctfs, matrices, origins_px, projector, grid,
                                         r_max_px, inverse_sigma2, min_probability)
    kx = fft_wave_numbers(n, xp, rfft=True) / n
    ky = fft_wave_numbers(n, xp) / n
    # separable phase ramps of every particle's origins: (b, S, N/2+1) and (b, S, N)
    along_x = xp.exp(-2j * numpy.pi * origins[..., 0, None] * kx).astype(xp.complex64)
    along_y = xp.exp(-2j * numpy.pi * origins[..., 1, None] * ky).astype(xp.complex64)
    images_before = accumulator.n_images
    for j in range(trial.shape[1]):
        w = p[:, :, j]  # (b, S)
        total = xp.sum(w, axis=1)
        use = xp.flatnonzero(total > 0)
        if use.size == 0:
            continue
        share = (w[use] / total[use, None]).astype(xp.float32)  # (u, S)
        combined = xp.zeros((int(use.size), n, n // 2 + 1), dtype=xp.complex64)
        for k in range(origins.shape[1]):  # one origin at a time: (u, N, N/2+1) at most
            combined += ((share[:, k, None] * along_y[use, k])[:, :, None]
                         * along_x[use, k][:, None, :])
        shifted = irfft2(combined * spectra[use], (n, n)).astype(xp.float32)
        ctf_use = ctfs[use] if getattr(ctfs, "ndim", 2) == 3 else ctfs
        weight = total[use] if particle_weights is None else (
            total[use] * xp.asarray(particle_weights, dtype=xp.float64)[use])
        accumulator.insert(shifted, trial[use, j], ctf=ctf_use, symmetry=symmetry,
                           particle_weights=weight)
    accumulator.n_images = images_before + b  # each particle once, however many poses
    flat = xp.reshape(p, (b, -1))
    return {"kept": to_host(xp.sum(flat > 0, axis=1)), "top": to_host(xp.max(flat, axis=1))}
