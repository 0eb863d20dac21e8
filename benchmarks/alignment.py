"""Angular assignment (projection matching) on simulated particles with known poses.

n particles (default 3,000) of the atoms phantom at a working box of 48 or 64 px (3.5 or
2.625 Å/px, the same particle), random poses, origins within 3.5 px (× box/48), CTF at
1–3 µm defocus, white noise at SNR 0.1 (signal variance / noise variance). Global search:
r_max = 12 px × box/48 (≈ 14 Å), max shift 4 px × box/48; local search: from the truth turned
by 3° about a random axis and moved by 1 px, max change 6° and 2 px, first step 2°. Errors
are symmetry-aware angles and origin distances to the truth (medians). Times are wall-clock
on this machine with all its cores (NumPy/OpenBLAS float32 GEMMs, SciPy FFTs), freed memory
kept for reuse as the commands keep it.

    python benchmarks/alignment.py [--n 3000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Section, machine, rate

from cryoweave.cli._memory import retain_freed_memory
from cryoweave.engine import (
    Projector,
    atoms_phantom,
    ctf_2d,
    euler_to_matrix,
    matrix_to_euler,
    symmetry_aware_angular_distance,
)
from cryoweave.engine.alignment._global import global_search
from cryoweave.engine.alignment._grid import _grid
from cryoweave.engine.alignment._local import local_search, rotation_from_vector

SNR = 0.1


def _simulate(n: int, box: int, symmetry: str | None, seed: int = 0):
    rng = np.random.default_rng(seed)
    pixel_a = 3.5 * 48 / box
    volume = atoms_phantom(box, pixel_a, seed=seed, symmetry=symmetry,
                           n_atoms=200 if symmetry is None else 20)
    tilt = np.degrees(np.arccos(rng.uniform(-1, 1, n)))
    matrices = euler_to_matrix(rng.uniform(-180, 180, n), tilt, rng.uniform(-180, 180, n))
    radius = 3.5 * box / 48 * np.sqrt(rng.uniform(0, 1, n))
    angle = rng.uniform(0, 2 * np.pi, n)
    origins = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    defocus = rng.uniform(10000, 30000, n)
    ctfs = ctf_2d(defocus, defocus - rng.uniform(0, 1000, n), rng.uniform(0, 180, n),
                  voltage_kv=300.0, cs_mm=2.7, amplitude_contrast=0.1, pixel_size_a=pixel_a,
                  box_px=box)
    images = Projector.from_volume(volume).project(matrices, origin_xy_px=origins, ctf=ctfs)
    images += math.sqrt(images.var(axis=(1, 2)).mean() / SNR) * rng.standard_normal(
        images.shape).astype(np.float32)
    return volume, images.astype(np.float32), ctfs, matrices, origins


def _errors(result, matrices, origins, symmetry):
    angle = symmetry_aware_angular_distance(result.matrices(), matrices, symmetry)
    shift = np.hypot(result.origin_x_px - origins[:, 0], result.origin_y_px - origins[:, 1])
    return f"{np.median(angle):.2f}°", f"{np.median(shift):.2f}"


def _split(timings: dict[str, float]) -> str:
    keys = ("gallery", "coarse", "fine", "subpixel", "polish")
    return " / ".join(f"{timings.get(k, 0.0):.1f}" for k in keys)


def run(n: int = 3000) -> list[Section]:
    # glibc keeps freed memory for reuse, as in every compute command (cryoweave.cli._memory):
    # otherwise each large temporary is fresh pages, slow to touch on a VM (process_costs.py)
    retain_freed_memory()
    global_section = Section(
        f"Angular assignment, global: {n:,} particles, SNR {SNR}",
        "Coarse-to-fine projection matching (engine `global_search`): coarse pass at 2× the "
        "step and r_max ≥ 8 px over a 2-px shift grid keeping 8 candidates, fine pass around "
        "them over 3×3 one-pixel shifts, parabolic sub-pixel origins, then a short continuous "
        "polish. Split = gallery / coarse / fine / sub-pixel / polish seconds.",
        ["box", "symmetry", "step", "polish", "gallery (coarse → fine)", "seconds",
         "particles/s", "split (s)", "median error", "median origin error (px)"])
    cases = [(48, 7.5, "c1", True), (48, 7.5, "c1", False), (48, 15.0, "c1", True),
             (64, 7.5, "c1", True), (64, 15.0, "c1", True), (48, 7.5, "d7", True)]
    data = {}
    for box, step, symmetry, polish in cases:
        key = (box, None if symmetry == "c1" else symmetry)
        if key not in data:
            data[key] = _simulate(n, box, key[1])
        volume, images, ctfs, matrices, origins = data[key]
        started = time.perf_counter()
        result = global_search(images, ctfs, volume, angular_step_deg=step, symmetry=symmetry,
                               max_shift_px=4.0 * box / 48, r_max_px=12.0 * box / 48,
                               refine_angles=polish)
        seconds = time.perf_counter() - started
        sizes = [_grid(s, symmetry, 0.0, 180.0).size
                 for s in (min(2 * step, max(step, 30.0)), step)]
        global_section.rows.append([
            box, symmetry, f"{step}°", "yes" if polish else "no",
            f"{sizes[0]:,} → {sizes[1]:,}", f"{seconds:.1f}",
            rate(n, seconds), _split(result.timings), *_errors(result, matrices, origins,
                                                               symmetry)])
    local_section = Section(
        f"Angular assignment, local: {n:,} particles, SNR {SNR}",
        "Continuous refinement (engine `local_search`) from the truth turned by 3° and moved by "
        "1 px: pattern search over 7 rotations × 9 origins per step with projections made on "
        "the fly, then a parabolic step.",
        ["box", "seconds", "particles/s", "median error", "median origin error (px)"])
    for box in (48, 64):
        volume, images, ctfs, matrices, origins = data[(box, None)]
        rng = np.random.default_rng(1)
        axis = rng.standard_normal((n, 3))
        axis *= 3.0 / np.linalg.norm(axis, axis=1, keepdims=True)
        rot, tilt, psi = matrix_to_euler(rotation_from_vector(axis) @ matrices)
        start = origins + rng.choice([-1.0, 1.0], (n, 2)) / math.sqrt(2)
        started = time.perf_counter()
        result = local_search(images, ctfs, volume, rot_deg=rot, tilt_deg=tilt, psi_deg=psi,
                              origin_x_px=start[:, 0], origin_y_px=start[:, 1],
                              max_angle_change_deg=6.0, max_shift_change_px=2.0,
                              angular_step_deg=2.0, r_max_px=12.0 * box / 48)
        seconds = time.perf_counter() - started
        local_section.rows.append([box, f"{seconds:.1f}", rate(n, seconds),
                                   *_errors(result, matrices, origins, "c1")])
    global_section.notes.append(
        "the polish (continuous refinement below the grid step) and the local search are "
        "mostly on-the-fly projections of the band only (`Projector.sample`)")
    for section in (global_section, local_section):
        section.notes.append(f"machine: {machine()}")
    return [global_section, local_section]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Angular assignment benchmark")
    parser.add_argument("--n", type=int, default=3000)
    for section in run(parser.parse_args().n):
        print(section.markdown())
