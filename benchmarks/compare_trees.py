"""Time one user command from two source trees (e.g. main before and after a change), side by
side on the same data: the rounds alternate between the trees, so a busy moment on a shared
machine hits both alike. This is how the before/after figures in the session notes were taken.

    python benchmarks/compare_trees.py --tree /path/to/old/src --tree src \\
        --command reconstruct [--rounds 3] [--after-relion]

--command downsample: ``cryoweave downsample particles.star -D 128`` on 5,000 × 256² synthetic
particles (the data of benchmarks/downsample.py); reconstruct: ``cryoweave run-protocol
ReconstructFourier`` with default options on 10,000 × 128² simulated particles (the data of
benchmarks/reconstruct.py), also printing each step's time from the run log; refine:
``cryoweave run-protocol ReconstructHighRes`` (automatic, 5 iterations, defaults otherwise) on
a phantom case like `make validate`'s, 3,000 × 64² at 2 Å, SNR 0.05, started from the truth
low-passed to 30 Å (about a minute a run), with the time of its alignment steps. With
--after-relion every round first runs the matching RELION command, as the alternating
benchmarks do (on a VM, memory can be slow to touch again after a long RELION run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import step_times

COMMAND = "import sys; from cryoweave.cli import main; sys.argv[0] = 'cryoweave'; main()"


def _data(kind: str, folder: Path) -> list[str]:
    """Write the data set; returns the cryoweave arguments (output path last, filled per run)."""
    if kind == "downsample":
        from cryoweave.demo.synthetic import write_particles

        write_particles(folder, 5000, 256, 1.0, np.random.default_rng(0))
        return ["downsample", "particles.star", "-D", "128", "-o"]
    from cryoweave.protocols.reconstruction._simulation import (
        SimulationSettings,
        phantom_volume,
        simulate_files,
    )

    if kind == "refine":
        from cryoweave.engine import lowpass_filter_a
        from cryoweave.formats import write_mrc

        truth = phantom_volume(64, 2.0)
        simulate_files(truth, SimulationSettings(n_particles=3000, box_px=64, pixel_size_a=2.0,
                                                 snr=0.05, max_shift_a=6.0, seed=11), folder)
        write_mrc(folder / "start.mrc", lowpass_filter_a(truth, 30.0, 2.0), 2.0)
        (folder / "params.json").write_text(
            '{"particles": "particles.star", "initial_volumes": "start.mrc", '
            '"alignment": "automatic", "iterations": 5}')
        return ["run-protocol", "ReconstructHighRes", "params.json", "--quiet", "--project"]
    settings = SimulationSettings(n_particles=10000, box_px=128, pixel_size_a=2.5, snr=1.0,
                                  max_shift_a=5.0, seed=1)
    simulate_files(phantom_volume(128, 2.5), settings, folder)
    (folder / "params.json").write_text('{"particles": "particles.star"}')
    return ["run-protocol", "ReconstructFourier", "params.json", "--quiet", "--project"]


def _relion(kind: str) -> list[str] | None:
    if kind == "refine":  # relion_refine takes half an hour here: benchmarks/refine.py
        return None
    if kind == "downsample":
        exe = shutil.which("relion_image_handler")
        return [exe, "--i", "particles.star", "--o", "relion", "--rescale_angpix", "2"] \
            if exe else None
    exe = shutil.which("relion_reconstruct")
    return [exe, "--i", "particles.star", "--o", "relion.mrc", "--ctf"] if exe else None


def _timed(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _step_times(project: Path, kind: str) -> str:
    if kind == "refine":
        return ", ".join(f"{key.split('/')[0]} {seconds:.1f} s" for key, seconds
                         in step_times(project, "ReconstructHighRes") if "/align/" in key)
    return ", ".join(f"{key} {seconds:.2f} s"
                     for key, seconds in step_times(project, "ReconstructFourier"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", action="append", required=True,
                        help="a source folder (put on PYTHONPATH); give it twice")
    parser.add_argument("--command", choices=["downsample", "reconstruct", "refine"], required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--after-relion", action="store_true")
    args = parser.parse_args()
    trees = [str(Path(t).resolve()) for t in args.tree]
    with tempfile.TemporaryDirectory(prefix="cw-compare-") as tmp:
        folder = Path(tmp)
        base = _data(args.command, folder)
        relion = _relion(args.command) if args.after_relion else None
        times: dict[str, list[float]] = {t: [] for t in trees}
        for k in range(args.rounds):
            for i, tree in enumerate(trees):
                if relion:
                    print(f"round {k + 1}: RELION {_timed(relion, folder):.2f} s", flush=True)
                out = folder / f"out_{k}_{i}"
                env = {**os.environ, "PYTHONPATH": tree}
                seconds = _timed([sys.executable, "-c", COMMAND, *base, str(out)], folder, env)
                times[tree].append(seconds)
                steps = _step_times(out, args.command)
                print(f"round {k + 1}: {tree}: {seconds:.2f} s {steps}", flush=True)
                shutil.rmtree(out, ignore_errors=True)
        for tree, values in times.items():
            print(f"{tree}: median {float(np.median(values)):.2f} s "
                  f"({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
