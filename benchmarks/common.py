"""Shared helpers for the side-by-side benchmarks (timing, machine facts, markdown)."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


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
    subprocess.run(list(command), cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


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
