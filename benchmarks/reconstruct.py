"""Reconstruction from known poses side by side with ``relion_reconstruct --ctf``, in one run.

N simulated particles (built-in phantom, box² px, CTF, shifts, white noise at SNR 1) with their
true poses in a RELION 3.1 STAR file, reconstructed by
- ``relion_reconstruct --i particles.star --o relion.mrc --ctf`` (its defaults: padding 2,
  trilinear, 10 gridding iterations; one thread), and
- cryoweave: what ReconstructFourier does for the full set — read the STAR and the images,
  CTFs, insert both halves, the map of all particles, written as MRC;
timed alternately (twice each, the better kept), both compared with the truth by FSC.
Also the projection throughput of ``Projector.project`` (with CTF).

    python benchmarks/reconstruct.py [--n 10000] [--box 128] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Section, best_of, run_timed

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
    """ReconstructFourier's work for the full set, from the STAR file to the map on disk: the
    two halves are inserted concurrently (the protocol runs them as parallel steps; here one
    thread each), then the map of all particles."""
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


def _busy_cores(seconds: float = 2.0) -> float | None:
    """Cores busy on the machine (all processes, /proc/stat) over `seconds`: other users'
    load shows here and slows the multi-threaded side more than single-threaded RELION."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return None
    busy = 1.0 - (idle1 - idle0) / max(1, total1 - total0)
    return busy * (os.cpu_count() or 1)


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


def run(n: int = 10000, box_px: int = 128, keep: str | None = None) -> list[Section]:
    folder = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="cw-bench-rec-"))
    try:
        return _run(n, box_px, folder)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def _run(n: int, box_px: int, folder: Path) -> list[Section]:
    settings = SimulationSettings(n_particles=n, box_px=box_px, pixel_size_a=PIXEL_SIZE_A,
                                  snr=SNR, max_shift_a=5.0, seed=1)
    volume = phantom_volume(box_px, PIXEL_SIZE_A)
    started = time.perf_counter()
    simulate_files(volume, settings, folder)
    simulate_s = time.perf_counter() - started
    star = folder / "particles.star"
    relion = shutil.which("relion_reconstruct")
    busy = _busy_cores()
    times: dict[str, list[float]] = {"relion": [], "ours": []}
    for _ in range(2):  # alternate, so that a busy moment on the machine hits both
        if relion:
            times["relion"].append(run_timed([relion, "--i", star.name, "--o", "relion.mrc",
                                              "--ctf"], cwd=folder))
        started = time.perf_counter()
        reconstruct_like_protocol(star, folder / "ours.mrc")
        times["ours"].append(time.perf_counter() - started)
    rate, batch = projection_rate(volume, star, PROJECTION_BATCH)
    ours_s = min(times["ours"])
    timing = Section(
        f"Reconstruction from known poses: {n:,} × {box_px}² with CTF",
        f"Simulated particles (phantom, {PIXEL_SIZE_A} Å/px, CTF, shifts ≤ 5 Å, SNR {SNR:g}) "
        "with their true poses, one RELION 3.1 STAR file and stack, in one run. Wall-clock "
        "seconds from the STAR file to the map on disk (reading the images included), best of "
        "two alternating runs.",
        ["tool", "seconds (runs)", "particles/s", "speed-up"])
    if relion:
        relion_s = min(times["relion"])
        timing.rows.append(["relion_reconstruct --ctf (1 thread; no --j option)",
                            f"{relion_s:.1f} ({', '.join(f'{t:.1f}' for t in times['relion'])})",
                            f"{n / relion_s:,.0f}", "1.0×"])
    timing.rows.append(["cryoweave (ReconstructFourier's steps for the full set)",
                        f"{ours_s:.1f} ({', '.join(f'{t:.1f}' for t in times['ours'])})",
                        f"{n / ours_s:,.0f}",
                        f"{min(times['relion']) / ours_s:.1f}×" if relion else "—"])
    timing.notes.append(f"simulating the data set took {simulate_s:.1f} s (not timed above)")
    if busy is not None:
        timing.notes.append(f"other load before the timed runs: {busy:.1f} of "
                            f"{os.cpu_count()} cores busy")
    timing.notes.append(f"projection (Projector.project, {box_px}² with per-image CTF and "
                        f"shifts, batch of {batch}): {rate:,.0f} projections/s")
    sections = [timing]
    if relion:
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
    parser.add_argument("--keep", help="folder for the data and maps (kept); default: a "
                                       "temporary folder, removed")
    args = parser.parse_args()
    print("\n".join(s.markdown() for s in run(args.n, args.box, args.keep)))
