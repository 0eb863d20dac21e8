"""RELION 3.1's gold-standard auto-refine on a finished `highres_map_loss.py` project (issue 9).

Does the reference tool reach the true-pose map where ReconstructHighRes stops 2 % short? Runs
`relion_refine --auto_refine --split_random_halves` (its GUI defaults for 3D auto-refine, the
particle mask and offsets of benchmarks/refine.py; MPI: a leader and one follower per half, so
both cores work) on the project's simulated particles
(their STAR carries the same rlnRandomSubset halves ReconstructHighRes uses) from the same
30 Å start, until RELION's own convergence, then compares the maps with the truth:

- FSC 0.5 / 0.143 against the truth (Å, interpolated) of RELION's final map
  (`run_class001.mrc`), of ReconstructHighRes's map (the project's refined run) and of the
  true-pose reconstruction (ReconstructFourier);
- the median angular error (°) and origin error (px) of both refinements against the truth.

It takes well over an hour on 2 cores (RELION uses both). `--latest` compares what a run in
progress (or stopped) has so far instead: its last finished iteration's two half maps,
averaged (RELION writes the map of both halves only when it has converged), and that
iteration's poses; the row says which iteration.

    python benchmarks/relion_autorefine.py --project /tmp/cw-map-loss-phantom/p [--latest]

Measured (2026-11-28, phantom, the project of highres_reference_test.py's table; RELION
stopped after 81 min, 15 of them shared with a test run at nice 19, while its 12th iteration,
a global search at 3.75° with 294,912 orientations, announced 42–51 min; its half-map
resolution had moved between 9.1 and 10.7 Å since iteration 3), `--latest`:

| phantom | FSC 0.5 vs truth (Å) | FSC 0.143 (Å) | median angle error | median origin error (px) |
|---|---|---|---|---|
| RELION 3.1 auto-refine, unfinished: iteration 10, halves averaged | 7.88 | 6.97 | 3.39° | 0.33 |
| ReconstructHighRes | 7.82 | 6.55 | 2.19° | 0.24 |
| true poses (ReconstructFourier) | 7.65 | 6.45 | 0.00° | 0.00 |

(At iteration 9: 8.62 / 7.68 Å, 6.40°.) Where RELION would end after its finer local
iterations was not measured.

Converged, phantom-d7 (2026-11-29, a fresh `highres_map_loss.py --case phantom-d7` project;
RELION converged after 15 iterations in 729 s at nice 19 on 2 cores, final sampling 1.875°
and 0.81 Å; a median of 12 significant samples per particle, top probability 0.17). The
rows under RELION's map take it apart with `relion_reconstruct` (hard insertion of its
max-probability poses, with and without its gold-standard FSC as the tau² prior):

| phantom-d7 | FSC 0.5 vs truth (Å) | FSC 0.143 (Å) | median angle error | median origin (px) |
|---|---|---|---|---|
| RELION 3.1 auto-refine | 6.497 | 5.441 | 2.38° | 0.28 |
| RELION's max-probability poses, hard (relion_reconstruct --ctf) | 6.617 | 5.471 | 2.38° | 0.28 |
| the same, tau² from RELION's FSC (--fsc) | 6.605 | 5.469 | 2.38° | 0.28 |
| true poses (relion_reconstruct --ctf) | 6.367 | 5.460 | 0.00° | 0.00 |
| ReconstructHighRes | 6.572 | 5.453 | 2.17° | 0.24 |
| true poses (ReconstructFourier) | 6.396 | 5.470 | 0.00° | 0.00 |

RELION's converged map is 1.6 % from our true-pose map (2.0 % from relion_reconstruct's),
ours 2.7 %: neither is within issue 9's 1 %. RELION's poses are worse than ours (2.38° against
2.17°; inserted hard they give 6.62 against our 6.57), and its map is better: the gain is the
marginalised (posterior-weighted) reconstruction, 1.8 %, not the tau² prior (0.2 %).
benchmarks/highres_soft_insertion.py measures the same kind of reconstruction around our
poses (6.474). relion_reconstruct applies D7 by symmetrising the summed grid and gets 6.367
from the true poses, against 6.396 for ReconstructFourier's insertion once per operator; with
C1 the two agree (7.650 and 7.649 on the phantom).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from highres_map_loss import CASES, vs_truth

from cryoweave.engine import euler_to_matrix, symmetry_aware_angular_distance
from cryoweave.formats import read_star_blocks, read_volume, write_star_blocks
from cryoweave.store import Project, VolumeSet
from cryoweave.store.queries import output_set_id
from refinement_data import pose_errors as set_pose_errors


def relion_command(star: Path, start: Path, out: Path, box_px: int, pixel_a: float,
                   symmetry: str) -> list[str]:
    # auto-refine splits the halves between MPI followers: a leader and one follower per half
    return ["mpirun", "-n", "3", "--oversubscribe", "--allow-run-as-root", "relion_refine_mpi",
            "--i", str(star), "--o", str(out / "run"), "--ref", str(start),
            "--ini_high", "30", "--auto_refine", "--split_random_halves", "--ctf",
            "--particle_diameter", str(int(0.9 * box_px * pixel_a)), "--zero_mask",
            "--flatten_solvent", "--firstiter_cc", "--norm", "--scale",
            "--healpix_order", "2", "--auto_local_healpix_order", "4", "--oversampling", "1",
            "--offset_range", "6", "--offset_step", "2", "--sym", symmetry.upper(),
            "--low_resol_join_halves", "40", "--pad", "2", "--j", "1", "--pool", "30",
            "--dont_combine_weights_via_disc"]


def pose_errors(refined: dict[str, np.ndarray], truth: dict[str, np.ndarray], pixel_a: float,
                symmetry: str) -> tuple[float, float]:
    """Median angular error (°) and origin error (px) of `refined` against `truth`."""
    a = euler_to_matrix(refined["rot"], refined["tilt"], refined["psi"])
    b = euler_to_matrix(truth["rot"], truth["tilt"], truth["psi"])
    angles = symmetry_aware_angular_distance(a, b, symmetry)
    shifts = np.hypot(refined["x_a"] - truth["x_a"], refined["y_a"] - truth["y_a"]) / pixel_a
    return float(np.median(angles)), float(np.median(shifts))


def star_poses(path: Path) -> dict[str, np.ndarray]:
    """Poses of a RELION 3.1 particle STAR, in file order (origins in Å)."""
    block = read_star_blocks(path)["particles"]
    return {"rot": block["rlnAngleRot"].to_numpy(float),
            "tilt": block["rlnAngleTilt"].to_numpy(float),
            "psi": block["rlnAnglePsi"].to_numpy(float),
            "x_a": block["rlnOriginXAngst"].to_numpy(float),
            "y_a": block["rlnOriginYAngst"].to_numpy(float),
            "name": block["rlnImageName"].astype(str).to_numpy()}


def decomposition(data: Path, star: Path, out: Path, symmetry: str, folder: Path
                  ) -> dict[str, Path]:
    """Where RELION's final map gains: its max-probability poses inserted once each
    (`relion_reconstruct --ctf`, no marginalisation), the same with its gold-standard FSC as the
    tau² prior (`--fsc`), and the true poses through the same program."""
    model = read_star_blocks(out / "run_model.star")["model_class_1"]
    fsc_star = out / "gold_standard_fsc.star"
    write_star_blocks(fsc_star, {"fsc": model[["rlnSpectralIndex", "rlnGoldStandardFsc"]]})
    runs = {"RELION's max-probability poses, hard (relion_reconstruct --ctf)": (data, []),
            "the same, tau² from RELION's FSC (--fsc)": (data, ["--fsc", str(fsc_star)]),
            "true poses (relion_reconstruct --ctf)": (star, [])}
    maps = {}
    for index, (name, (source, extra)) in enumerate(runs.items()):
        target = out / f"reconstruct_{index}.mrc"
        if not target.exists():
            subprocess.run(["relion_reconstruct", "--i", str(source), "--o", str(target),
                            "--ctf", "--sym", symmetry.upper(), "--pad", "2", *extra],
                           check=True, capture_output=True, cwd=folder)
        maps[name] = target
    return maps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--project", type=Path, required=True,
                        help="a project made by benchmarks/highres_map_loss.py")
    parser.add_argument("--latest", action="store_true",
                        help="compare the last finished iteration of a run not converged yet")
    args = parser.parse_args()
    if not args.latest and not (shutil.which("relion_refine_mpi") and shutil.which("mpirun")):
        raise SystemExit("relion_refine_mpi or mpirun not found: apt-get install -y relion")
    facts = json.loads((args.project / "map_loss.json").read_text())
    case = CASES[facts["case"]]
    project = Project.open(args.project)
    simulation = next(r for r in project.list_runs() if r.protocol.endswith("SimulateParticles"))
    folder = args.project / simulation.folder / "extra"
    star, start = folder / "particles.star", args.project.parent / "start_30A.mrc"
    truth, pixel = read_volume(facts["truth"])
    out = args.project.parent / "relion_autorefine"
    if args.latest:
        iterations = sorted(out.glob("run_it[0-9][0-9][0-9]_data.star"))
        if not iterations:
            raise SystemExit(f"{out}: no finished RELION iteration yet")
        data = iterations[-1]
        stem = data.name.removesuffix("_data.star")
        label = f"RELION 3.1 auto-refine, unfinished: iteration {int(stem[-3:])}, halves averaged"
        average = sum(read_volume(out / f"{stem}_half{h}_class001.mrc")[0] for h in (1, 2)) / 2
        final_map: Path | np.ndarray = average
    else:
        if not (out / "run_class001.mrc").exists():
            out.mkdir(exist_ok=True)
            command = relion_command(star, start, out, case["box_px"], pixel, case["symmetry"])
            started = time.perf_counter()
            # RELION resolves image paths from its working folder
            subprocess.run(command, check=True, stdout=(out / "stdout.txt").open("w"),
                           stderr=subprocess.STDOUT, cwd=folder)
            print(f"relion_refine --auto_refine: {time.perf_counter() - started:.0f} s")
            print("command: " + " ".join(command))
        data, label = out / "run_data.star", "RELION 3.1 auto-refine"
        final_map = out / "run_class001.mrc"
    maps: dict[str, Path | np.ndarray] = {label: final_map}
    if not args.latest:
        maps.update(decomposition(data, star, out, case["symmetry"], folder))
    for name, run_id in (("ReconstructHighRes", facts["refined_run"]),
                         ("true poses (ReconstructFourier)", facts["true_poses_run"])):
        volumes = VolumeSet(project, output_set_id(project, run_id, "volume")).to_frame()
        maps[name] = Path(volumes.iloc[0]["path"])
    true_poses = star_poses(star)
    order = {name: i for i, name in enumerate(true_poses["name"])}
    relion = star_poses(data)
    rows = np.array([order[name] for name in relion["name"]])
    truth_rows = {k: v[rows] for k, v in true_poses.items()}
    errors = {label: pose_errors(relion, truth_rows, pixel, case["symmetry"])}
    # ours from the sets, as the acceptance test measures it (the simulation's particle set
    # holds the true poses)
    simulation_set = SimpleNamespace(outputs={
        "particles": output_set_id(project, simulation.id, "particles")})
    refined_set = SimpleNamespace(outputs={
        "particles": output_set_id(project, facts["refined_run"], "particles")})
    angles, shifts = set_pose_errors(project, refined_set, simulation_set, case["symmetry"])
    errors["ReconstructHighRes"] = (float(np.median(angles)), float(np.median(shifts)))
    print(f"| {facts['case']} | FSC 0.5 vs truth (Å) | FSC 0.143 (Å) | median angle error | "
          "median origin error (px) |")
    print("|---|---|---|---|---|")
    for name, path in maps.items():
        volume = path if isinstance(path, np.ndarray) else read_volume(path)[0]
        at_05, at_0143 = vs_truth(volume, truth, pixel)
        pose = errors.get(name)
        if name.startswith("RELION's max-probability") or name.startswith("the same, tau"):
            pose = errors[label]
        elif name.startswith("true poses"):
            pose = (0.0, 0.0)
        columns = f"{pose[0]:.2f}° | {pose[1]:.2f}" if pose else "— | —"
        print(f"| {name} | {at_05:.3f} | {at_0143:.3f} | {columns} |")


if __name__ == "__main__":
    main()
