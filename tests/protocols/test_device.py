"""Every compute protocol honours the run's device (issue 12 §2).

Here (no GPU): the device reaches each compute step, which records it; the run log and
`cryoweave show` name it; the steps ask for a GPU exactly on a GPU run. Marked `gpu`: the same
runs on the CPU and on the GPU agree (maps within 1e-4 relative, refinement median angular
error within 0.1°). They need CuPy and a CUDA GPU and are skipped elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from cryoweave.engine import cupy_available
from cryoweave.formats import read_image, read_images, read_volume, write_mrc
from cryoweave.plugin import ItemBatch, PlanContext, registry
from cryoweave.store import MicrographSet, ParticleSet, VolumeSet
from cryoweave.store.schema import StepRow
from cryoweave.workflow import run_protocol
from refinement_data import pose_errors

# steps that compute (the rest only do bookkeeping: highres combine, finalize)
COMPUTE_STEPS = {
    "SimulateParticles": {"simulate"},
    "ReconstructFourier": {"insert/half1", "insert/half2", "finalize"},
    "Downsample": {"downsample"},
    "PreprocessMicrographs": {"preprocess/000001"},
}
HIGHRES_COMPUTE = ("/prepare", "/align/", "/insert/", "/evaluate", "iter00/")


def _run(project_dir: Path, name: str, params: dict, device: str):
    project, summary = run_protocol(project_dir, registry().get(name), params, workers=2,
                                    device=device)
    assert summary.status == "finished", summary.error
    return project, summary


def _particles(summary) -> dict:
    return {"run": summary.run_id, "output": "particles"}


def _all_protocols(folder: Path, device: str) -> dict:
    """One small run of every compute protocol on `device`; returns {name: (project, summary)}."""
    project_dir = folder / "project"
    runs = {}
    sim = {"phantom": True, "n_particles": 240, "box_px": 32, "pixel_size_a": 4.0, "snr": 0.5,
           "max_shift_a": 4.0, "seed": 3}
    runs["SimulateParticles"] = _run(project_dir, "SimulateParticles", sim, device)
    project, simulation = runs["SimulateParticles"]
    particles = _particles(simulation)
    runs["ReconstructFourier"] = _run(project_dir, "ReconstructFourier",
                                      {"particles": particles}, device)
    runs["Downsample"] = _run(project_dir, "Downsample", {"particles": particles, "box_px": 16},
                              device)
    truth = VolumeSet(project, simulation.outputs["truth"]).to_frame().iloc[0]["path"]
    _, start = _run(project_dir, "ImportVolume", {"path": truth}, "cpu")
    runs["ReconstructHighRes/global"] = _run(project_dir, "ReconstructHighRes", {
        "particles": particles, "initial_volumes": {"run": start.run_id, "output": "volume"},
        "alignment": "global", "iterations": 1, "multiresolution": False}, device)
    runs["ReconstructHighRes/local"] = _run(project_dir, "ReconstructHighRes", {
        "particles": particles, "alignment": "local", "iterations": 1,
        "multiresolution": False}, device)
    mics = folder / "mics"
    mics.mkdir()
    write_mrc(mics / "m0.mrc", np.random.default_rng(0).normal(50, 3, (120, 150)), 1.25)
    _, imported = _run(project_dir, "ImportMicrographs", {"pattern": str(mics / "*.mrc"),
                                                           "voltage_kv": 200}, "cpu")
    runs["_imported_micrographs"] = imported  # (not a compute run)
    runs["PreprocessMicrographs"] = _run(project_dir, "PreprocessMicrographs", {
        "micrographs": {"run": imported.run_id, "output": "micrographs"},
        "do_downsample": True, "downsample_factor": 2.0, "do_lowpass": True,
        "lowpass_cutoff": 0.3, "do_normalize": True}, device)
    return runs


def _steps(project, run_id: int) -> dict[str, StepRow]:
    with project.reader() as s:
        return {row.key: row for row in s.scalars(select(StepRow).where(
            StepRow.run_id == run_id))}


def _compute_keys(name: str, keys) -> set[str]:
    if name.startswith("ReconstructHighRes"):
        return {k for k in keys if any(part in k for part in HIGHRES_COMPUTE)}
    return COMPUTE_STEPS[name]


def _compute_runs(runs: dict) -> list:
    return [(name, run) for name, run in runs.items() if not name.startswith("_")]


@pytest.fixture(scope="module")
def cpu_runs(tmp_path_factory):
    return _all_protocols(tmp_path_factory.mktemp("cpu"), "cpu")


def test_every_compute_step_records_the_device_it_ran_on(cpu_runs):
    for name, (project, summary) in _compute_runs(cpu_runs):
        steps = _steps(project, summary.run_id)
        compute = _compute_keys(name, steps)
        assert compute <= set(steps), (name, sorted(steps))
        for key in compute:
            assert steps[key].status == "done"
            assert steps[key].result["device"] == "cpu", (name, key, steps[key].result)
            assert steps[key].resources["gpu"] is False, (name, key)
    highres = {k for name, (p, s) in _compute_runs(cpu_runs)
               if name.startswith("ReconstructHighRes")
               for k in _steps(p, s.run_id)}
    # global and local assignment, references, insertion, maps/FSC and the initial map
    for part in ("iter01/align/c000", "iter01/prepare", "iter01/insert/h1", "iter01/evaluate",
                 "iter00/reconstruct"):
        assert part in highres


def test_the_run_log_and_show_name_the_device(cpu_runs, run_cli):
    project, summary = cpu_runs["ReconstructFourier"]
    log = (project.root / project.get_run(summary.run_id).folder / "logs" / "run.log")
    text = log.read_text()
    for key in COMPUTE_STEPS["ReconstructFourier"]:
        assert f"step {key} runs on the CPU" in text
    shown = run_cli("show", str(summary.run_id), "--project", str(project.root),
                    COLUMNS="200")
    assert shown.returncode == 0, shown.stderr
    assert "device CPU: insert/half1, insert/half2, finalize" in shown.stdout
    assert "device GPU" not in shown.stdout


def test_cpu_results_are_the_engine_computation(cpu_runs):
    """With device cpu the conversions are no-ops: the downsampled stack is exactly the NumPy
    crop and the preprocessed micrograph exactly the NumPy chain (no copy, no cast)."""
    from cryoweave.engine import PreprocessSettings, fourier_crop, preprocess_micrographs

    project, simulation = cpu_runs["SimulateParticles"]
    source = ParticleSet(project, simulation.outputs["particles"]).to_frame()
    _, down = cpu_runs["Downsample"]
    out = ParticleSet(project, down.outputs["particles"]).to_frame()
    np.testing.assert_array_equal(read_images(out["image_path"].iloc[0]),
                                  fourier_crop(read_images(source["image_path"].iloc[0]), 16))
    _, pre = cpu_runs["PreprocessMicrographs"]
    frame = MicrographSet(project, pre.outputs["micrographs"]).to_frame()
    chosen = PreprocessSettings(do_downsample=True, downsample_factor=2.0, do_lowpass=True,
                                lowpass_cutoff=0.3, do_normalize=True)
    expected, _ = preprocess_micrographs(read_image(project.root.parent / "mics/m0.mrc")[0],
                                         chosen)
    np.testing.assert_array_equal(read_image(frame["path"].iloc[0])[0], expected)


@pytest.mark.parametrize(("device", "gpu"), [("cpu", False), ("gpu", True)])
def test_compute_steps_ask_for_a_gpu_on_a_gpu_run(cpu_runs, monkeypatch, tmp_path, device, gpu):
    """Planning only (no step runs): Resources(gpu=True) exactly when the run's device is gpu."""
    from cryoweave.protocols._shared import device as _device

    monkeypatch.setattr(_device, "resolve_device", lambda d: d)  # plan as if a GPU were there
    project, simulation = cpu_runs["SimulateParticles"]
    handle = ParticleSet(project, simulation.outputs["particles"])
    reference = {"run": simulation.run_id, "output": "particles"}
    protocols = {  # name: (params, inputs)
        "SimulateParticles": ({"phantom": True, "n_particles": 10, "box_px": 16,
                               "pixel_size_a": 4.0}, {}),
        "ReconstructFourier": ({"particles": reference}, {"particles": handle}),
        "Downsample": ({"particles": reference, "box_px": 16}, {"particles": handle}),
        "ReconstructHighRes": ({"particles": reference, "alignment": "local", "iterations": 1,
                                "multiresolution": False}, {"particles": handle}),
    }
    for name, (raw, inputs) in protocols.items():
        cls = registry().get(name)
        params = cls.Params.model_validate(raw)
        run_dir = tmp_path / name
        (run_dir / "extra").mkdir(parents=True)
        ctx = PlanContext(1000, run_dir, inputs, device, 1, project)
        plan = cls().plan(params, ctx)
        compute = [s for s in plan.steps if s.key in _compute_keys(name, [s.key])]
        assert compute, name
        for step in compute:
            assert step.resources.gpu is gpu, (name, step.key)
    # PreprocessMicrographs streams: its step is made per batch of micrographs
    mics_project, _ = cpu_runs["PreprocessMicrographs"]
    imported = cpu_runs["_imported_micrographs"]
    source = MicrographSet(mics_project, imported.outputs["micrographs"])
    params = registry().get("PreprocessMicrographs").Params.model_validate(
        {"micrographs": {"run": imported.run_id, "output": "micrographs"}, "do_invert": True})
    ctx = PlanContext(1001, tmp_path / "pre", {"micrographs": source}, device, 1, mics_project)
    plan = registry().get("PreprocessMicrographs")().plan(params, ctx)
    step = plan.streams[0].make_step(ItemBatch("micrographs", source.to_frame(),
                                               source.properties))
    assert step.resources.gpu is gpu


