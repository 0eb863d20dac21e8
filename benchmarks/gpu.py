"""The GPU goals of issue 12 §3, measured on one CUDA GPU, in one call of the device tool.

    python benchmarks/gpu.py [--quick] [--only NAME ...] [--output FILE] [--device gpu|cpu]
    python benchmarks/gpu.py --install FILE      # put a measured section into docs/benchmarks.md

Engine workloads run on arrays made on the device (no transfers in the timings), warmed up
first, synchronised before each clock read, best of ``--repeats``. Command workloads run the
commands as users type them (``cryoweave simulate``, ``cryoweave downsample``,
``cryoweave run-protocol ReconstructHighRes``) with ``--device gpu``, each in a fresh process
under a time limit, and report the per-step split from the run log. A workload that fails or
runs past its limit gives a row that says so; the others still run.

``--device cpu`` runs the same code on NumPy: a smoke test of this script on a machine without
a GPU (tests/test_benchmark_gpu.py runs it with ``--quick``). Its section says "CPU" and
``--install`` refuses it, so docs/benchmarks.md only ever shows figures measured on a GPU.
``tools/device_check.sh`` runs the CuPy tests and this script on the lent machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import Section, cryoweave_command, machine, step_times  # noqa: E402
from downsample import io_floor  # noqa: E402

DOCS = HERE.parent / "docs" / "benchmarks.md"
MARK = "<!-- benchmark:gpu -->"
SNR = 0.05
SEARCH_STAGES = ("gallery", "coarse", "fine", "subpixel", "polish")  # seconds in .timings


@dataclass(frozen=True)
class Sizes:
    projection_n: int
    reconstruct_small: tuple[int, int]  # images, box
    reconstruct_large: tuple[int, int, int]  # images, box, images per insert batch
    search: tuple[int, int, float]  # particles, box, angular step (°)
    simulate: tuple[int, int]
    downsample: tuple[int, int, int]  # images, box in, box out
    highres_validate: tuple[int, int]  # particles, box (the `make validate` case)
    highres_large: tuple[int, int, float]  # particles, box, global angular step (°)
    command_limit_s: float


FULL = Sizes(projection_n=20_000, reconstruct_small=(10_000, 128),
             reconstruct_large=(100_000, 256, 5_000), search=(10_000, 48, 6.0),
             simulate=(10_000, 128), downsample=(5_000, 256, 128),
             highres_validate=(3_000, 64), highres_large=(10_000, 128, 7.5),
             command_limit_s=240.0)
QUICK = Sizes(projection_n=200, reconstruct_small=(300, 32), reconstruct_large=(600, 48, 200),
              search=(60, 32, 15.0), simulate=(200, 32), downsample=(200, 64, 32),
              highres_validate=(120, 32), highres_large=(150, 32, 15.0),
              command_limit_s=120.0)


class Device:
    """The array module of the run and a clock that waits for the device's queued work."""

    def __init__(self, name: str, budget_s: float = math.inf):
        self.name = name
        self.deadline = time.monotonic() + budget_s  # commands are stopped at it
        if name == "gpu":
            import cupy

            self.xp = cupy
            props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
            _, total = cupy.cuda.Device().mem_info
            label = props["name"]
            self.label = (label.decode() if isinstance(label, bytes) else str(label)) + \
                f", {total / 2**30:.0f} GiB, CuPy {cupy.__version__}, CUDA runtime " \
                f"{cupy.cuda.runtime.runtimeGetVersion()}"
        else:
            self.xp = np
            self.label = "CPU (NumPy): not a GPU figure"

    def sync(self) -> None:
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()

    def time(self, func: Callable[[], Any], repeats: int,
             warm_up: Callable[[], Any] | None = None) -> float:
        """Best of up to ``repeats`` timed calls after one warm-up call (``warm_up``, default
        ``func``: FFT plans, compiled kernels, the memory pool); stops repeating once 5 s
        were timed (a slow workload is measured once, which fits the device's lease)."""
        (warm_up or func)()
        self.sync()
        best, spent = math.inf, 0.0
        for _ in range(max(1, repeats)):
            self.sync()
            started = time.perf_counter()
            func()
            self.sync()
            elapsed = time.perf_counter() - started
            best, spent = min(best, elapsed), spent + elapsed
            if spent > 5.0:
                break
        return best

    def free_pool(self) -> None:
        if self.xp is not np:
            self.xp.get_default_memory_pool().free_all_blocks()


# ---------------------------------------------------------------- engine workloads

