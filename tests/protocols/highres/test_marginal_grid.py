"""The final maps' local grid is widened when the posterior fills it (protocols/highres/
_marginal.fitted_grid): measured on the `make validate` d7 case, the ±2-step grid kept every
pose of the median particle and cut its posterior."""

from __future__ import annotations

import numpy as np

from cryoweave.engine import Projector
from cryoweave.formats import read_volume
from cryoweave.protocols._shared.particle_arrays import arrays_from_frame
from cryoweave.protocols.highres._marginal import (
    ANGLE_STEPS,
    WIDER_ANGLE_STEPS,
    fitted_grid,
    local_grid,
    noise_power,
)
from cryoweave.store import ParticleSet
from refinement_data import simulated


def _particles(tmp_path):
    project, simulation, truth = simulated(tmp_path / "p", n=120, box=32, snr=2.0)
    particles = ParticleSet(project, simulation.outputs["particles"])
    arrays = arrays_from_frame(particles.to_frame(with_extra=False), particles.optics())
    n = len(arrays)
    poses = {"gray_scale": np.ones(n), "gray_offset": np.zeros(n), "magnification": np.ones(n)}
    halves = {1: np.arange(0, n, 2), 2: np.arange(1, n, 2)}
    return arrays, poses, halves, read_volume(truth)[0]


def test_the_grid_is_widened_only_when_the_posterior_fills_it(tmp_path):
    arrays, poses, halves, truth = _particles(tmp_path)
    r_max = 10.0
    narrow = local_grid(arrays.box_px, r_max)
    for volume, steps in ((truth, ANGLE_STEPS), (np.zeros_like(truth), WIDER_ANGLE_STEPS)):
        # the truth at SNR 2: a narrow posterior; a blank reference: a flat one
        projector = Projector.from_volume(np.asarray(volume, np.float32), r_max_px=r_max)
        projectors = {1: projector, 2: projector}
        inverse_sigma2 = noise_power(arrays, poses, halves, projectors, r_max)
        grid, kept = fitted_grid(arrays, poses, halves, projectors, r_max, inverse_sigma2)
        expected = local_grid(arrays.box_px, r_max, steps)
        assert np.allclose(grid.rotations, expected.rotations), (steps, kept)
        poses_narrow = len(narrow.rotations) * len(narrow.shifts_px)
        assert (kept < poses_narrow) if steps == ANGLE_STEPS else (kept == poses_narrow)
    assert len(expected.rotations) > len(narrow.rotations)  # ±3 steps: 123 rotations, not 33
