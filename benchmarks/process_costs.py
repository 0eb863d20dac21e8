"""Three costs of a command's process that are not the numerics, measured on this machine.

1. **Touching memory.** Each round allocates and fills 1 GiB in 64 MiB blocks (NumPy
   temporaries of that size), frees it, waits, and does it again; with glibc's defaults the
   blocks go back to the kernel when freed and every page is zeroed again when touched, with
   `retain_freed_memory()` (what the compute commands call, `cryoweave.cli._memory`) they are
   reused. The first round of a process always touches fresh memory.
2. **Exiting.** Time from the last statement to the process's end after importing what a
   reconstruction imports (pandas, SciPy, matplotlib, SQLAlchemy, the runtime and the
   protocol), with and without `gc.freeze()` at exit (what `cryoweave.cli.main` registers).
3. **Writing a new file.** 328 MiB (the stack `cryoweave downsample` writes for 5,000 images
   of 128²) written with `pwrite` in 2 MiB blocks into a new file in the system's temporary
   folder: into fresh page-cache pages, and right after deleting a file of the same size (the
   kernel reuses the pages it just freed). Every tool that writes that stack pays the first.

    python benchmarks/process_costs.py [--rounds 3] [--pause 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOUCH = """
import sys, time
sys.path.insert(0, {src!r})
from cryoweave.cli._memory import retain_freed_memory
retained = retain_freed_memory() if {retain} else False
import numpy as np
times = []
for _ in range({rounds}):
    started = time.perf_counter()
    blocks = [np.ones(8 << 20) for _ in range(16)]  # 16 x 64 MiB, each page written
    times.append(time.perf_counter() - started)
    del blocks
    time.sleep({pause})
print(retained, *times)
"""

EXIT = """
import sys, time
sys.path.insert(0, {src!r})
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot, pandas, scipy.fft, scipy.sparse, sqlalchemy
import cryoweave.workflow.runner, cryoweave.protocols.reconstruction.reconstruct_fourier
if {freeze}:
    import atexit, gc
    atexit.register(gc.freeze)
print(repr(time.time()), flush=True)
"""


def touch_times(src: str, retain: bool, rounds: int, pause: float) -> tuple[bool, list[float]]:
    code = TOUCH.format(src=src, retain=retain, rounds=rounds, pause=pause)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "CRYOWEAVE_RETAIN_MEMORY": "1"})
    first, *times = out.stdout.split()
    return first == "True", [float(t) for t in times]


def exit_seconds(src: str, freeze: bool) -> float:
    out = subprocess.run([sys.executable, "-c", EXIT.format(src=src, freeze=freeze)],
                         capture_output=True, text=True, check=True)
    return time.time() - float(out.stdout.split()[-1])


def write_seconds(path: Path, mib: int = 328) -> float:
    block = os.urandom(2 << 20)
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(mib // 2):
            os.pwrite(fd, block, i * len(block))
    finally:
        os.close(fd)
    return time.perf_counter() - started


def write_times(rounds: int) -> tuple[list[float], list[float]]:
    fresh, reused = [], []
    with tempfile.TemporaryDirectory(prefix="cw-write-") as tmp:
        folder = Path(tmp)
        for k in range(rounds):
            fresh.append(write_seconds(folder / f"fresh{k}"))  # kept: its pages stay in use
        for k in range(rounds):
            (folder / f"fresh{k}").unlink()
            reused.append(write_seconds(folder / f"reused{k}"))
    return fresh, reused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pause", type=float, default=3.0,
                        help="seconds between rounds (freed memory goes back to the host)")
    parser.add_argument("--exits", type=int, default=5)
    args = parser.parse_args()
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    print(f"1 GiB allocated and written, {args.rounds} rounds {args.pause:g} s apart "
          "(seconds per round):")
    for retain in (False, True):
        retained, times = touch_times(src, retain, args.rounds, args.pause)
        label = "retained (retain_freed_memory)" if retain else "glibc defaults"
        note = "" if retained == retain else " [retain_freed_memory() had no effect here]"
        print(f"  {label:32s} " + "  ".join(f"{t:.2f}" for t in times) + note)
    print(f"interpreter exit after the imports (median of {args.exits} processes):")
    for freeze in (False, True):
        median = statistics.median(exit_seconds(src, freeze) for _ in range(args.exits))
        print(f"  {'gc.freeze() at exit' if freeze else 'plain exit':32s} {median:.2f} s")
    fresh, reused = write_times(args.rounds)
    print(f"328 MiB written to a new file ({args.rounds} files, seconds each):")
    print(f"  {'into fresh page-cache pages':32s} " + "  ".join(f"{t:.2f}" for t in fresh))
    print(f"  {'just after deleting a file':32s} " + "  ".join(f"{t:.2f}" for t in reused))


if __name__ == "__main__":
    main()