def _poses(xp: Any, n: int, box: int, rng: np.random.Generator) -> tuple[Any, Any]:
    from cryoweave.engine import euler_to_matrix

    tilt = np.degrees(np.arccos(rng.uniform(-1, 1, n)))
    matrices = euler_to_matrix(rng.uniform(-180, 180, n), tilt, rng.uniform(-180, 180, n))
    origins = rng.uniform(-0.05 * box, 0.05 * box, (n, 2))
    return xp.asarray(matrices), xp.asarray(origins)


def _ctfs(xp: Any, n: int, box: int, pixel_a: float, rng: np.random.Generator) -> Any:
    from cryoweave.engine import ctf_2d

    defocus = rng.uniform(10_000, 30_000, n)
    return ctf_2d(xp.asarray(defocus), xp.asarray(defocus - rng.uniform(0, 1000, n)),
                  xp.asarray(rng.uniform(0, 180, n)), voltage_kv=300.0, cs_mm=2.7,
                  amplitude_contrast=0.1, pixel_size_a=pixel_a, box_px=box, xp=xp)


def _phantom(xp: Any, box: int, pixel_a: float) -> Any:
    from cryoweave.engine import atoms_phantom

    return atoms_phantom(box, pixel_a, seed=0, xp=xp)


def _noisy_projections(projector: Any, matrices: Any, origins: Any, ctf: Any,
                       rng: np.random.Generator) -> Any:
    """Projections with CTF and shifts plus white noise at `SNR`, made on the device."""
    from cryoweave.engine import array_namespace

    images = projector.project(matrices, origin_xy_px=origins, ctf=ctf)
    xp = array_namespace(images)
    images += xp.asarray(rng.standard_normal(images.shape, dtype=np.float32)) * float(
        xp.sqrt(images.var() / SNR))
    return images


def projection(device: Device, sizes: Sizes, repeats: int) -> list[str]:
    from cryoweave.engine import Projector

    xp, n, box = device.xp, sizes.projection_n, 128
    rng = np.random.default_rng(0)
    projector = Projector.from_volume(_phantom(xp, box, 2.0))
    matrices, origins = _poses(xp, n, box, rng)
    ctf = _ctfs(xp, n, box, 2.0, rng)
    seconds = device.time(
        lambda: projector.project(matrices, origin_xy_px=origins, ctf=ctf), repeats,
        warm_up=lambda: projector.project(matrices[:500], origin_xy_px=origins[:500],
                                          ctf=ctf[:500]))
    return [f"projection, {box}² with CTF and shifts ({n:,} images)", "≥ 100,000 images/s",
            f"{n / seconds:,.0f} images/s", f"{seconds:.3f} s", "", _verdict(n / seconds >= 1e5)]


def reconstruction_small(device: Device, sizes: Sizes, repeats: int) -> list[str]:
    from cryoweave.engine import Projector, reconstruct

    xp = device.xp
    n, box = sizes.reconstruct_small
    rng = np.random.default_rng(1)
    matrices, origins = _poses(xp, n, box, rng)
    ctf = _ctfs(xp, n, box, 2.5, rng)
    images = _noisy_projections(Projector.from_volume(_phantom(xp, box, 2.5)), matrices,
                                origins, ctf, rng)
    seconds = device.time(lambda: reconstruct(images, matrices, ctf=ctf, origin_xy_px=origins),
                          repeats)
    return [f"reconstruction, {n:,} × {box}² (insert with CTF + 10 gridding iterations)",
            "≤ 0.5 s", f"{seconds:.3f} s", f"{n / seconds:,.0f} images/s", "",
            _verdict(seconds <= 0.5)]


