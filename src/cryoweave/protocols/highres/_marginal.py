"""The final maps marginalised over each particle's pose uncertainty (``final_reconstruction:
marginal``, the default): RELION weighs every particle over its orientations and origins by
their posterior probability when it reconstructs; a hard assignment keeps only the best pose
and leaves the pose noise in the map.

Around each refined pose, a local grid (``LocalGrid``) is scored against that half's hard
final map, weighted by sqrt(2·FSC/(1+FSC)) of the halves' FSC as the iterations' references
are (``_references.fsc_weights``), over the band up to the halves' resolution at the run's
criterion (0.5 by default: beyond it the reference is mostly noise); the noise power per shell
is the mean residual at the refined poses. The grid's steps change the phase at the band's edge
by ANGLE_PHASE_RAD at half the box's width (angles) and by SHIFT_PHASE_RAD (origins): finer
bands get finer grids. ±2 angular steps reach about ±3° at the `make validate` resolutions,
which the posterior needs (benchmarks/highres_soft_insertion.py: ±2° truncates it). Where the
median particle of a sample (the first batch of each half) keeps every pose of that grid, its
posterior reaches the grid's edge: the grid then reaches ±3 steps (``fitted_grid``; 123
orientations instead of 33, about 4× the insertions). On the d7 case the ±2-step grid
(±2.5°) kept all 165 poses of the median particle; ±3 steps kept 531 of 615.

Measured with that script on the `make validate` cases (FSC 0.5 against the truth): phantom
7.82 → 7.72 Å (true poses 7.65), d7 6.57 → 6.47 (6.40), ribosome 17.66 → 17.51 (17.27). The
`make validate` test with ``fitted_grid``: d7 6.453 (from 6.488 with the ±2-step grid; phantom
and ribosome do not widen).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from cryoweave.engine import (
    LocalGrid,
    Projector,
    ReconstructionAccumulator,
    fsc,
    inverse_noise_power,
    kept_poses,
    marginal_insert,
    shell_residual_power,
)
from cryoweave.protocols._shared.particle_arrays import ParticleArrays
from cryoweave.protocols._shared.reconstruct import empty_accumulator
from cryoweave.protocols.highres._halves import normal_batches
from cryoweave.protocols.highres._references import apply_frequency_weights, fsc_weights

ANGLE_PHASE_RAD = 1.2
SHIFT_PHASE_RAD = 0.7
ANGLE_STEPS = 2
WIDER_ANGLE_STEPS = 3
SHIFT_STEPS = 1
BATCH_BYTES = 256 << 20  # per posterior batch: ~4 (batch, box, box/2+1) complex64 arrays


def batch_particles(box_px: int) -> int:
    """Particles per batch of the marginal insertion (16 to 500, within BATCH_BYTES)."""
    return max(16, min(500, BATCH_BYTES // (32 * box_px * (box_px // 2 + 1))))


def band_radius_px(box_px: int, pixel_size_a: float, resolution_a: float) -> float:
    """The likelihood's band edge (Fourier px of the box) at ``resolution_a`` (Nyquist − 1
    when the resolution is not finite: the FSC never crossed the criterion)."""
    if not (math.isfinite(resolution_a) and resolution_a > 0):
        return float(box_px / 2 - 1)
    return float(min(box_px / 2 - 1, max(2.0, box_px * pixel_size_a / resolution_a)))


def local_grid(box_px: int, r_max_px: float, angle_steps: int = ANGLE_STEPS) -> LocalGrid:
    """The grid around each pose for a band ending at ``r_max_px`` (module notes)."""
    edge = 2 * math.pi * r_max_px / box_px  # phase per pixel of shift at the band's edge
    return LocalGrid.around(math.degrees(ANGLE_PHASE_RAD / (edge * box_px / 2)), angle_steps,
                            SHIFT_PHASE_RAD / edge, SHIFT_STEPS)


def noise_power(particles: ParticleArrays, poses: dict[str, np.ndarray],
                rows_of_half: dict[int, np.ndarray], projectors: dict[int, Projector],
                r_max_px: float) -> np.ndarray:
    """1/σ² per shell: the mean residual power of the particles ``rows_of_half[h]`` at their
    poses against ``projectors[h]``."""
    sums, count = 0.0, 0
    for h, rows in rows_of_half.items():
        for batch, images in normal_batches(particles, rows, poses):
            if len(batch):
                batch_sums, n = shell_residual_power(
                    images, particles.ctf(batch), particles.matrices(batch),
                    particles.origins_px(batch), projectors[h], r_max_px)
                sums, count = sums + batch_sums, count + n
    return inverse_noise_power(np.asarray(sums), count)


def fitted_grid(particles: ParticleArrays, poses: dict[str, np.ndarray],
                rows_of_half: dict[int, np.ndarray], projectors: dict[int, Projector],
                r_max_px: float, inverse_sigma2: np.ndarray) -> tuple[LocalGrid, float]:
    """The local grid (±ANGLE_STEPS), or the wider one (±WIDER_ANGLE_STEPS) when the median
    particle of a sample (the first batch of each half) keeps every pose of the first: its
    posterior then reaches the grid's edge and would be cut (module notes). Returns the grid
    and the sample's median kept poses on the first grid."""
    box = particles.box_px
    grid = local_grid(box, r_max_px)
    kept = []
    for h, rows in rows_of_half.items():
        for batch, images in normal_batches(particles, rows, poses,
                                            batch_size=batch_particles(box)):
            if len(batch):
                kept.append(kept_poses(
                    images, particles.ctf(batch), particles.matrices(batch),
                    particles.origins_px(batch), projectors[h], grid, r_max_px=r_max_px,
                    inverse_sigma2=inverse_sigma2))
                break
    median = float(np.median(np.concatenate(kept))) if kept else 0.0
    if median >= len(grid.rotations) * len(grid.shifts_px):
        return local_grid(box, r_max_px, WIDER_ANGLE_STEPS), median
    return grid, median


