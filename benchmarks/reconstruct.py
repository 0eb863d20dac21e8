"""Reconstruction from known poses side by side with ``relion_reconstruct --ctf``, in one run.

N simulated particles (built-in phantom, box² px, CTF, shifts, white noise at SNR 1) with their
true poses in a RELION 3.1 STAR file, reconstructed by the commands users type, each a fresh
process, alternating, median of ``repeats`` runs:
- ``relion_reconstruct --i particles.star --o relion.mrc --ctf`` (its defaults: padding 2,
  trilinear, 10 gridding iterations; one thread), and
- ``cryoweave run-protocol ReconstructFourier params.json --project NEW`` with default options
  (params: ``{"particles": "particles.star"}``; a fresh project each time: the STAR import, both
  half insertions, the three gridding solves, FSC, maps and pictures on disk);
both maps compared with the truth by FSC. Extra rows, labelled: the engine functions alone
(insertion of both halves and the map of all particles, in this process) and the projection
throughput of ``Projector.project`` (with CTF).

    python benchmarks/reconstruct.py [--n 10000] [--box 128] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Section,
    alternate,
    best_of,
    busy_cores,
    cryoweave_command,
    load_note,
    median,
    run_timed,
    runs_text,
)

from cryoweave.engine import Projector, ReconstructionAccumulator, fsc
from cryoweave.engine._backend import FFT_WORKERS_ENV_VAR
from cryoweave.formats import read_particles_star, read_volume, write_mrc
from cryoweave.protocols._shared.particle_arrays import arrays_from_frame
from cryoweave.protocols._shared.reconstruct import empty_accumulator, insert_particles
from cryoweave.protocols.reconstruction._simulation import (
    SimulationSettings,
    phantom_volume,
    simulate_files,
)
from cryoweave.protocols.reconstruction.reconstruct_fourier import POSE_COLUMNS, assign_halves

PIXEL_SIZE_A = 2.5
SNR = 1.0
SHELLS = (0.2, 0.4, 0.6, 0.7, 0.8)  # fractions of Nyquist reported
PROJECTION_BATCH = 2000


def reconstruct_like_protocol(star: Path, output: Path) -> None:
    """The engine functions alone (an extra row, not the command): read the STAR, insert the
    two halves side by side (one thread each), the map of all particles only (one gridding
    solve; the protocol also solves both half maps), written as MRC."""
    table = read_particles_star(star)
    arrays = arrays_from_frame(table.particles, table.optics, require=POSE_COLUMNS)
    halves = assign_halves(arrays["half"], "auto", 0)

    def insert_half(half: int) -> ReconstructionAccumulator:
        accumulator = empty_accumulator(arrays, half=half, padding=2.0, max_resolution_a=None)
        insert_particles(accumulator, arrays, np.flatnonzero(halves == half), symmetry="c1")
        return accumulator

    with _fft_workers(1), ThreadPoolExecutor(2) as pool:
        half1, half2 = pool.map(insert_half, (1, 2))
    write_mrc(output, (half1 + half2).reconstruct(), arrays.pixel_size_a)


@contextlib.contextmanager
def _fft_workers(count: int):
    previous = os.environ.get(FFT_WORKERS_ENV_VAR)
    os.environ[FFT_WORKERS_ENV_VAR] = str(count)
    try:
        yield
    finally:
        if previous is None:
            del os.environ[FFT_WORKERS_ENV_VAR]
        else:
            os.environ[FFT_WORKERS_ENV_VAR] = previous


def projection_rate(volume: np.ndarray, star: Path, batch: int) -> tuple[float, int]:
    """Projections per second of `Projector.project` with per-image CTFs and shifts."""
    table = read_particles_star(star)
    arrays = arrays_from_frame(table.particles, table.optics)
    rows = np.arange(min(batch, len(arrays)))
    matrices, origins, ctf = arrays.matrices(rows), arrays.origins_px(rows), arrays.ctf(rows)
    projector = Projector.from_volume(volume)
    seconds = best_of(3, lambda: projector.project(matrices, origin_xy_px=origins, ctf=ctf))
    return len(rows) / seconds, len(rows)


def _shell(fraction: float, box_px: int) -> int:
    return round(fraction * (box_px // 2))


def compare(folder: Path, box_px: int) -> dict:
    truth, _ = read_volume(folder / "truth.mrc")
    ours, _ = read_volume(folder / "ours.mrc")
    theirs, _ = read_volume(folder / "relion.mrc")
    last = _shell(0.8, box_px)
    curves = {name: fsc(volume, truth).values[1:last + 1]
              for name, volume in (("ours", ours), ("relion", theirs))}
    agreement = fsc(ours, theirs).values[1:last + 1]
    return {"curves": curves, "agreement_min": float(agreement.min()),
            "difference": curves["ours"] - curves["relion"]}


def run(n: int = 10000, box_px: int = 128, keep: str | None = None,
        repeats: int = 3) -> list[Section]:
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="cw-bench-rec-"))
    try:
        return _run(n, box_px, folder, repeats)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _run(n: int, box_px: int, folder: Path, repeats: int) -> list[Section]:
    settings = SimulationSettings(n_particles=n, box_px=box_px, pixel_size_a=PIXEL_SIZE_A,
                                  snr=SNR, max_shift_a=5.0, seed=1)
    volume = phantom_volume(box_px, PIXEL_SIZE_A)
    started = time.perf_counter()
    simulate_files(volume, settings, folder)
    simulate_s = time.perf_counter() - started
    star = folder / "particles.star"
    (folder / "params.json").write_text(json.dumps({"particles": star.name}))
    relion_exe = shutil.which("relion_reconstruct")

    def ours(k: int) -> float:
        return run_timed(cryoweave_command("run-protocol", "ReconstructFourier", "params.json",
                                           "--project", f"project{k}", "--quiet"), cwd=folder)

    def relion(k: int) -> float:
        return run_timed([relion_exe, "--i", star.name, "--o", "relion.mrc", "--ctf"],
                         cwd=folder)

    commands = {"ours": ours, **({"relion": relion} if relion_exe else {})}
    notes = [load_note(busy_cores())]
    times = alternate(commands, repeats)
    notes.append(load_note(busy_cores(), "after the timed runs"))
    maps = sorted(folder.glob("project0/Runs/*_ReconstructFourier/extra/map.mrc"))
    shutil.copyfile(maps[-1], folder / "ours.mrc")
    started = time.perf_counter()
    reconstruct_like_protocol(star, folder / "engine.mrc")
    engine_s = time.perf_counter() - started
    rate, batch = projection_rate(volume, star, PROJECTION_BATCH)
    ours_s = median(times["ours"])
    relion_s = median(times["relion"]) if relion_exe else None
    timing = Section(
        f"Reconstruction from known poses: {n:,} × {box_px}² with CTF",
        f"Simulated particles (phantom, {PIXEL_SIZE_A} Å/px, CTF, shifts ≤ 5 Å, SNR {SNR:g}) "
        "with their true poses, one RELION 3.1 STAR file and stack, in one run. The commands "
        "as typed, each a fresh process: wall-clock seconds from the STAR file to the maps on "
        f"disk (start-up and reading the images included); alternating, median of {repeats} "
        "runs (every run in brackets).",
        ["tool", "seconds", "particles/s", "speed-up vs RELION"])
    if relion_s:
        timing.rows.append(["`relion_reconstruct --ctf` (1 thread; no --j option): one map",
                            runs_text(times["relion"], 1), f"{n / relion_s:,.0f}", "1.0×"])
    timing.rows.append(["`cryoweave run-protocol ReconstructFourier params.json` (default "
                        "options, new project): half maps, map, FSC, pictures",
                        runs_text(times["ours"], 1), f"{n / ours_s:,.0f}",
                        f"{relion_s / ours_s:.2f}×" if relion_s else "—"])
    timing.rows.append(["extra: engine functions alone in this process (halves inserted side "
                        "by side, one gridding solve; not a command; one run)",
                        f"{engine_s:.1f}", f"{n / engine_s:,.0f}",
                        f"{relion_s / engine_s:.2f}×" if relion_s else "—"])
    timing.notes.append(f"simulating the data set took {simulate_s:.1f} s (not timed above)")
    timing.notes.extend(notes)
    if relion_s:
        timing.notes.append(f"the command a user types: {relion_s / ours_s:.2f}× "
                            f"relion_reconstruct (median {ours_s:.1f} s against "
                            f"{relion_s:.1f} s)")
    timing.notes.append(f"extra: projection (Projector.project, {box_px}² with per-image CTF "
                        f"and shifts, batch of {batch}): {rate:,.0f} projections/s")
    sections = [timing]
    if relion_exe:
        sections.append(_accuracy_section(compare(folder, box_px), box_px))
    return sections


def _accuracy_section(result: dict, box_px: int) -> Section:
    curves, difference = result["curves"], result["difference"]
    section = Section(
        "Reconstruction accuracy: FSC against the truth",
        "Same maps as above (no mask applied for the FSC); shells in Fourier pixels, as "
        "fractions of Nyquist.",
        ["shell"] + [f"{f:g} Nyq. ({_shell(f, box_px)})" for f in SHELLS]
        + ["min up to 0.8 Nyq."])
    for name, label in (("ours", "cryoweave"), ("relion", "relion_reconstruct")):
        values = curves[name]
        section.rows.append([label] + [f"{values[_shell(f, box_px) - 1]:.4f}" for f in SHELLS]
                            + [f"{values.min():.4f}"])
    section.rows.append(["cryoweave − RELION"]
                        + [f"{difference[_shell(f, box_px) - 1]:+.5f}" for f in SHELLS]
                        + [f"{difference.min():+.5f} (worst shell)"])
    worst = int(np.argmin(difference)) + 1
    behind = np.flatnonzero(difference < 0) + 1
    verdict = "yes" if difference.min() >= 0 else (
        f"no: behind at shell(s) {', '.join(map(str, behind))}, by at most "
        f"{-difference.min():.1e} (shell {worst}); ahead by up to {difference.max():.1e}")
    section.notes.append(f"cryoweave ≥ RELION at every shell up to 0.8 Nyquist: {verdict}")
    section.notes.append(f"FSC(cryoweave, RELION) ≥ {result['agreement_min']:.4f} up to 0.8 "
                         "Nyquist")
    return section


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", help="folder for the data and maps (kept); default: a "
                                       "temporary folder, removed")
    args = parser.parse_args()
    print("\n".join(s.markdown() for s in run(args.n, args.box, args.keep, args.repeats)))
