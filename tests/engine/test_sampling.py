"""Even sphere sampling: point count, spacing, coverage, asymmetric-unit and tilt restriction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from cryoweave.engine._sampling import (
    fibonacci_directions,
    orientation_grid,
    psi_sampling,
    sphere_sampling,
)
from cryoweave.engine._symmetry import in_asymmetric_unit, symmetry_order


def _unit(rot_deg, tilt_deg):
    r, t = np.deg2rad(rot_deg), np.deg2rad(tilt_deg)
    return np.stack([np.cos(r) * np.sin(t), np.sin(r) * np.sin(t), np.cos(t)], axis=-1)


@pytest.mark.parametrize("step", [30.0, 15.0, 7.5, 3.0])
def test_whole_sphere_count_spacing_and_coverage(step):
    rot, tilt = sphere_sampling(step)
    expected = 4 * np.pi / np.deg2rad(step) ** 2
    assert abs(len(rot) - expected) <= 0.15 * expected
    points = _unit(rot, tilt)
    tree = cKDTree(points)
    chord, _ = tree.query(points, k=2)
    nearest_deg = 2 * np.degrees(np.arcsin(chord[:, 1] / 2))
    assert nearest_deg.max() <= 1.2 * step
    assert nearest_deg.min() >= 0.8 * step  # no clumps either
    probes = np.random.default_rng(0).standard_normal((20000, 3))
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    gap, _ = tree.query(probes)
    assert 2 * np.degrees(np.arcsin(gap.max() / 2)) <= step  # every direction is near a sample


@pytest.mark.parametrize("name", ["c4", "d7", "o", "i2"])
def test_restricted_to_asymmetric_unit(name):
    step = 4.0
    rot, tilt = sphere_sampling(step, symmetry=name)
    assert np.all(in_asymmetric_unit(_unit(rot, tilt), name))
    expected = 4 * np.pi / np.deg2rad(step) ** 2 / symmetry_order(name)
    assert abs(len(rot) - expected) <= 0.15 * expected


def test_tilt_range_and_determinism():
    rot, tilt = sphere_sampling(5.0, min_tilt_deg=60, max_tilt_deg=120)
    assert tilt.min() >= 60 and tilt.max() <= 120
    band = np.cos(np.deg2rad(60)) - np.cos(np.deg2rad(120))  # area of the band / (2π)
    expected = 2 * np.pi * band / np.deg2rad(5.0) ** 2
    assert abs(len(rot) - expected) <= 0.15 * expected
    np.testing.assert_array_equal(sphere_sampling(5.0)[0], sphere_sampling(5.0)[0])
    with pytest.raises(ValueError, match="tilt range"):
        sphere_sampling(5.0, min_tilt_deg=100, max_tilt_deg=50)
    with pytest.raises(ValueError, match="step_deg"):
        sphere_sampling(0.0)


def test_psi_and_orientation_grid():
    np.testing.assert_allclose(psi_sampling(7.5), np.arange(48) * 7.5)
    np.testing.assert_allclose(psi_sampling(7.0), np.arange(51) * 360 / 51)  # even division
    rot, tilt, psi = orientation_grid(15.0, symmetry="c2", psi_step_deg=30.0)
    n_dir = len(sphere_sampling(15.0, symmetry="c2")[0])
    assert rot.shape == tilt.shape == psi.shape == (n_dir * 12,)
    assert set(np.round(psi, 6)) == set(np.round(np.arange(12) * 30.0, 6))


def test_fibonacci_directions_are_unit_vectors():
    d = fibonacci_directions(101)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0)
    assert abs(d[:, 2].mean()) < 1e-12  # symmetric in z
