"""ReconstructHighRes on simulated data with known truth (the CI-sized version of the spec's
acceptance test; `make validate` runs the full one)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryoweave.errors import ParamError
from cryoweave.formats import read_volume
from cryoweave.plugin import registry
from cryoweave.store import ParticleSet, RecordSet, VolumeSet
from cryoweave.workflow import Runner
from refinement_data import lowpassed_start, pose_errors, resolution_vs_truth, run, simulated


def test_global_then_local_recovers_the_truth(tmp_path):
    project_dir = tmp_path / "p"
    project, simulation, truth = simulated(project_dir)
    start = lowpassed_start(project_dir, truth, 3.0)
    particles = {"run": simulation.run_id, "output": "particles"}
    _, true_poses = run(project_dir, "ReconstructFourier", {"particles": particles})
    best_map = VolumeSet(project, true_poses.outputs["volume"]).to_frame().iloc[0]["path"]
    _, refined = run(project_dir, "ReconstructHighRes", {
        "particles": particles, "initial_volumes": start, "alignment": "automatic",
        "iterations": 4, "max_target_resolution_a": "12 9"})
    records = [r for r in RecordSet(project, refined.outputs["fsc"]).to_frame()["data"]]
    assert [r["alignment"] for r in records] == ["global"] * 3 + ["local"]
    # a phantom is a non-negative density: its references get positivity
    assert all(r["reference_positivity"][h]["applied"] for r in records for h in ("h1", "h2"))
    final = VolumeSet(project, refined.outputs["volume"]).to_frame().iloc[0]
    assert read_volume(final["path"])[0].shape == (48, 48, 48)  # back at the original grid
    ours = resolution_vs_truth(final["path"], truth)
    best = resolution_vs_truth(best_map, truth)
    assert ours <= 1.15 * best, (ours, best)
    angles, shifts = pose_errors(project, refined, simulation)
    final_step = records[-2]["angular_step_deg"]  # the last global step
    assert np.median(angles) < 2 * final_step, (np.median(angles), final_step)
    assert np.median(shifts) < 1.0
    extra = project.root / project.get_run(refined.run_id).folder / "extra"
    for name in ("fsc_iterations.png", "resolution_iterations.png", "angular_distribution.png",
                 "final_slices.png", "final_map_filtered.mrc"):
        assert (extra / name).exists()
    final_record = json.loads((extra / "final_fsc.json").read_text())
    assert final_record["final_reconstruction"] == "marginal"  # the default
    assert 1 < final_record["marginal_kept_median"] <= final_record["marginal_poses"]


def test_alignment_none_reconstructs_from_the_poses_and_resumes(tmp_path):
    project_dir = tmp_path / "p"
    project, simulation, _truth = simulated(project_dir, n=600, box=40, snr=0.5)
    particles = {"run": simulation.run_id, "output": "particles"}
    _, refined = run(project_dir, "ReconstructHighRes",
                     {"particles": particles, "alignment": "none", "multiresolution": False})
    record = RecordSet(project, refined.outputs["fsc"]).to_frame()["data"].iloc[0]
    assert record["particles_used"] == 600 and record["box_px"] == 40
    again = Runner(project, refined.run_id).execute(resume=True)
    assert again.status == "finished" and again.steps_run == 0


def test_validation_messages(tmp_path):
    project_dir = tmp_path / "p"
    _project, simulation, _ = simulated(project_dir, n=20, box=24)
    particles = {"run": simulation.run_id, "output": "particles"}
    with pytest.raises(ParamError) as info:
        run(project_dir, "ReconstructHighRes", {"particles": particles, "symmetry": "z3",
                                                "max_target_resolution_a": "8 x",
                                                "min_tilt_deg": 100, "max_tilt_deg": 90})
    text = str(info.value)
    assert "symmetry 'z3'" in text and "max_target_resolution_a" in text
    with pytest.raises(ParamError, match="continue_from: there is no run 'nope'"):
        run(project_dir, "ReconstructHighRes", {"continue_from": "nope"})
    with pytest.raises(ParamError, match="continue_from: there is no run 1180591620717411303424"):
        run(project_dir, "ReconstructHighRes", {"continue_from": 2**70})  # beyond SQLite's
    with pytest.raises(ParamError, match="give particles, or continue_from"):
        run(project_dir, "ReconstructHighRes", {})
    with pytest.raises(ParamError, match=r"initial_resolution_a=4.0 Å is beyond Nyquist "
                                         r"of the particles \(6 Å\)"):
        run(project_dir, "ReconstructHighRes", {"particles": particles,
                                                "initial_resolution_a": 4})
    with pytest.raises(ParamError, match="initial_resolution_a applies to initial volumes"):
        run(project_dir, "ReconstructHighRes", {"continue_from": 1,
                                                "initial_resolution_a": 30})


def test_local_defocus_gray_and_scale_refinement(tmp_path):
    """Particles whose defocus is off by 150 Å, whose contrast varies and which are magnified
    by known factors: the local options recover all three (noiseless data)."""
    from cryoweave.formats import read_images, write_mrc
    from cryoweave.protocols.highres._local_extras import magnify
    from cryoweave.workflow import run_protocol as submit

    project_dir = tmp_path / "p"
    project, simulation, truth = simulated(project_dir, n=300, box=40, snr=None, pixel=2.0)
    frame = ParticleSet(project, simulation.outputs["particles"]).to_frame()
    stack = frame["image_path"].iloc[0]
    rng = np.random.default_rng(9)
    contrast = rng.uniform(0.8, 1.25, len(frame))
    magnification = rng.uniform(0.985, 1.015, len(frame))
    images = magnify(read_images(stack), magnification)
    write_mrc(tmp_path / "scaled.mrcs", images * contrast[:, None, None].astype(np.float32),
              2.0, volume=False)
    from cryoweave.formats import ParticleTable, write_particles_star

    frame["image_path"] = str(tmp_path / "scaled.mrcs")
    frame["defocus_u_a"] += 150.0
    frame["defocus_v_a"] += 150.0
    optics = ParticleSet(project, simulation.outputs["particles"]).optics()
    write_particles_star(ParticleTable(frame.drop(columns=["item_id"]), optics),
                         tmp_path / "off.star")
    _, imported = submit(project_dir, registry().get("ImportParticles"),
                         {"path": str(tmp_path / "off.star")})
    start = lowpassed_start(project_dir, truth, 2.0, resolution_a=8.0)
    _, refined = run(project_dir, "ReconstructHighRes", {
        "particles": {"run": imported.run_id, "output": "particles"},
        "initial_volumes": start, "alignment": "local", "iterations": 1,
        "local_defocus": True, "local_gray": True, "local_scale": True,
        "multiresolution": False, "max_target_resolution_a": "4"})
    out = ParticleSet(project, refined.outputs["particles"]).to_frame().set_index("item_id")
    change = out["defocus_change_a"].to_numpy()
    assert np.median(np.abs(change + 150.0)) < 40  # the 150 Å error is found
    gray = out["gray_scale"].to_numpy()
    expected = contrast[out.index - 1] / np.median(contrast[out.index - 1])
    assert np.corrcoef(gray, expected)[0, 1] > 0.9
    found = out["magnification"].to_numpy()
    assert np.corrcoef(found, magnification[out.index - 1])[0, 1] > 0.9
    assert np.median(np.abs(found - magnification[out.index - 1])) < 0.004


def test_initial_resolution_lowpasses_the_start_and_starts_the_schedule(tmp_path):
    """initial_resolution_a (RELION's --ini_high): iteration 1's schedule starts from it and
    its references carry no power beyond it, though the start map is the unfiltered truth."""
    import json

    project_dir = tmp_path / "p"
    project, simulation, truth = simulated(project_dir, n=60, box=32, pixel=3.0)
    particles = {"run": simulation.run_id, "output": "particles"}
    _, refined = run(project_dir, "ReconstructHighRes", {
        "particles": particles, "initial_volumes": truth, "iterations": 1,
        "initial_resolution_a": 24.0, "max_target_resolution_a": "12",
        "next_spherical_mask": False, "next_positivity": False})
    folder = project.root / project.get_run(refined.run_id).folder / "extra" / "iter_01"
    schedule = json.loads((folder / "schedule.json").read_text())
    assert schedule["previous_resolution_a"] == 24.0
    assert schedule["target_resolution_a"] == 12.0  # max(0.5·24, 12)
    reference, pixel = read_volume(folder / "ref_h1.mrc")
    n = reference.shape[0]
    spectrum = np.abs(np.fft.rfftn(reference))
    kz, kx = np.fft.fftfreq(n) * n, np.fft.rfftfreq(n) * n
    radius = np.sqrt(kz[:, None, None] ** 2 + kz[None, :, None] ** 2 + kx[None, None, :] ** 2)
    cutoff = n * pixel / 24.0
    assert spectrum[radius >= cutoff + 1].max() < 1e-5 * spectrum.max()
    assert spectrum[(radius > 1) & (radius < cutoff - 1)].max() > 1e-2 * spectrum.max()


def test_a_low_passed_start_sets_the_first_schedule(tmp_path):
    """A ReconstructFourier map low-passed at 20 Å says 20 Å (not Nyquist): the first
    schedule starts from 20 Å, not from the 4·Ts0 = 12 Å the map does not reach (the truth
    says so), and the iteration's record says what bounds its resolution."""
    project_dir = tmp_path / "p"
    project, simulation, truth = simulated(project_dir, n=600, box=40, snr=0.5)
    particles = {"run": simulation.run_id, "output": "particles"}
    _, start = run(project_dir, "ReconstructFourier",
                   {"particles": particles, "max_resolution_a": 20.0})
    start_map = VolumeSet(project, start.outputs["volume"]).to_frame().iloc[0]["path"]
    volume, pixel = read_volume(start_map)
    from cryoweave.engine import fsc

    vs_truth = fsc(volume, read_volume(truth)[0], pixel_size_a=pixel)
    assert vs_truth.values[np.searchsorted(vs_truth.frequency_per_a, 1 / 12.0)] < 0.5
    _, refined = run(project_dir, "ReconstructHighRes", {
        "particles": particles, "alignment": "none", "multiresolution": False,
        "initial_volumes": {"run": start.run_id, "output": "volume"}})
    record = RecordSet(project, refined.outputs["fsc"]).to_frame()["data"].iloc[0]
    assert record["previous_resolution_a"] == pytest.approx(20.0)
    assert set(record["resolution_limited_by"]) == {"criterion", "fsc0143"}
    assert record["resolution_limited_by"]["fsc0143"] in (None, "nyquist")


def test_the_final_map_at_the_true_poses_is_the_true_pose_map(tmp_path):
    """Poses held at the truth (local iteration, angles and shifts fixed, so scores and CC
    percentile weights are computed): the final map must be as close to the truth as
    ReconstructFourier's true-pose map. It was ~2 % worse: the weights spread the (equally
    good) particles over [0.1, 1]; now the final map is made on the original grid with unit
    weights, as the true-pose map is."""
    project_dir = tmp_path / "p"
    project, simulation, truth = simulated(project_dir, n=1500, box=40, snr=0.05)
    particles = {"run": simulation.run_id, "output": "particles"}
    _, true_poses = run(project_dir, "ReconstructFourier", {"particles": particles})
    best_map = VolumeSet(project, true_poses.outputs["volume"]).to_frame().iloc[0]["path"]
    _, refined = run(project_dir, "ReconstructHighRes", {
        "particles": particles, "alignment": "local", "iterations": 1,
        "local_angles": False, "local_shifts": False})
    final = VolumeSet(project, refined.outputs["volume"]).to_frame().iloc[0]
    weights = ParticleSet(project, refined.outputs["particles"]).to_frame()["weight"]
    assert weights.min() < 0.2 and weights.max() == pytest.approx(1.0)  # weights were made
    ours, best = resolution_vs_truth(final["path"], truth), resolution_vs_truth(best_map, truth)
    assert ours == pytest.approx(best, rel=1e-3), (ours, best)
    extra = project.root / project.get_run(refined.run_id).folder / "extra"
    record = json.loads((extra / "final_fsc.json").read_text())
    assert record["final_reconstruction"] == "best_pose"  # the poses were held: not marginal


def test_an_odd_box_keeps_its_centre_on_the_working_grid(tmp_path):
    """A Fourier crop keeps index 0 fixed: from an odd box (41 px) the particle centre lands
    half a pixel off the working box's centre (index n//2), in the images and in the
    reference. Local refinement from the true poses against the truth then moved every shift
    by about that much. The shifts must stay at the truth (the crop's centre offset is put
    into the working origins and references, and taken out of the refined shifts)."""
    project_dir = tmp_path / "p"
    project, simulation, truth = simulated(project_dir, n=400, box=41, snr=1.0)
    start = lowpassed_start(project_dir, truth, 3.0, 8.0)
    particles = {"run": simulation.run_id, "output": "particles"}
    _, refined = run(project_dir, "ReconstructHighRes", {
        "particles": particles, "initial_volumes": start, "alignment": "local",
        "iterations": 1, "max_target_resolution_a": "15"})
    record = RecordSet(project, refined.outputs["fsc"]).to_frame()["data"].iloc[0]
    assert record["box_px"] % 2 == 0 and record["box_px"] < 41  # an even working grid
    angles, shifts = pose_errors(project, refined, simulation)
    assert np.median(shifts) < 0.25, np.median(shifts)  # (was ~0.6 px)
    assert np.median(angles) < 2.0, np.median(angles)
