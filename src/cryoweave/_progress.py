"""Rich progress display for runs (on stderr, so ``--json`` output on stdout stays clean)."""

from __future__ import annotations

import threading
import time

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

from cryoweave.workflow.runner import RunProgress


class RichRunProgress(RunProgress):
    """One bar for the run's steps, plus a bar per running step that reports progress."""

    def __init__(self, console: Console | None = None, *, enabled: bool = True):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, transient=False, disable=not enabled)
        self._run_task: TaskID | None = None
        self._steps: dict[str, tuple[TaskID, float]] = {}
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
        with self._lock:
            if key not in self._steps:
                self._steps[key] = (self.progress.add_task(f"  {key}", total=total, rate=""),
                                    time.perf_counter())
            task, started = self._steps[key]
        elapsed = time.perf_counter() - started
        rate = f"{done / elapsed:,.0f}/s" if elapsed > 0 else ""
        self.progress.update(task, completed=done, total=total, rate=rate)

    def step_finished(self, key: str, ok: bool, seconds: float) -> None:
        with self._lock:
            entry = self._steps.pop(key, None)
        if entry is not None:
            self.progress.remove_task(entry[0])

    def message(self, text: str) -> None:
        self.progress.console.print(text)
