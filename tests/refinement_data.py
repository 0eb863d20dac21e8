"""Shared data for refinement tests: simulated particles, starting maps, error measures."""

from __future__ import annotations

import numpy as np

from cryoweave.engine import euler_to_matrix, fsc, symmetry_aware_angular_distance
from cryoweave.formats import read_volume
from cryoweave.plugin import registry
from cryoweave.store import ParticleSet, VolumeSet
from cryoweave.workflow import run_protocol


def run(project_dir, name, params, workers=2):
    project, summary = run_protocol(project_dir, registry().get(name), params,
                                    workers=workers)
    assert summary.status == "finished", summary.error
    return project, summary


def simulated(project_dir, *, n=1200, box=48, pixel=3.0, snr=0.1, symmetry="c1", seed=1):
    project, simulation = run(project_dir, "SimulateParticles", {
        "phantom": True, "symmetry": symmetry, "n_particles": n, "box_px": box,
        "pixel_size_a": pixel, "snr": snr, "max_shift_a": 2 * pixel,
        "defocus_range_a": [10000, 30000], "seed": seed})
    truth = VolumeSet(project, simulation.outputs["truth"]).to_frame().iloc[0]["path"]
    return project, simulation, truth


def lowpassed_start(project_dir, truth_path, pixel, resolution_a=30.0):
    from cryoweave.engine import lowpass_filter_a
    from cryoweave.formats import write_mrc

    truth, _ = read_volume(truth_path)
    start = project_dir.parent / f"start_{resolution_a:.0f}A.mrc"
    write_mrc(start, lowpass_filter_a(truth, resolution_a, pixel), pixel)
    _, imported = run(project_dir, "ImportVolume", {"path": str(start)})
    return {"run": imported.run_id, "output": "volume"}


def resolution_vs_truth(map_path, truth_path, threshold=0.5):
    volume, pixel = read_volume(map_path)
    truth, _ = read_volume(truth_path)
    return fsc(volume, truth, pixel_size_a=pixel).resolution_a(threshold)


def pose_errors(project, refined, simulation, symmetry="c1"):
    ours = ParticleSet(project, refined.outputs["particles"]).to_frame().set_index("item_id")
    truth = ParticleSet(project, simulation.outputs["particles"]).to_frame() \
        .set_index("item_id").loc[ours.index]
    a = euler_to_matrix(ours["rot_deg"], ours["tilt_deg"], ours["psi_deg"])
    b = euler_to_matrix(truth["rot_deg"], truth["tilt_deg"], truth["psi_deg"])
    angles = symmetry_aware_angular_distance(a, b, symmetry)
    pixel = ParticleSet(project, simulation.outputs["particles"]).properties["pixel_size_a"]
    shifts = np.hypot(ours["shift_x_a"] - truth["shift_x_a"],
                      ours["shift_y_a"] - truth["shift_y_a"]) / pixel
    return np.asarray(angles), np.asarray(shifts)