def reconstruction_large(device: Device, sizes: Sizes, repeats: int) -> list[str]:
    """One stack of `batch` random images re-inserted at new random poses until `n` images went
    in (no 26 GB stack needed), then the map: insert / solve split."""
    from cryoweave.engine import ReconstructionAccumulator

    xp = device.xp
    n, box, batch = sizes.reconstruct_large
    rng = np.random.default_rng(2)
    images = xp.asarray(rng.standard_normal((batch, box, box), dtype=np.float32))
    ctf = _ctfs(xp, batch, box, 1.0, rng)
    poses = [_poses(xp, batch, box, rng) for _ in range(n // batch)]

    def run(batches: list[tuple[Any, Any]]) -> tuple[float, float]:
        accumulator = ReconstructionAccumulator.empty(box, xp=xp)
        device.sync()
        started = time.perf_counter()
        for matrices, origins in batches:
            accumulator.insert(images, matrices, ctf=ctf, origin_xy_px=origins)
        device.sync()
        inserted = time.perf_counter()
        accumulator.reconstruct()
        device.sync()
        return inserted - started, time.perf_counter() - inserted

    run(poses[:1])  # warm-up: one batch and the solve (plans, kernels, the memory pool)
    device.free_pool()
    insert_s, solve_s = run(poses)  # once: it is the longest workload
    total = insert_s + solve_s
    return [f"reconstruction, {n:,} × {box}² (random images and poses, CTF)", "≤ 10 s",
            f"{total:.2f} s", f"{n / total:,.0f} images/s",
            f"insert {insert_s:.2f} s, solve {solve_s:.2f} s", _verdict(total <= 10)]


def global_search_rate(device: Device, sizes: Sizes, repeats: int) -> list[str]:
    from cryoweave.engine import (
        Projector,
        global_search,
        symmetry_aware_angular_distance,
        to_host,
    )

    xp = device.xp
    n, box, step = sizes.search
    rng = np.random.default_rng(3)
    pixel_a = 3.5 * 48 / box
    volume = _phantom(xp, box, pixel_a)
    matrices, origins = _poses(xp, n, box, rng)
    ctf = _ctfs(xp, n, box, pixel_a, rng)
    images = _noisy_projections(Projector.from_volume(volume), matrices, origins, ctf, rng)
    found: list[Any] = []

    def search() -> None:
        found[:] = [global_search(images, ctf, volume, angular_step_deg=step,
                                  max_shift_px=4.0 * box / 48, r_max_px=12.0 * box / 48)]

    seconds = device.time(search, repeats)
    result = found[0]
    error = symmetry_aware_angular_distance(result.matrices(), to_host(matrices), "c1")
    split = ", ".join(f"{k} {result.timings[k]:.2f}" for k in SEARCH_STAGES
                      if k in result.timings)
    return [f"global search, {box}², {step:g}° ({n:,} particles, SNR {SNR})",
            "≥ 10,000 particles/s", f"{n / seconds:,.0f} particles/s", f"{seconds:.2f} s",
            f"{split} s; median error {np.median(error):.2f}°", _verdict(n / seconds >= 1e4)]


# ---------------------------------------------------------------- command workloads

def _command(args: list[str], cwd: Path, limit_s: float, device: Device) -> float:
    env = {**os.environ, "CRYOWEAVE_DEVICE": device.name}
    limit_s = min(limit_s, device.deadline - time.monotonic())
    if limit_s < 5:
        raise subprocess.TimeoutExpired(args, 0)
    started = time.perf_counter()
    done = subprocess.run(cryoweave_command(*args), cwd=cwd, capture_output=True, text=True,
                          timeout=limit_s, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"cryoweave {' '.join(args)} exited {done.returncode}: "
                           f"{(done.stderr or done.stdout)[-600:]}")
    return time.perf_counter() - started


def _step_split(project: Path, protocol: str) -> str:
    totals: dict[str, float] = {}
    for key, seconds in step_times(project, protocol):  # "iter02/align/c000" -> "align"
        kind = key.split("/")[1] if re.match(r"iter\d+/", key) else key
        totals[kind] = totals.get(kind, 0.0) + seconds
    return ", ".join(f"{k} {v:.1f}" for k, v in sorted(totals.items(), key=lambda kv: -kv[1]))


def _iteration_times(project: Path, protocol: str) -> list[float]:
    """Seconds between the first and last log line of each iteration's steps."""
    logs = sorted(project.glob(f"Runs/*_{protocol}/logs/*.log"))
    spans: dict[str, list[float]] = {}
    for line in logs[-1].read_text().splitlines() if logs else []:
        match = re.match(r"(\S+ \S+),(\d+) .*step (iter\d+)/", line)
        if match:
            stamp = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
            spans.setdefault(match.group(3), []).append(stamp + int(match.group(2)) / 1000)
    return [max(v) - min(v) for _, v in sorted(spans.items())]


def simulate_command(device: Device, sizes: Sizes, folder: Path) -> list[str]:
    n, box = sizes.simulate
    seconds = _command(["simulate", "--phantom", "-n", str(n), "--box", str(box),
                        "--pixel-size", "2", "--snr", "0.1", "--max-shift", "4", "-o", "sim",
                        "--device", device.name],
                       folder, sizes.command_limit_s, device)
    return [f"`cryoweave simulate --phantom -n {n} --box {box}` (CTF, noise, shifts; to disk)",
            "< 2 s", f"{seconds:.2f} s", f"{n / seconds:,.0f} particles/s",
            "whole command: start-up, projections, files", _verdict(seconds < 2)]


def downsample_command(device: Device, sizes: Sizes, folder: Path) -> list[str]:
    from cryoweave.demo.synthetic import write_particles

    n, big, small = sizes.downsample
    star = write_particles(folder / "ds", n, big, 1.0, np.random.default_rng(4))
    command = ["downsample", str(star), "-D", str(small), "--device", device.name, "-o"]
    _command([*command, "ds/warm"], folder, sizes.command_limit_s, device)  # a user's 2nd run:
    seconds = _command([*command, "ds/out"], folder, sizes.command_limit_s, device)  # warm cache
    floor_s = io_floor(folder / "ds", n, big, small)
    return [f"`cryoweave downsample -D {small}` ({n:,} × {big}², disk to disk)",
            "at the I/O floor", f"{seconds:.2f} s", f"{n / seconds:,.0f} images/s",
            f"I/O floor (read all, write the output, one process, no start-up) {floor_s:.2f} s",
            _verdict(seconds <= 1.2 * floor_s + 1.0)]


def _highres(device: Device, folder: Path, n: int, box: int, params: dict, limit_s: float,
             name: str) -> tuple[float, Path]:
    pixel = 2.0 * 64 / box
    sim = folder / name / "sim"
    _command(["simulate", "--phantom", "-n", str(n), "--box", str(box), "--pixel-size",
              str(pixel), "--snr", str(SNR), "--max-shift", str(3 * pixel), "-o", str(sim),
              "--device", device.name],
             folder, limit_s, device)
    from cryoweave.engine import lowpass_filter_a
    from cryoweave.formats import read_volume, write_mrc

    truth, _ = read_volume(sim / "truth.mrc")
    write_mrc(folder / name / "start.mrc", lowpass_filter_a(truth, 30.0, pixel), pixel)
    (folder / name / "params.json").write_text(json.dumps({
        "particles": str(sim / "particles.star"),
        "initial_volumes": str(folder / name / "start.mrc"), **params}))
    project = folder / name / "project"
    seconds = _command(["run-protocol", "ReconstructHighRes", str(folder / name / "params.json"),
                        "--project", str(project), "--quiet", "--device", device.name],
                       folder, limit_s, device)
    return seconds, project


def highres_validate(device: Device, sizes: Sizes, folder: Path) -> list[str]:
    n, box = sizes.highres_validate
    seconds, project = _highres(device, folder, n, box, {"alignment": "automatic",
                                                         "iterations": 5},
                                sizes.command_limit_s, "hr_validate")
    return [f"`run-protocol ReconstructHighRes` ({n:,} × {box}², automatic, 5 iterations; "
            "the `make validate` case)", "< 30 s", f"{seconds:.1f} s", "",
            "steps (s, summed over iterations): " + _step_split(project, "ReconstructHighRes"),
            _verdict(seconds < 30)]


def highres_large(device: Device, sizes: Sizes, folder: Path) -> list[str]:
    n, box, step = sizes.highres_large
    # the schedule's global step is atan((resolution + offset) / box size): start where it is
    # `step` (resolution_offset_a 2 Å, the default)
    start_a = box * (2.0 * 64 / box) * math.tan(math.radians(step)) - 2.0
    seconds, project = _highres(device, folder, n, box, {
        "alignment": "global", "iterations": 2, "initial_resolution_a": round(start_a, 2)},
        sizes.command_limit_s, "hr_large")
    per_iteration = _iteration_times(project, "ReconstructHighRes")
    worst = max(per_iteration) if per_iteration else math.inf
    return [f"`run-protocol ReconstructHighRes` ({n:,} × {box}², global {step:g}°, 2 "
            "iterations)", "< 30 s per iteration",
            " / ".join(f"{s:.1f}" for s in per_iteration) + " s per iteration",
            f"whole command {seconds:.1f} s",
            "steps (s): " + _step_split(project, "ReconstructHighRes"), _verdict(worst < 30)]


ENGINE = {"projection": projection, "reconstruction": reconstruction_small,
          "reconstruction_large": reconstruction_large, "search": global_search_rate}
COMMANDS = {"simulate": simulate_command, "downsample": downsample_command,
            "highres_validate": highres_validate, "highres_large": highres_large}
# quick and central first, the longest last: a spent budget costs the fewest rows
ORDER = ("projection", "reconstruction", "search", "simulate", "downsample", "highres_validate",
         "reconstruction_large", "highres_large")


def _verdict(met: bool) -> str:
    return "met" if met else "**not met**"


def run(device_name: str, sizes: Sizes, only: list[str] | None, repeats: int,
        budget_s: float = math.inf,
        on_row: Callable[[Section], None] | None = None) -> Section:
    """The workloads in ``ORDER`` (or ``only``); after ``budget_s`` seconds the running command
    is stopped and the rest are listed as not run (engine workloads cannot be stopped: each
    runs at most a warm-up and a few timed calls). ``on_row(section)`` after each row, so that
    a call killed from outside still leaves the rows measured so far."""
    device = Device(device_name, budget_s)
    section = Section(
        f"GPU: {device.label}",
        "Issue 12 §3 goals. Engine rows: arrays made on the device, best of up to "
        f"{repeats} timed calls (one once 5 s are timed) after a warm-up, the device "
        "synchronised before each clock read. Command "
        "rows: the command as typed with `--device gpu`, a fresh process each (CUDA start-up "
        "included), split from the run log.",
        ["workload", "goal", "measured", "also", "split / notes", "goal met"])
    section.notes.append(f"host: {machine()}")
    if device.name != "gpu":
        section.notes.append("run on the CPU with NumPy as a smoke test of this script: these "
                             "are not GPU figures")
    names = only or list(ORDER)
    with tempfile.TemporaryDirectory(prefix="cw-bench-gpu-") as tmp:
        for name in names:
            print(f"running {name} …", flush=True)
            started = time.perf_counter()
            if time.monotonic() > device.deadline - 5:
                section.rows.append([name, "", "not run", "", f"the {budget_s:.0f} s budget "
                                     "of this call was spent", "**not measured**"])
                continue
            try:
                if name in ENGINE:
                    row = ENGINE[name](device, sizes, repeats)
                else:
                    row = COMMANDS[name](device, sizes, Path(tmp))
            except subprocess.TimeoutExpired:
                row = [name, "", f"stopped after {time.perf_counter() - started:.0f} s", "",
                       "its command ran past the time left", "**not met**"]
            except Exception as exc:  # one failing workload must not stop the rest
                traceback.print_exc()
                row = [name, "", "failed", "", f"{type(exc).__name__}: "
                       f"{str(exc).splitlines()[0][:200] if str(exc) else ''}", "**not met**"]
            device.free_pool()
            print(f"  {row} ({time.perf_counter() - started:.1f} s)", flush=True)
            section.rows.append(row)
            if on_row is not None:
                on_row(section)
    return section


def install(path: Path) -> None:
    """Replace the GPU section of docs/benchmarks.md with the one in ``path``."""
    text = path.read_text()
    if not text.startswith(MARK) or "## GPU: CPU" in text:
        raise SystemExit(f"{path}: not a GPU section written by benchmarks/gpu.py on a GPU")
    docs = DOCS.read_text()
    pattern = re.escape(MARK) + r"\n.*?(?=<!-- benchmark:|\Z)"
    docs = re.sub(pattern, lambda _: text.rstrip() + "\n\n", docs, flags=re.S) \
        if MARK in docs else docs.rstrip() + "\n\n" + text
    DOCS.write_text(docs)
    print(f"wrote the GPU section into {DOCS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["gpu", "cpu"], default="gpu")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    parser.add_argument("--only", nargs="*", choices=[*ENGINE, *COMMANDS])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--budget-s", type=float, default=math.inf,
                        help="stop starting workloads (and stop a running command) after this")
    parser.add_argument("--output", type=Path, help="write the section (markdown) here")
    parser.add_argument("--install", type=Path, metavar="FILE",
                        help="put a section written by --output on a GPU into "
                             "docs/benchmarks.md, and stop")
    args = parser.parse_args()
    if args.install:
        install(args.install)
        return
    started = time.perf_counter()
    where = ("on the lent GPU machine (tools/device_check.sh)" if args.device == "gpu"
             else "on the CPU")

    def text(section: Section) -> str:
        stamp = (f"_measured {time.strftime('%Y-%m-%d')} by `python benchmarks/gpu.py"
                 f"{' --quick' if args.quick else ''}` {where}, "
                 f"{time.perf_counter() - started:.0f} s_\n\n")
        return f"{MARK}\n{stamp}{section.markdown()}"

    def save(section: Section) -> None:
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text(section))

    section = run(args.device, QUICK if args.quick else FULL, args.only, args.repeats,
                  args.budget_s, on_row=save)
    save(section)
    print(text(section))


if __name__ == "__main__":
    main()
