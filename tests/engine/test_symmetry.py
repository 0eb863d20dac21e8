"""Point groups in RELION's orientation: orders, closure, axes, asymmetric unit, distances."""

from __future__ import annotations

import time

import numpy as np
import pytest

from cryoweave.engine import to_host
from cryoweave.engine._geometry import euler_to_matrix, rotation_angle_deg
from cryoweave.engine._symmetry import (
    MAX_AXIAL_ORDER,
    in_asymmetric_unit,
    normalize_symmetry_name,
    symmetry_aware_angular_distance,
    symmetry_expand,
    symmetry_matrices,
    symmetry_order,
)

ORDERS = {"c1": 1, "c2": 2, "c7": 7, "d2": 4, "d7": 14, "t": 12, "o": 24, "i": 60, "i1": 60,
          "i2": 60, "i3": 60, "i4": 60}


def _contains(group: np.ndarray, matrix: np.ndarray) -> bool:
    return bool(np.any(np.abs(group - matrix).max(axis=(1, 2)) < 1e-9))


def _rotation(axis, degrees):
    u = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -u[2], u[1]], [u[2], 0, -u[0]], [-u[1], u[0], 0]])
    t = np.deg2rad(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


@pytest.mark.parametrize(("name", "order"), ORDERS.items())
def test_order_and_closure(name, order):
    group = symmetry_matrices(name.upper())
    assert group.shape == (order, 3, 3) and symmetry_order(name) == order
    np.testing.assert_allclose(group[0], np.eye(3))
    np.testing.assert_allclose(group @ group.transpose(0, 2, 1), np.broadcast_to(np.eye(3),
                               group.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(group), 1.0)
    for a in group:  # every product is in the group, so is every inverse
        products = a[None] @ group
        assert all(_contains(group, p) for p in products)
        assert _contains(group, a.T)
    for i in range(order):  # no duplicates
        assert sum(np.abs(group - group[i]).max(axis=(1, 2)) < 1e-9) == 1


def test_axes_in_relion_orientation():
    assert _contains(symmetry_matrices("c7"), _rotation([0, 0, 1], 360 / 7))
    d7 = symmetry_matrices("d7")
    assert _contains(d7, _rotation([1, 0, 0], 180)) and not _contains(d7, _rotation([0, 1, 0], 180))
    t = symmetry_matrices("t")
    assert _contains(t, _rotation([0, 0, 1], 120))
    assert _contains(t, _rotation([0, np.sqrt(2 / 3), np.sqrt(1 / 3)], 180))
    o = symmetry_matrices("o")
    assert all(_contains(o, _rotation(axis, 90)) for axis in np.eye(3))
    golden = (1 + np.sqrt(5)) / 2
    for name, five_fold in [("i1", [golden, 0, 1]), ("i2", [1, 0, golden])]:
        group = symmetry_matrices(name)
        assert all(_contains(group, _rotation(axis, 180)) for axis in np.eye(3))
        assert _contains(group, _rotation(five_fold, 72))
    for name, five_fold in [("i3", [2, 0, -1]), ("i4", [2, 0, 1])]:
        group = symmetry_matrices(name)
        assert _contains(group, _rotation([0, 0, 1], 72))
        assert _contains(group, _rotation([0, 1, 0], 180))
        assert _contains(group, _rotation(five_fold, 72))
    np.testing.assert_array_equal(symmetry_matrices("i"), symmetry_matrices("i2"))


@pytest.mark.parametrize("bad", ["c0", "x3", "d", "i5", "", " c2", "c2 ", "c+2", "c2.0", "c02",
                                 "c٣", "d-1", "c2v", "ci", "oh", 7, None])
def test_unknown_group_raises(bad):
    with pytest.raises(ValueError, match="not a supported point group"):
        normalize_symmetry_name(bad)


@pytest.mark.parametrize("bad", ["c101", "d101", "c20000", "C999999999999999999999999999999",
                                 "d" + "9" * 5000])
def test_orders_above_the_limit_are_refused_naming_it(bad):
    with pytest.raises(ValueError, match=f"above the limit of {MAX_AXIAL_ORDER} for c<n>") \
            as info:
        normalize_symmetry_name(bad)
    assert str(info.value).startswith(f"symmetry {repr(bad)[:40]}")
    assert len(str(info.value)) < 200  # a 5,000-digit value is not echoed whole


def test_largest_allowed_groups_are_built_quickly():
    assert MAX_AXIAL_ORDER == 100
    start = time.perf_counter()
    c100, d100 = symmetry_matrices("c100"), symmetry_matrices("D100")
    assert time.perf_counter() - start < 1.0  # 4 s for c2000 when membership was linear
    assert c100.shape == (100, 3, 3) and d100.shape == (200, 3, 3)
    rotations = np.rad2deg(np.arctan2(c100[:, 1, 0], c100[:, 0, 0])) % 360
    np.testing.assert_allclose(np.sort(rotations), 3.6 * np.arange(100), atol=1e-9)
    for i in (1, 57, 199):  # closed and no duplicates
        products = d100[i][None] @ d100
        assert all(_contains(d100, p) for p in products)
        assert sum(np.abs(d100 - d100[i]).max(axis=(1, 2)) < 1e-9) == 1


def _random_directions(n, seed=0):
    d = np.random.default_rng(seed).standard_normal((n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


@pytest.mark.parametrize("name", ["c1", "c5", "d4", "t", "o", "i1", "i3"])
def test_asymmetric_unit_tiles_the_sphere_once(xp, name):
    directions = _random_directions(4000)
    group = symmetry_matrices(name)
    images = np.einsum("kij,nj->nki", group, directions)  # R d for every R
    inside = to_host(in_asymmetric_unit(xp.asarray(images.reshape(-1, 3)), name))
    counts = inside.reshape(len(directions), len(group)).sum(axis=1)
    np.testing.assert_array_equal(counts, 1)  # each orbit meets the unit exactly once


def test_asymmetric_unit_matches_relion_ranges_for_c_and_d():
    directions = _random_directions(3000, seed=1)
    rot = np.rad2deg(np.arctan2(directions[:, 1], directions[:, 0])) % 360
    np.testing.assert_array_equal(in_asymmetric_unit(directions, "c4"), rot <= 90)
    np.testing.assert_array_equal(in_asymmetric_unit(directions, "d4"),
                                  (rot <= 90) & (directions[:, 2] >= 0))


def test_symmetry_aware_distance(xp):
    rng = np.random.default_rng(2)
    a = euler_to_matrix(*rng.uniform(0, 360, (3, 30)))
    group = symmetry_matrices("d7")
    equivalent = symmetry_expand(a, "d7")  # A·Rᵀ
    assert equivalent.shape == (30, 14, 3, 3)
    distance = symmetry_aware_angular_distance(xp.asarray(a[:, None]), xp.asarray(equivalent),
                                               "d7")
    np.testing.assert_allclose(to_host(distance), 0.0, atol=1e-5)
    plain = symmetry_aware_angular_distance(a[:, None], equivalent, "c1")
    np.testing.assert_allclose(plain, np.broadcast_to(rotation_angle_deg(group, np.eye(3)),
                                                      (30, 14)), atol=1e-5)
    b = euler_to_matrix(*rng.uniform(0, 360, (3, 30)))
    d_sym = symmetry_aware_angular_distance(a, b, "d7")
    assert np.all(d_sym <= rotation_angle_deg(a, b) + 1e-9)
    assert d_sym.mean() < rotation_angle_deg(a, b).mean()


@pytest.mark.real_data
def test_relion_d4_star_orientations(real_data_dir):
    import starfile

    table = starfile.read(real_data_dir / "aspire" / "sample_relion_symmetry_group_D4.star")
    table = table if not isinstance(table, dict) else next(iter(table.values()))
    a = euler_to_matrix(*(table[f"rlnAngle{k}"].to_numpy() for k in ("Rot", "Tilt", "Psi")))
    assert set(table["rlnSymmetryGroup"]) == {"D4"}
    expanded = symmetry_expand(a, "D4")
    np.testing.assert_allclose(symmetry_aware_angular_distance(a[:, None], expanded, "D4"), 0.0,
                               atol=1e-5)
    # the D4 equivalents of one particle are 8 distinct orientations, ≥ 90° apart pairwise
    spread = rotation_angle_deg(expanded[:, :, None], expanded[:, None, :])
    off_diagonal = spread[:, ~np.eye(8, dtype=bool)]
    assert off_diagonal.min() > 90.0 - 1e-6
