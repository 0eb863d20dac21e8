"""``cryoweave demo``: a project from synthetic data, run through the built-in protocols.

1. micrographs appear in a folder one by one (a simulated acquisition) while a streaming
   ImportMicrographs and PreprocessMicrographs run at the same time; a contact sheet is written;
2. particles (STAR + stack) and a map are imported, the particles downsampled;
3. particles are simulated from the built-in phantom (known poses) and reconstructed: the
   resolution and the FSC plot are printed;
4. the simulated particles are downsampled and refined (ReconstructHighRes) from the truth
   low-passed to 30 Å (ProcessVolume);
   the resolution of each iteration is printed.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cryoweave.demo.synthetic import blob_volume, write_micrographs, write_particles
from cryoweave.errors import CryoweaveError
from cryoweave.formats import write_mrc
from cryoweave.plugin import registry
from cryoweave.store import Project, set_handle
from cryoweave.viewers import view_set
from cryoweave.workflow import Runner, RunSummary, WorkflowEntry, prepare_workflow, run_protocol

MARKER = ".cryoweave-demo"


def _fresh_folder(root: Path) -> None:
    if root.exists():
        if not (root / MARKER).exists():
            raise CryoweaveError(f"{root} exists and was not made by `cryoweave demo`; "
                                 "choose another --project folder")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("made by cryoweave demo; deleted by the next demo run\n")


def _acquire(source: Path, target: Path, interval_s: float) -> None:
    """Move finished micrographs into the watched folder one by one, like a detector."""
    for path in sorted(source.glob("*.mrc")):
        time.sleep(interval_s)
        path.rename(target / path.name)


def streaming_stage(root: Path, data: Path, *, n_mics: int, shape: tuple[int, int],
                    rng: np.random.Generator, console: Console) -> list[RunSummary]:
    staging, watched = data / "staging", data / "micrographs"
    staging.mkdir(parents=True)
    watched.mkdir()
    write_micrographs(staging, n_mics, shape, 1.0, rng)
    entries = [
        WorkflowEntry("import-mics", "ImportMicrographs", {
            "pattern": str(watched / "*.mrc"), "streaming": True, "pixel_size_a": 1.0,
            "voltage_kv": 300, "cs_mm": 2.7, "amplitude_contrast": 0.1, "timeout_s": 2.0,
            "file_settle_s": 0.2, "batch_size": 2}),
        WorkflowEntry("preprocess", "PreprocessMicrographs", {
            "micrographs": {"run": "import-mics", "output": "micrographs"},
            "do_remove_bad_pixels": True, "do_downsample": True, "downsample_factor": 2.0,
            "do_highpass": True, "highpass_cutoff": 0.01, "highpass_width": 0.005,
            "do_normalize": True, "batch_size": 2}),
    ]
    project, run_ids = prepare_workflow(root, entries)
    console.print(f"acquisition: {n_mics} micrographs arrive in {watched} while runs "
                  f"{run_ids} import and preprocess them (streaming)")
    acquisition = threading.Thread(target=_acquire, args=(staging, watched, 0.3))
    summaries: dict[int, RunSummary] = {}

    def execute(run_id: int) -> None:
        with Project.open(root) as own:
            summaries[run_id] = Runner(own, run_id, threads=1).execute()

    threads = [threading.Thread(target=execute, args=(rid,)) for rid in run_ids]
    acquisition.start()
    for thread in threads:
        thread.start()
    for thread in [acquisition, *threads]:
        thread.join()
    preprocessed = set_handle(project, summaries[run_ids[1]].outputs["micrographs"])
    run = project.get_run(run_ids[1])
    sheet = next(p for p in view_set(preprocessed, project.root / run.folder / "extra" / "view")
                 if p.name.endswith("_contact_sheet.png"))
    console.print(f"contact sheet of the preprocessed micrographs: {sheet}")
    project.close()
    return [summaries[rid] for rid in run_ids]


def run_demo(root: Path, *, console: Console, quick: bool = False, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    _fresh_folder(root)
    data = root / "Data"
    n_mics, mic_shape = (4, (512, 512)) if quick else (8, (1024, 1024))
    n_particles = 200 if quick else 1000
    console.print(f"[bold]cryoweave demo[/bold] in {root.resolve()}")
    summaries = streaming_stage(root, data, n_mics=n_mics, shape=mic_shape, rng=rng,
                                console=console)
    star = write_particles(data, n_particles, 64, 2.0, rng)
    write_mrc(data / "phantom.mrc", blob_volume(64, rng), 2.0)
    console.print(f"synthetic particles: {n_particles} × 64² with a RELION 3.1 STAR; a 64³ map")
    jobs = [
        ("ImportParticles", {"path": str(star)}, "import-particles"),
        ("ImportVolume", {"path": str(data / "phantom.mrc")}, "import-volume"),
        ("Downsample", {"particles": {"run": "import-particles", "output": "particles"},
                        "box_px": 32}, "downsample"),
    ]
    for name, params, label in jobs:
        project, summary = run_protocol(root, registry().get(name), params, label=label)
        project.close()
        summaries.append(summary)
    summaries += reconstruction_stage(root, console=console, quick=quick)
    _summary_table(root, summaries, console)
    console.print(f"inspect with: cryoweave runs --project {root}")


def reconstruction_stage(root: Path, *, console: Console, quick: bool) -> list[RunSummary]:
    """Simulate, reconstruct from the true poses, then refine from a low-passed start."""
    from cryoweave.store import RecordSet

    n = 600 if quick else 2000
    done: list[RunSummary] = []

    def step(name: str, params: dict, label: str) -> RunSummary:
        project, summary = run_protocol(root, registry().get(name), params, label=label,
                                        workers=2)
        project.close()
        if summary.status != "finished":
            raise CryoweaveError(f"demo run {summary.run_id} ({name}) {summary.status}: "
                                 f"{summary.error}")
        done.append(summary)
        return summary

    step("SimulateParticles", {
        "phantom": True, "n_particles": n, "box_px": 64, "pixel_size_a": 2.0, "snr": 0.1,
        "max_shift_a": 4.0, "seed": 1}, "simulate")
    particles = {"run": "simulate", "output": "particles"}
    reconstruction = step("ReconstructFourier", {"particles": particles}, "reconstruct")
    with Project.open(root) as project:
        record = RecordSet(project, reconstruction.outputs["fsc"]).to_frame()["data"].iloc[0]
    console.print(f"reconstruction from the true poses of {n} simulated particles: "
                  f"{record['resolutions_a']['fsc0143_interpolated']:.2f} Å at FSC 0.143 "
                  f"(FSC plot: {record['files']['fsc_png']})")
    step("ProcessVolume", {"volume": {"run": "simulate", "output": "truth"},
                           "lowpass_resolution_a": 30.0}, "start-map")
    step("Downsample", {"particles": particles, "box_px": 48}, "downsample-sim")
    refinement = step("ReconstructHighRes", {
        "particles": {"run": "downsample-sim", "output": "particles"},
        "initial_volumes": {"run": "start-map", "output": "volume"},
        "alignment": "automatic", "iterations": 2 if quick else 4,
        "max_target_resolution_a": "10 6"}, "refine")
    with Project.open(root) as project:
        records = RecordSet(project, refinement.outputs["fsc"]).to_frame()["data"]
        run = project.get_run(refinement.run_id)
        for record in records:
            console.print(f"  refinement iteration {record['iteration']} ({record['alignment']},"
                          f" {record['box_px']} px, step {record['angular_step_deg']:.1f}°): "
                          f"{record['resolution_a']:.2f} Å at FSC "
                          f"{record['resolution_criterion']}, {record['resolution_0143_a']:.2f}"
                          f" Å at 0.143")
        console.print(f"refined map and pictures: {project.root / run.folder / 'extra'}")
    return done


def _summary_table(root: Path, summaries: list[RunSummary], console: Console) -> None:
    table = Table("run", "protocol", "status", "output", "items", "pixel size (Å)", "seconds")
    with Project.open(root) as project:
        for summary in summaries:
            name = project.get_run(summary.run_id).protocol.split(":")[-1]
            if summary.status != "finished":
                raise CryoweaveError(f"demo run {summary.run_id} ({name}) {summary.status}: "
                                     f"{summary.error}")
            for output, set_id in summary.outputs.items():
                handle = set_handle(project, set_id)
                pixel = handle.properties.get("pixel_size_a")
                table.add_row(str(summary.run_id), name, summary.status, output,
                              str(handle.count()), f"{pixel:.3f}" if pixel else "",
                              f"{summary.seconds:.2f}")
    console.print(table)