# ------------------------------------------------------------------------ on a GPU (skipped here)


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.gpu
@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA GPU")
def test_gpu_runs_match_the_cpu_runs(cpu_runs, tmp_path):
    gpu_runs = _all_protocols(tmp_path, "gpu")
    for name, (project, summary) in _compute_runs(gpu_runs):
        steps = _steps(project, summary.run_id)
        for key in _compute_keys(name, steps):
            assert steps[key].result["device"] == "gpu", (name, key)
            assert steps[key].resources["gpu"] is True, (name, key)
    cpu_project, _ = cpu_runs["SimulateParticles"]
    gpu_project, _ = gpu_runs["SimulateParticles"]

    def stack(runs, name, output="particles"):
        project, summary = runs[name]
        return read_images(ParticleSet(project, summary.outputs[output])
                           .to_frame()["image_path"].iloc[0])

    assert _relative(stack(gpu_runs, "SimulateParticles"),
                     stack(cpu_runs, "SimulateParticles")) <= 1e-4
    assert _relative(stack(gpu_runs, "Downsample"), stack(cpu_runs, "Downsample")) <= 1e-5
    for name in ("ReconstructFourier",):
        cpu_map = read_volume(VolumeSet(cpu_project, cpu_runs[name][1].outputs["volume"])
                              .to_frame().iloc[0]["path"])[0]
        gpu_map = read_volume(VolumeSet(gpu_project, gpu_runs[name][1].outputs["volume"])
                              .to_frame().iloc[0]["path"])[0]
        assert _relative(gpu_map, cpu_map) <= 1e-4
    cpu_mic = MicrographSet(cpu_project, cpu_runs["PreprocessMicrographs"][1]
                            .outputs["micrographs"]).to_frame()["path"].iloc[0]
    gpu_mic = MicrographSet(gpu_project, gpu_runs["PreprocessMicrographs"][1]
                            .outputs["micrographs"]).to_frame()["path"].iloc[0]
    assert _relative(read_image(gpu_mic)[0], read_image(cpu_mic)[0]) <= 1e-4
    for mode in ("global", "local"):
        name = f"ReconstructHighRes/{mode}"
        cpu_angles, _ = pose_errors(cpu_project, cpu_runs[name][1],
                                    cpu_runs["SimulateParticles"][1])
        gpu_angles, _ = pose_errors(gpu_project, gpu_runs[name][1],
                                    gpu_runs["SimulateParticles"][1])
        assert abs(np.median(gpu_angles) - np.median(cpu_angles)) <= 0.1, mode


def test_simulate_command_takes_the_device(run_cli, tmp_path):
    done = run_cli("simulate", "-o", "sim", "--phantom", "-n", "12", "--box", "16",
                   "--pixel-size", "4", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert read_images(tmp_path / "sim" / "particles.mrcs").shape == (12, 16, 16)
    if not cupy_available():
        refused = run_cli("simulate", "-o", "sim2", "--phantom", "-n", "12", "--box", "16",
                          "--pixel-size", "4", "--device", "gpu")
        assert refused.returncode != 0 and "CuPy or a CUDA GPU is missing" in refused.stderr
        assert not (tmp_path / "sim2" / "particles.mrcs").exists()