def marginal_accumulators(particles: ParticleArrays, poses: dict[str, np.ndarray],
                          rows_of_half: dict[int, np.ndarray], halves: dict[int, np.ndarray],
                          *, resolution_a: float, symmetry: str,
                          weights: np.ndarray | None = None,
                          progress: Callable[[int, int], None] | None = None
                          ) -> tuple[dict[int, ReconstructionAccumulator], dict[str, float]]:
    """Accumulators of both halves with each particle (``particles`` at the refined poses)
    inserted over its local grid (times ``weights[row]`` if given); ``halves``: the hard final
    half maps on the particles' grid; ``progress(done, total)`` during the insertion. Returns
    them and facts for the record (grid steps, band, median kept poses)."""
    pixel, box = particles.pixel_size_a, particles.box_px
    r_max = band_radius_px(box, pixel, resolution_a)
    curve = fsc(halves[1], halves[2], pixel_size_a=pixel)
    wiener = fsc_weights(curve.frequency_per_a, curve.values)
    projectors = {h: Projector.from_volume(
        np.asarray(apply_frequency_weights(halves[h], pixel, *wiener), np.float32),
        r_max_px=r_max) for h in (1, 2)}
    inverse_sigma2 = noise_power(particles, poses, rows_of_half, projectors, r_max)
    grid, sample_kept = fitted_grid(particles, poses, rows_of_half, projectors, r_max,
                                    inverse_sigma2)
    accumulators, kept = {}, []
    total, before, counts = sum(len(r) for r in rows_of_half.values()), 0, [0, 0]
    for h, rows in rows_of_half.items():
        accumulator = empty_accumulator(particles, half=h, padding=2.0, max_resolution_a=None)
        for batch, images in normal_batches(particles, rows, poses, counts,
                                            batch_size=batch_particles(box)):
            if len(batch):
                stats = marginal_insert(
                    accumulator, images, particles.ctf(batch), particles.matrices(batch),
                    particles.origins_px(batch), projectors[h], grid, r_max_px=r_max,
                    inverse_sigma2=inverse_sigma2, symmetry=symmetry,
                    particle_weights=None if weights is None else weights[batch])
                kept.append(stats["kept"])
            if progress is not None:
                progress(before + counts[1], total)
        before += len(rows)
        accumulators[h] = accumulator
    facts = {"marginal_angle_step_deg": float(np.degrees(np.arccos(
                 np.clip((np.trace(grid.rotations[1]) - 1) / 2, -1, 1)))),
             "marginal_shift_step_px": float(np.abs(grid.shifts_px[1]).max()),
             "marginal_poses": len(grid.rotations) * len(grid.shifts_px),
             "marginal_band_a": box * pixel / r_max,
             "marginal_kept_median": float(np.median(np.concatenate(kept))) if kept else 0.0,
             "marginal_sample_kept_median": sample_kept}
    return accumulators, facts
