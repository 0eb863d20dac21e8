"""Starting runner processes exactly as the command line does.

A run launched from the GUI is ``python -m cryoweave.cli run-protocol --continue ID`` in its own
session (so it survives the GUI and its terminal), writing to the run's ``logs/process.log``.
Arguments are a list (no shell). The GUI reaps its children in a thread so that a killed runner
does not linger as a zombie that still looks alive.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

EXECUTORS = ("threads", "processes", "dask")
DEVICES = ("auto", "cpu", "gpu")


def runner_command(project_root: Path, run_id: int, *, workers: int | None = None,
                   executor: str = "threads", device: str | None = None,
                   queue: str | None = None) -> list[str]:
    """The runner's command line; ``workers=None`` lets the protocol choose how many steps run
    at once (e.g. ReconstructFourier's two halves side by side), as ``run-protocol`` does."""
    command = [sys.executable, "-m", "cryoweave.cli", "run-protocol", "--continue",
               str(int(run_id)), "--project", str(project_root), "--quiet",
               "--executor", executor]
    if workers is not None:
        command += ["--workers", str(int(workers))]
    if device:
        command += ["--device", device]
    if queue:
        command += ["--queue", queue]
    return command


def launch_runner(project_root: Path, run_id: int, run_folder: Path, **options: object
                  ) -> int:
    """Start the runner of ``run_id`` detached; returns its pid."""
    log_path = run_folder / "logs" / "process.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            runner_command(project_root, run_id, **options),  # type: ignore[arg-type]
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=project_root, start_new_session=True, close_fds=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    threading.Thread(target=process.wait, name=f"reap-runner-{run_id}", daemon=True).start()
    return process.pid
