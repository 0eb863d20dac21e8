"""Real services for tests, started as subprocesses and stopped by PID: Dask and Slurm."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import subprocess_env

START_TIMEOUT_S = 30.0  # only bounds a failing start


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def stop_process(process: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


class DaskCluster:
    """A ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self._logs: list = []

    def _spawn(self, args: list[str], name: str, prefix: list[str] | None = None
               ) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "a")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        return subprocess.Popen([*(prefix or []), sys.executable, *args], stdout=log,
                                stderr=subprocess.STDOUT, env=subprocess_env(),
                                cwd=self.folder)

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn(["-m", "distributed.cli.dask_scheduler", "--host",
                                      "127.0.0.1", "--port", str(self.port),
                                      "--dashboard-address", ":0", "--no-show"], "scheduler")

    def start_worker(self, name: str, resources: str = "", prefix: list[str] | None = None
                     ) -> subprocess.Popen:
        args = ["-m", "distributed.cli.dask_worker", self.address, "--no-nanny", "--nthreads",
                "1", "--name", name, "--host", "127.0.0.1", "--no-dashboard",
                "--death-timeout", "60"]
        if resources:
            args += ["--resources", resources]
        worker = self._spawn(args, f"worker-{name}", prefix)
        self.workers.append(worker)
        return worker

    def wait_for_workers(self, n: int) -> dict[str, int]:
        """Worker name -> pid once ``n`` workers are connected."""
        from distributed import Client

        with Client(self.address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(n, timeout=START_TIMEOUT_S)
            pids = client.run(os.getpid)
            info = client.scheduler_info()["workers"]
            return {str(info[address]["name"]): pid for address, pid in pids.items()}

    def log_text(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.folder.glob("*.log")))

    def stop(self, sig: int = signal.SIGTERM) -> None:
        for worker in self.workers:
            stop_process(worker, sig)
        if self.scheduler is not None:
            stop_process(self.scheduler, sig)
        for log in self._logs:
            log.close()
        self.workers, self.scheduler, self._logs = [], None, []
