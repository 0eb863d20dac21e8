"""Weights of ReconstructHighRes."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine import euler_to_matrix
from cryoweave.protocols.highres._weights import (
    WeightOptions,
    angular_changes_deg,
    compute_weights,
    defocus_groups,
    percentiles,
)


def test_defocus_groups_have_equal_counts():
    groups = defocus_groups(np.random.default_rng(0).uniform(1e4, 3e4, 1000))
    assert np.bincount(groups).tolist() == [20] * 50


def test_percentile_weight_within_groups():
    score = np.array([0.1, 0.2, 0.3, 0.5, 0.4, 0.6])
    groups = np.array([0, 0, 0, 1, 1, 1])
    assert percentiles(score, groups).tolist() == [0.0, 0.5, 1.0, 0.5, 0.0, 1.0]
    rng = np.random.default_rng(1)
    out = compute_weights(rng.uniform(0, 1, 500), rng.uniform(1e4, 3e4, 500), WeightOptions())
    assert out["weight"].min() == pytest.approx(0.1) and out["weight"].max() == 1.0
    assert (np.bincount(out["defocus_group"]) == 10).all()  # 50 groups of 10


def test_angular_stability_uses_the_symmetry():
    a = euler_to_matrix(np.zeros(2), np.zeros(2), np.zeros(2))
    b = euler_to_matrix(np.array([0.0, 90.0]), np.zeros(2), np.zeros(2))
    changes = angular_changes_deg(a, b, "c4")  # 90° about z is a c4 operation
    assert changes == pytest.approx([0.0, 0.0], abs=1e-6)
    assert angular_changes_deg(a, b, "c1")[1] == pytest.approx(90.0)
    options = WeightOptions(cc_percentile=False, angular_stability=True)
    w = compute_weights(np.ones(2) * 0.5, np.ones(2), options,
                        angular_change_deg=np.array([0.0, 10.0]), angular_step_deg=10.0)
    assert w["weight"] == pytest.approx([1.0, np.exp(-0.5)])
