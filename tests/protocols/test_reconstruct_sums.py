"""The back-projection sums that ReconstructFourier's and ReconstructHighRes's insert steps
hand to their map steps: a memory-mappable .npy with a JSON sidecar, older .npz still read."""

from __future__ import annotations

import numpy as np
import pytest

from cryoweave.engine import ReconstructionAccumulator
from cryoweave.protocols._shared.reconstruct import load_accumulator, save_accumulator


def _accumulator(half):
    rng = np.random.default_rng(half)
    accumulator = ReconstructionAccumulator.empty(12, half=half)
    accumulator.insert(rng.standard_normal((7, 12, 12)).astype(np.float32),
                       np.broadcast_to(np.eye(3), (7, 3, 3)))
    return accumulator


@pytest.mark.parametrize("half", [1, 2, None])
def test_sums_round_trip_as_a_read_only_memory_map(tmp_path, half):
    accumulator = _accumulator(half)
    path = tmp_path / "extra" / "half_sums.npy"
    save_accumulator(path, accumulator)
    assert sorted(p.name for p in path.parent.iterdir()) == ["half_sums.npy",
                                                             "half_sums.npy.json"]
    template = ReconstructionAccumulator.empty(12)
    loaded = load_accumulator(path, template)
    assert not loaded.sums.flags.writeable  # mapped read-only, not copied
    np.testing.assert_array_equal(loaded.sums, accumulator.sums)
    assert (loaded.n_images, loaded.half) == (7, half)
    np.testing.assert_array_equal(loaded.reconstruct(), accumulator.reconstruct())


def test_sums_an_earlier_version_wrote_as_npz_are_still_read(tmp_path):
    """A run interrupted after its insert steps under an earlier version continues."""
    accumulator = _accumulator(2)
    np.savez(tmp_path / "half2_sums.npz", sums=accumulator.sums, n_images=7, half=2)
    loaded = load_accumulator(tmp_path / "half2_sums.npy", ReconstructionAccumulator.empty(12))
    np.testing.assert_array_equal(loaded.sums, accumulator.sums)
    assert (loaded.n_images, loaded.half) == (7, 2)
