"""Progress display for runs (on stderr, so ``--json`` output on stdout stays clean).

On a terminal: rich progress bars. When stderr is not a terminal (a log file, a pipe, a batch
job): one plain line per finished step, with its time and the resolution when the step
reports one, so an unattended run shows that it works.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cryoweave.workflow import RunProgress

# info keys a step may report that hold a resolution in Å, most telling first
RESOLUTION_KEYS = ("resolution_0143_a", "fsc0143_interpolated", "resolution_a")
MIN_RATE_WINDOW_S = 0.5


def rate_text(first_done: int, first_time: float, done: int, now: float) -> str:
    """Items per second since the first report of a step (``""`` until half a second of
    progress): the items done before the first report are not counted as done in no time."""
    elapsed = now - first_time
    if elapsed < MIN_RATE_WINDOW_S or done <= first_done:
        return ""
    rate = (done - first_done) / elapsed
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.2g}/s"


def step_line(key: str, ok: bool, seconds: float, info: dict[str, Any] | None) -> str:
    """The plain line printed for a finished step when stderr is not a terminal."""
    line = f"step {key} {'done' if ok else 'FAILED'} in {seconds:.1f} s"
    info = info or {}
    for name in RESOLUTION_KEYS:
        value = info.get(name)
        if isinstance(value, int | float):
            line += f", resolution {value:.2f} Å"
            break
    if isinstance(info.get("iteration"), int):
        line += f" (iteration {info['iteration']})"
    return line


class RichRunProgress(RunProgress):
    """One bar for the run's steps, plus a bar per running step that reports progress.

    ``plain`` (default: when the console is not a terminal) prints one line per finished
    step instead of bars.
    """

    def __init__(self, console: Console | None = None, *, enabled: bool = True,
                 plain: bool | None = None):
        # a LazyConsole of the CLI hands over its rich Console
        self.console = getattr(console, "console", console) or Console(stderr=True)
        self.plain = (not self.console.is_terminal) if plain is None else plain
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False, disable=not enabled or self.plain)
        self._run_task: TaskID | None = None
        # key -> (task, done at the first report, time of the first report)
        self._steps: dict[str, tuple[TaskID, int, float]] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichRunProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def run_started(self, run_id: int, title: str) -> None:
        with self._lock:
            self._run_task = self.progress.add_task(f"run {title}", total=None, rate="steps")

    def steps_changed(self, done: int, total: int) -> None:
        if self._run_task is not None:
            self.progress.update(self._run_task, completed=done, total=total)

    def step_started(self, key: str, label: str) -> None:
        pass

    def step_progress(self, key: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        with self._lock:
            if key not in self._steps:
                self._steps[key] = (self.progress.add_task(f"  {key}", total=total, rate=""),
                                    done, now)
            task, first_done, first_time = self._steps[key]
        self.progress.update(task, completed=done, total=total,
                             rate=rate_text(first_done, first_time, done, now))

    def step_info(self, key: str, info: dict[str, Any]) -> None:
        with self._lock:
            self._info[key] = info

    def step_finished(self, key: str, ok: bool, seconds: float) -> None:
        with self._lock:
            entry = self._steps.pop(key, None)
            info = self._info.pop(key, None)
        if entry is not None:
            self.progress.remove_task(entry[0])
        if self.plain and self.enabled:
            self.console.print(step_line(key, ok, seconds, info), highlight=False,
                               soft_wrap=True)

    def message(self, text: str) -> None:
        self.progress.console.print(text)
