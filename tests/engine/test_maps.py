"""Map operations: symmetrising, hand inversion, threshold masks and normalisation."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine import (
    atoms_phantom,
    flip_hand,
    lowpass_filter_a,
    normalize_volume,
    symmetrize_volume,
    threshold_mask,
)
from cryoweave.engine._maps import background_region


def _random_map(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, n, n)).astype(np.float32)


def test_symmetrize_c2_equals_the_explicit_average():
    # odd box: a 180° turn about z through the centre N//2 is reversing y and x
    volume = _random_map(11)
    expected = (volume + volume[:, ::-1, ::-1]) / 2
    np.testing.assert_allclose(symmetrize_volume(volume, "c2"), expected, atol=1e-5)


@pytest.mark.parametrize("symmetry", ["c4", "d2"])
def test_symmetrize_is_invariant_and_idempotent_for_grid_groups(symmetry):
    volume = _random_map(13, seed=1)
    out = symmetrize_volume(volume, symmetry)
    # a quarter turn about z (odd box: np.rot90 turns about the centre)
    if symmetry == "c4":
        np.testing.assert_allclose(np.rot90(out, 1, axes=(1, 2)), out, atol=1e-5)
    else:  # d2: 2-folds along z, x (and y)
        np.testing.assert_allclose(out[:, ::-1, ::-1], out, atol=1e-5)
        np.testing.assert_allclose(out[::-1, ::-1, :], out, atol=1e-5)
    np.testing.assert_allclose(symmetrize_volume(out, symmetry), out, atol=1e-5)
    assert not np.allclose(out, volume, atol=0.1)


def test_symmetrize_c3_leaves_a_c3_phantom_and_is_idempotent():
    """Interpolated 120° turns: a smooth c3 map is (nearly) unchanged, in RELION's axes."""
    symmetric = atoms_phantom(32, 2.0, n_atoms=30, symmetry="c3", seed=2)
    asymmetric = atoms_phantom(32, 2.0, n_atoms=30, seed=2)
    scale = np.abs(symmetric).max()
    assert np.abs(symmetrize_volume(symmetric, "c3") - symmetric).max() < 0.03 * scale
    once = symmetrize_volume(asymmetric, "c3")
    assert np.abs(once - asymmetric).max() > 0.3 * np.abs(asymmetric).max()
    assert np.abs(symmetrize_volume(once, "c3") - once).max() < 0.03 * np.abs(once).max()


def test_flip_hand_twice_is_identity_and_inverts_a_chiral_phantom():
    for n in (16, 17):
        volume = _random_map(n, seed=n)
        np.testing.assert_array_equal(flip_hand(flip_hand(volume)), volume)
    # three blobs of different heights at +x, +y, +z: a right-handed frame (det > 0)
    n = 24
    c = n // 2
    volume = np.zeros((n, n, n), np.float32)
    volume[c, c, c + 6] = 1.0  # x
    volume[c, c + 6, c] = 2.0  # y
    volume[c + 6, c, c] = 3.0  # z

    def frame(v):
        rows = []
        for height in (1.0, 2.0, 3.0):
            z, y, x = np.argwhere(v == height)[0] - c
            rows.append((x, y, z))
        return np.linalg.det(np.array(rows, float))

    assert frame(volume) > 0
    flipped = flip_hand(volume)
    assert frame(flipped) < 0
    assert flipped[c, c, c + 6] == 1.0 and flipped[c - 6, c, c] == 3.0


def test_threshold_mask_is_a_dilated_raised_cosine_in_zero_one():
    n = 33
    c = n // 2
    volume = np.zeros((n, n, n), np.float32)
    volume[c, c, c] = 5.0
    mask = threshold_mask(volume, 1.0, dilation_px=4.0, edge_width_px=6.0)
    axis = np.arange(n) - c
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    distance = np.sqrt(x**2 + y**2 + z**2)
    t = np.clip((distance - 4.0) / 6.0, 0, 1)
    np.testing.assert_allclose(mask, (1 + np.cos(np.pi * t)) / 2, atol=1e-6)
    assert mask.min() >= 0 and mask.max() <= 1
    assert (mask[distance <= 4] == 1).all() and (mask[distance >= 10] == 0).all()
    with pytest.raises(ValueError, match="no voxel"):
        threshold_mask(volume, 6.0)


def test_normalize_whole_and_background():
    volume = 3.0 * _random_map(20, seed=3) + 7.0
    whole = normalize_volume(volume, "whole")
    assert abs(whole.mean()) < 1e-5 and abs(whole.std() - 1) < 1e-5
    volume[5:15, 5:15, 5:15] += 50.0  # a "particle" in the middle
    background = normalize_volume(volume, "background")
    outside = background[background_region(20)]
    assert abs(outside.mean()) < 1e-5 and abs(outside.std() - 1) < 1e-5
    # an affine map of the input: the particle keeps its contrast over the background std
    np.testing.assert_allclose(background[10, 10, 10] - background[0, 0, 0],
                               (volume[10, 10, 10] - volume[0, 0, 0]) / 3.0, rtol=0.05)


def test_lowpass_then_symmetrize_commute_for_a_grid_group():
    volume = _random_map(15, seed=4)
    a = lowpass_filter_a(symmetrize_volume(volume, "c4"), 6.0, 1.0)
    b = symmetrize_volume(lowpass_filter_a(volume, 6.0, 1.0), "c4")
    np.testing.assert_allclose(a, b, atol=1e-4)
