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


SLURM_BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel")


class SlurmCluster:
    """A one-node Slurm cluster (munged, slurmctld, slurmd) configured in a temporary folder.

    Ports on 127.0.0.1; the node advertises one GPU as a generic resource (``File=/dev/null``:
    placement only, nothing computes on it). Accounting storage is off (no slurmdbd), so
    ``sacct`` has nothing to say; finished jobs are logged by ``jobcomp/filetxt`` instead.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.conf = folder / "slurm.conf"
        self.jobcomp = folder / "jobcomp.txt"
        self.partition = "cwq"
        self.processes: list[subprocess.Popen] = []
        self._logs: list = []

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        host = socket.gethostname()
        folder = self.folder
        for sub in ("state", "spool", "log"):
            (folder / sub).mkdir()
        munge = folder / "munge"
        munge.mkdir(mode=0o755)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(f"""\
ClusterName=cryoweave
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge / "socket"}
CredType=cred/munge
StateSaveLocation={folder / "state"}
SlurmdSpoolDir={folder / "spool"}
SlurmctldPidFile={folder / "slurmctld.pid"}
SlurmdPidFile={folder / "slurmd.pid"}
SlurmctldLogFile={folder / "log" / "slurmctld.log"}
SlurmdLogFile={folder / "log" / "slurmd.log"}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
PlugStackConfig=/dev/null
NodeName=cwnode NodeHostname={host} NodeAddr=127.0.0.1 CPUs=2 RealMemory=2000 Gres=gpu:1
PartitionName={self.partition} Nodes=cwnode Default=YES MaxTime=INFINITE State=UP
""")
        (folder / "gres.conf").write_text("NodeName=cwnode Name=gpu Count=1 File=/dev/null\n")

    def _spawn(self, args: list[str], name: str) -> None:
        log = open(self.folder / "log" / f"{name}.out", "a")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        env = {**os.environ, **self.env}
        self.processes.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                               env=env, cwd=self.folder))

    def start(self) -> None:
        self._write_config()
        munge = self.folder / "munge"
        self._spawn(["munged", "--foreground", "--force", f"--socket={munge / 'socket'}",
                     f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'pid'}",
                     f"--seed-file={munge / 'seed'}", f"--log-file={munge / 'log'}"], "munged")
        wait_until(lambda: (munge / "socket").exists(), START_TIMEOUT_S, "munged")
        self._spawn(["slurmctld", "-D", "-f", str(self.conf)], "slurmctld")
        self._spawn(["slurmd", "-D", "-f", str(self.conf), "-N", "cwnode"], "slurmd")
        wait_until(self._node_idle, START_TIMEOUT_S, "the Slurm node to be idle")

    def _node_idle(self) -> bool:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args[0]} exited: {self.log_text()}")
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                              env={**os.environ, **self.env}, timeout=30)
        return done.stdout.strip() == "idle"

    def squeue(self) -> list[str]:
        done = subprocess.run(["squeue", "-h", "-o", "%i %j %T %b"], capture_output=True,
                              text=True, env={**os.environ, **self.env}, timeout=30)
        return done.stdout.split("\n") if done.stdout.strip() else []

    def log_text(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()}"
                         for p in sorted((self.folder / "log").glob("*")) if p.is_file())

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "-u", "root"], env={**os.environ, **self.env},
                       capture_output=True, timeout=30)
        for process in reversed(self.processes):
            stop_process(process)
        for log in self._logs:
            log.close()
        self.processes, self._logs = [], []
