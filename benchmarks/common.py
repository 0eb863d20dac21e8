"""Shared helpers for the side-by-side benchmarks (timing, machine facts, markdown)."""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Section:
    """One benchmark's part of docs/benchmarks.md."""

    title: str
    intro: str
    header: Sequence[str]
    rows: list[Sequence[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"## {self.title}", "", self.intro, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes] + [""]
        return "\n".join(lines)


def best_of(repeats: int, func: Callable[[], object]) -> float:
    """The fastest of ``repeats`` wall-clock timings of ``func()`` (seconds)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return min(times)


def run_timed(command: Sequence[str], cwd: str | os.PathLike | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({done.returncode}) in "
                           f"{cwd}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started


def cryoweave_command(*args: str) -> list[str]:
    """The ``cryoweave`` command as a user types it: what the installed console script runs,
    by this interpreter (so it also works from a checkout with ``PYTHONPATH=src``)."""
    script = "import sys; from cryoweave.cli import main; sys.argv[0] = 'cryoweave'; main()"
    return [sys.executable, "-c", script, *args]


def alternate(commands: dict[str, Callable[[int], float]], repeats: int) -> dict[str, list[float]]:
    """Time each of ``commands`` (round ``k`` -> seconds) ``repeats`` times, one after the other
    in turn, so that a busy moment on the shared machine hits every tool alike."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for k in range(repeats):
        for name, command in commands.items():
            times[name].append(command(k))
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def runs_text(values: Sequence[float], digits: int = 2) -> str:
    """"2.51 (2.49, 2.51, 2.60)": the median and every run."""
    return f"{median(values):.{digits}f} ({', '.join(f'{v:.{digits}f}' for v in values)})"


def busy_cores(seconds: float = 2.0) -> float | None:
    """Cores busy on the machine (all processes, /proc/stat) over ``seconds``, before a
    benchmark: other users' load slows the multi-threaded side more than single-threaded
    RELION. None where /proc/stat is missing."""
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


def load_note(busy: float | None, when: str = "before the timed runs") -> str:
    """The busy-core figure for a section's notes (and printed when measured)."""
    if busy is None:
        return "other load: unknown (no /proc/stat)"
    text = f"other load {when}: {busy:.1f} of {os.cpu_count()} cores busy"
    print(text, flush=True)
    return text


def relion_version() -> str | None:
    if shutil.which("relion_refine") is None and shutil.which("relion_image_handler") is None:
        return None
    try:
        result = subprocess.run(["relion_refine", "--version"], capture_output=True, text=True,
                                timeout=30)
        text = (result.stdout + result.stderr).strip().splitlines()
        return next((t for t in text if "RELION" in t.upper()), text[0] if text else "RELION")
    except (OSError, subprocess.SubprocessError):
        return "RELION (version unknown)"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){memory}, Python {platform.python_version()}"


def rate(count: float, seconds: float) -> str:
    return f"{count / seconds:,.0f}" if seconds > 0 else "∞"


def step_times(project: str | os.PathLike, protocol: str) -> list[tuple[str, float]]:
    """(step key, seconds) of each step the last ``protocol`` run of ``project`` finished, in
    the order its run log says they finished."""
    logs = sorted(Path(project).glob(f"Runs/*_{protocol}/logs/run.log"))
    if not logs:
        return []
    return [(key, float(seconds)) for key, seconds in
            re.findall(r"step (\S+) done in ([0-9.]+) s", logs[-1].read_text())]
