"""Marginalised insertion around given poses (engine.alignment._marginal): the local grid, the
posterior's behaviour at high and zero SNR, and a map that recovers from pose noise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoweave.engine import (
    LocalGrid,
    Projector,
    ReconstructionAccumulator,
    fsc,
    inverse_noise_power,
    kept_poses,
    marginal_insert,
    shell_residual_power,
    to_host,
)
from cryoweave.engine.alignment._local import rotation_from_vector

from .test_alignment import Particles

R_MAX = 12.0


def test_the_local_grid_starts_at_the_pose_and_reaches_its_extent():
    grid = LocalGrid.around(1.5, 2, 0.5, 1)
    assert grid.rotations.shape == (33, 3, 3) and grid.shifts_px.shape == (5, 2)
    assert np.allclose(grid.rotations[0], np.eye(3)) and np.allclose(grid.shifts_px[0], 0)
    angles = np.degrees(np.arccos(np.clip((np.trace(grid.rotations, axis1=1, axis2=2) - 1) / 2,
                                          -1, 1)))
    assert angles.max() == pytest.approx(3.0) and sorted(angles)[1] == pytest.approx(1.5)
    assert np.abs(grid.shifts_px).max() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="steps must be > 0"):
        LocalGrid.around(0.0, 2, 0.5, 1)


def _noise(data, projector, matrices, origins):
    sums, count = shell_residual_power(data.images, data.ctfs, matrices, origins, projector,
                                       R_MAX)
    return inverse_noise_power(sums, count)


def _insert(data, projector, matrices, origins, grid, xp=np, inverse_sigma2=None):
    accumulator = ReconstructionAccumulator.empty(data.box, xp=xp)
    if inverse_sigma2 is None:
        inverse_sigma2 = _noise(data, projector, matrices, origins)
    stats = marginal_insert(accumulator, xp.asarray(data.images), xp.asarray(data.ctfs),
                            xp.asarray(matrices), xp.asarray(origins), projector, grid,
                            r_max_px=R_MAX, inverse_sigma2=inverse_sigma2)
    return accumulator, stats


def test_a_clear_particle_keeps_only_its_own_pose_and_inserts_as_the_hard_map():
    data = Particles(12, seed=3, snr=20.0)
    projector = Projector.from_volume(data.volume, r_max_px=R_MAX)
    grid = LocalGrid.around(3.0, 1, 1.0, 1)
    soft, stats = _insert(data, projector, data.matrices, data.origins, grid)
    assert np.all(stats["top"] > 0.999) and np.all(stats["kept"] == 1)
    hard = ReconstructionAccumulator.empty(data.box)
    hard.insert(data.images, data.matrices, ctf=data.ctfs, origin_xy_px=data.origins)
    assert soft.n_images == hard.n_images == 12  # each particle once, whatever it kept
    # the same map but next to Nyquist (the origins are applied to the images there: the
    # Nyquist lines' imaginary parts are lost)
    agreement = fsc(soft.reconstruct(), hard.reconstruct()).values
    assert agreement[: data.box // 2 - 3].min() > 0.9999, agreement


def test_pure_noise_spreads_its_posterior_over_the_grid():
    data = Particles(12, seed=4, snr=20.0)
    projector = Projector.from_volume(data.volume, r_max_px=R_MAX)
    rng = np.random.default_rng(4)
    data.images = rng.standard_normal(data.images.shape).astype(np.float32)
    grid = LocalGrid.around(1.0, 2, 0.25, 1)
    _, stats = _insert(data, projector, data.matrices, data.origins, grid)
    poses = len(grid.rotations) * len(grid.shifts_px)
    assert np.median(stats["kept"]) > 0.8 * poses and np.median(stats["top"]) < 10 / poses


def test_the_marginal_map_recovers_what_pose_noise_took_from_the_hard_map():
    """Poses off by 2.5° (random axes) and 0.5 px: scored against the (noisy) hard map, the
    marginal map correlates better with the truth than the hard map from the same poses."""
    data = Particles(500, seed=5, snr=0.3, n_atoms=150)
    rng = np.random.default_rng(5)
    axes = rng.standard_normal((500, 3))
    axes *= 2.5 / np.linalg.norm(axes, axis=1, keepdims=True)
    matrices = rotation_from_vector(axes) @ data.matrices
    directions = rng.uniform(0, 2 * math.pi, 500)
    origins = data.origins + 0.5 * np.stack([np.cos(directions), np.sin(directions)], 1)
    hard = ReconstructionAccumulator.empty(data.box)
    hard.insert(data.images, matrices, ctf=data.ctfs, origin_xy_px=origins)
    hard_map = hard.reconstruct()
    projector = Projector.from_volume(hard_map.astype(np.float32), r_max_px=R_MAX)
    soft, stats = _insert(data, projector, matrices, origins, LocalGrid.around(1.5, 2, 0.5, 1))
    soft_map = soft.reconstruct()
    shells = slice(4, int(R_MAX) + 1)
    hard_fsc = fsc(hard_map, data.volume).values[shells]
    soft_fsc = fsc(soft_map, data.volume).values[shells]
    assert soft_fsc.mean() > hard_fsc.mean() + 0.01, (soft_fsc, hard_fsc)  # measured: +0.024
    assert 1 < np.median(stats["kept"]) < 165


def test_kept_poses_counts_what_the_insertion_keeps_without_inserting():
    data = Particles(16, seed=7, snr=1.0)
    projector = Projector.from_volume(data.volume, r_max_px=R_MAX)
    grid = LocalGrid.around(1.5, 2, 0.5, 1)
    inverse_sigma2 = _noise(data, projector, data.matrices, data.origins)
    kept = kept_poses(data.images, data.ctfs, data.matrices, data.origins, projector, grid,
                      r_max_px=R_MAX, inverse_sigma2=inverse_sigma2)
    _, stats = _insert(data, projector, data.matrices, data.origins, grid,
                       inverse_sigma2=inverse_sigma2)
    assert kept.shape == (16,) and np.array_equal(kept, stats["kept"])
    assert kept.min() >= 1 and kept.max() <= 165 and len(np.unique(kept)) > 1


def test_backends_agree(xp):
    data = Particles(10, seed=6, snr=1.0)
    grid = LocalGrid.around(2.0, 1, 0.5, 1)
    host_projector = Projector.from_volume(data.volume, r_max_px=R_MAX)
    inverse_sigma2 = _noise(data, host_projector, data.matrices, data.origins)
    expected, _ = _insert(data, host_projector, data.matrices, data.origins, grid,
                          inverse_sigma2=inverse_sigma2)
    projector = Projector.from_volume(xp.asarray(data.volume), r_max_px=R_MAX)
    got, stats = _insert(data, projector, data.matrices, data.origins, grid, xp=xp,
                         inverse_sigma2=inverse_sigma2)
    scale = np.abs(expected.sums).max()
    assert np.abs(to_host(got.sums) - expected.sums).max() < 1e-5 * scale
    kept = kept_poses(xp.asarray(data.images), xp.asarray(data.ctfs), xp.asarray(data.matrices),
                      xp.asarray(data.origins), projector, grid, r_max_px=R_MAX,
                      inverse_sigma2=inverse_sigma2)
    assert isinstance(kept, np.ndarray) and np.array_equal(kept, stats["kept"])
