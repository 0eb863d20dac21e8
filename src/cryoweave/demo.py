"""``cryoweave demo``: a project with synthetic data, imported and summarised."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from cryoweave.errors import CryoweaveError
from cryoweave.formats import write_mrc
from cryoweave.plugin import registry
from cryoweave.synthetic import blob_volume, write_micrographs, write_particles
from cryoweave.workflow import set_handle
from cryoweave.workflow._submit import run_protocol

MARKER = ".cryoweave-demo"


def _fresh_folder(root: Path) -> None:
    if root.exists():
        if not (root / MARKER).exists():
            raise CryoweaveError(f"{root} exists and was not made by `cryoweave demo`; "
                                 "choose another --project folder")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / MARKER).write_text("made by cryoweave demo; deleted by the next demo run\n")


def run_demo(root: Path, *, console: Console, quick: bool = False, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    _fresh_folder(root)
    data = root / "Data"
    (data / "micrographs").mkdir(parents=True)
    n_mics, mic_shape = (4, (512, 512)) if quick else (8, (1024, 1024))
    n_particles = 200 if quick else 1000
    console.print(f"[bold]cryoweave demo[/bold] in {root.resolve()}")
    write_micrographs(data / "micrographs", n_mics, mic_shape, 1.0, rng)
    star = write_particles(data, n_particles, 64, 2.0, rng)
    write_mrc(data / "phantom.mrc", blob_volume(64, rng), 2.0)
    console.print(f"synthetic data: {n_mics} micrographs {mic_shape[1]}×{mic_shape[0]}, "
                  f"{n_particles} particles 64², a 64³ map")

    jobs = [
        ("ImportMicrographs", {"pattern": str(data / "micrographs" / "*.mrc"),
                               "voltage_kv": 300, "cs_mm": 2.7, "amplitude_contrast": 0.1},
         "import-mics"),
        ("ImportParticles", {"path": str(star)}, "import-particles"),
        ("ImportVolume", {"path": str(data / "phantom.mrc")}, "import-volume"),
        ("Downsample", {"particles": {"run": "import-particles", "output": "particles"},
                        "box_px": 32}, "downsample"),
    ]
    table = Table("run", "protocol", "status", "output", "items", "pixel size (Å)", "seconds")
    for name, params, label in jobs:
        project, summary = run_protocol(root, registry().get(name), params, label=label)
        if summary.status != "finished":
            raise CryoweaveError(f"demo run {summary.run_id} ({name}) {summary.status}: "
                                 f"{summary.error}")
        for output, set_id in summary.outputs.items():
            handle = set_handle(project, set_id)
            pixel = handle.properties.get("pixel_size_a")
            table.add_row(str(summary.run_id), name, summary.status, output,
                          str(handle.count()), f"{pixel:.3f}" if pixel else "",
                          f"{summary.seconds:.2f}")
        project.close()
    console.print(table)
    console.print(f"inspect with: cryoweave runs --project {root}")
