"""Executors run step functions: in threads (default), in local processes, or on Dask.

Workers only compute and read/write files; only the runner writes the database. A worker
receives the step function's import path, its JSON arguments and a :class:`StepContext`.

Just over 400 lines: the three executors share the worker entry point and the device
assignment of GPU steps; split it when a fourth executor arrives.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cryoweave.errors import CryoweaveError
from cryoweave.plugin import StepContext, StepResult, resolve_function

log = logging.getLogger(__name__)


def execute_step(func_path: str, args: dict[str, Any], ctx: StepContext,
                 declared_outputs: list[str]) -> tuple[StepResult, float]:
    """Run one step function (in whatever worker); check its declared outputs exist."""
    _attach_run_log(ctx)
    start = time.perf_counter()
    func = resolve_function(func_path)
    from cryoweave.engine import thread_budget

    with _gpu_scope(ctx), thread_budget(ctx.threads):  # the engine's threads: the step's share
        result = func(ctx, **args)
    if result is None:
        result = StepResult()
    if not isinstance(result, StepResult):
        raise TypeError(f"step function {func_path} returned {type(result).__name__}, "
                        "expected StepResult or None")
    excused = set(result.excused_outputs)
    missing = [p for p in declared_outputs
               if p not in excused and not (ctx.run_dir / p).exists()]
    if missing:
        raise RuntimeError(f"declared output(s) not written: {', '.join(missing)}")
    return result, time.perf_counter() - start


# No dashboard; the scheduler's own HTTP routes (health, metrics) on a free port: with the
# default (8787) a second workflow on the machine warned "Port 8787 is already in use"
_NO_DASHBOARD: dict[str, Any] = {"dashboard": False, "dashboard_address": ":0"}


class ProjectNotVisible(CryoweaveError):
    """A worker cannot see the project folder (it is not on a shared filesystem)."""


def execute_remote_step(func_path: str, args: dict[str, Any], ctx: StepContext,
                        declared_outputs: list[str]) -> tuple[StepResult, float]:
    """:func:`execute_step` on a worker of another machine: check the shared folder first."""
    if not Path(ctx.run_dir).is_dir():
        raise ProjectNotVisible(
            f"worker {socket.gethostname()} (pid {os.getpid()}) cannot see the project folder: "
            f"{ctx.run_dir} does not exist there; the project folder must be on a filesystem "
            "shared with the queue's workers, at the same path")
    return execute_step(func_path, args, ctx, declared_outputs)


@contextlib.contextmanager
def _gpu_scope(ctx: StepContext) -> Iterator[None]:
    """Make the step's assigned GPU the current CuPy device (when it computes on a GPU)."""
    if ctx.gpu_id is None or ctx.device != "gpu" or not ctx.gpu_id.isdigit():
        yield
        return
    import cupy

    with cupy.cuda.Device(int(ctx.gpu_id)):
        yield


def _portable(ctx: StepContext) -> StepContext:
    """The context without its progress callback (which cannot leave this process)."""
    return dataclasses.replace(ctx, progress_callback=None)


def _attach_run_log(ctx: StepContext) -> None:
    logger = ctx.logger
    log_path = Path(ctx.run_dir) / "logs" / "run.log"
    if not any(getattr(h, "baseFilename", None) == str(log_path) for h in logger.handlers):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


class Executor:
    """Submit step calls; poll for finished ones."""

    name = "base"

    def submit(self, func_path: str, args: dict[str, Any], ctx: StepContext,
               outputs: list[str], resources: dict[str, Any] | None = None) -> Any:
        raise NotImplementedError

    def capacity(self) -> int | None:
        """Steps this executor can run at the same time, when it knows (clusters)."""
        return None

    def step_threads(self, resources: dict[str, Any], default: int) -> int:
        """Engine threads a step gets (a cluster gives the cpus the step reserved)."""
        return default

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """Handles that finished within ``timeout`` seconds (possibly none)."""
        done, _ = cf.wait(handles, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return list(done)

    @staticmethod
    def outcome(handle: Any) -> tuple[StepResult, float]:
        return handle.result()

    def shutdown(self) -> None:
        pass


class ThreadExecutor(Executor):
    name = "threads"

    def __init__(self, workers: int):
        self.pool = cf.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="step")

    def submit(self, func_path, args, ctx, outputs, resources=None):  # type: ignore[no-untyped-def]
        return self.pool.submit(execute_step, func_path, args, ctx, outputs)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class ProcessExecutor(Executor):
    """A local process pool (spawned: workers never inherit database connections)."""

    name = "processes"

    def __init__(self, workers: int):
        self.pool = cf.ProcessPoolExecutor(max_workers=workers,
                                           mp_context=multiprocessing.get_context("spawn"))

    def submit(self, func_path, args, ctx, outputs, resources=None):  # type: ignore[no-untyped-def]
        return self.pool.submit(execute_step, func_path, args, _portable(ctx), outputs)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class SchedulerLost(CryoweaveError):
    """The connection to the Dask scheduler was lost during a run."""


class DaskExecutor(Executor):
    """Dask distributed: a scheduler address (``tcp://host:8786``) or a local cluster.

    A step's resources become Dask worker resources: a GPU step needs ``GPU=1`` (it runs only
    on workers that advertise a GPU); where workers advertise ``CPU`` or ``MEM`` (GB), a step
    reserves its ``cpus`` and ``mem_gb`` of them. A worker lost mid-step (killed, or its job hit
    its walltime) makes Dask run the step again on another worker; the runner records it once.
    """

    name = "dask"

    def __init__(self, workers: int, address: str | None = None, *, queue_name: str = "",
                 connect_timeout_s: float = 10.0):
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise RuntimeError("the Dask executor needs `pip install cryoweave[dask]`") from exc
        self.address = address
        self.queue_name = queue_name
        self._cluster: Any = None
        if address:
            try:
                self.client = Client(address, timeout=connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                raise SchedulerLost(self._where() + f": cannot connect to the Dask scheduler at "
                                    f"{address} ({exc}); is it running?") from exc
        else:
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                         processes=True, dashboard_address=None,
                                         scheduler_kwargs=_NO_DASHBOARD)
            self.client = Client(self._cluster)

    def _where(self) -> str:
        return f"queue {self.queue_name!r}" if self.queue_name else "the Dask executor"

    def _worker_resources(self) -> list[dict[str, float]]:
        info = self.client.scheduler_info()
        return [dict(w.get("resources") or {}) for w in info.get("workers", {}).values()]

    def _worker_threads(self) -> int:
        info = self.client.scheduler_info()
        return sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values())

    def capacity(self) -> int | None:
        return self._worker_threads() or None

    def dask_resources(self, resources: dict[str, Any]) -> dict[str, float]:
        """The Dask resources a step with these declared resources asks for.

        None on a local cluster of this machine (a local queue: no worker advertises any).
        """
        if self._cluster is not None and self.name == "dask":
            return {}
        advertised = self._expected_resources()
        wanted: dict[str, float] = {}
        if resources.get("gpu"):
            wanted["GPU"] = 1
        if any("CPU" in w for w in advertised):
            wanted["CPU"] = max(1, int(resources.get("cpus") or 1))
        mem_gb = float(resources.get("mem_gb") or 0)
        if mem_gb > 0 and any("MEM" in w for w in advertised):
            wanted["MEM"] = mem_gb
        if wanted and not any(all(w.get(k, 0) >= v for k, v in wanted.items())
                              for w in advertised):
            shown = ", ".join(f"{k}={v:g}" for k, v in wanted.items())
            have = "; ".join(", ".join(f"{k}={v:g}" for k, v in w.items()) or "none"
                             for w in advertised) or "no workers"
            raise CryoweaveError(
                f"{self._where()}: no worker can run a step that needs {shown} (workers "
                f"advertise: {have}); start workers with e.g. `dask worker ADDRESS "
                "--resources GPU=1` or choose another queue")
        return wanted

    def _expected_resources(self) -> list[dict[str, float]]:
        return self._worker_resources()

    def step_threads(self, resources: dict[str, Any], default: int) -> int:
        if self._cluster is not None and self.name == "dask":  # a local cluster
            return default
        return max(1, int(resources.get("cpus") or 1))

    def submit(self, func_path, args, ctx, outputs, resources=None):  # type: ignore[no-untyped-def]
        self._check_connected()
        wanted = self.dask_resources(resources or {})
        return self.client.submit(execute_remote_step, func_path, args, _portable(ctx), outputs,
                                  pure=False, resources=wanted or None)

    def _check_connected(self) -> None:
        if self.client.status != "running":
            raise SchedulerLost(self._lost_message())

    def _lost_message(self) -> str:
        return (f"{self._where()}: lost the connection to the Dask scheduler"
                f"{' at ' + self.address if self.address else ''}; the steps finished so far "
                "are recorded: start the scheduler again and resume with --continue")

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        from distributed import wait as dask_wait
        from distributed.client import FuturesCancelledError

        if self.client.status != "running":  # reconnecting: its tasks are lost anyway
            raise SchedulerLost(self._lost_message())
        try:
            done, _ = dask_wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            done = set()
        except (FuturesCancelledError, cf.CancelledError) as exc:
            raise SchedulerLost(self._lost_message()) from exc
        if self.client.status != "running" or any(h.status == "cancelled" for h in done):
            raise SchedulerLost(self._lost_message())
        return list(done)

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=10)
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close(timeout=30)


class JobqueueExecutor(DaskExecutor):
    """Dask workers started as batch jobs (Slurm, PBS, SGE) by dask-jobqueue.

    Each job runs one worker that advertises ``CPU=cores``, ``MEM=memory`` (GB) and, with
    ``gpus``, ``GPU=gpus`` (requested from the batch system as its generic resource).
    """

    name = "jobqueue"

    def __init__(self, queue: Any, *, queue_name: str, log_dir: Path):
        self.address = None
        self.queue_name = queue_name
        self.queue = queue
        try:
            import dask_jobqueue
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise CryoweaveError(f"queue {queue_name!r} ({queue.kind}) needs dask-jobqueue: "
                                 "`pip install cryoweave[dask]`") from exc
        cluster_class = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster,
                         "sge": dask_jobqueue.SGECluster}[queue.kind]
        log_dir.mkdir(parents=True, exist_ok=True)
        self._cluster = cluster_class(**jobqueue_options(queue, log_dir))
        self._cluster.adapt(minimum_jobs=0, maximum_jobs=queue.max_jobs, interval="500ms")
        self.client = Client(self._cluster)

    def _expected_resources(self) -> list[dict[str, float]]:
        return [self.resources_per_job(self.queue)]

    @staticmethod
    def resources_per_job(queue: Any) -> dict[str, float]:
        resources = {"CPU": float(queue.cores), "MEM": float(queue.memory_gb)}
        if queue.gpus:
            resources["GPU"] = float(queue.gpus)
        return resources

    def capacity(self) -> int | None:
        return self.queue.max_jobs * self.queue.cores


def jobqueue_options(queue: Any, log_dir: Path) -> dict[str, Any]:
    """dask-jobqueue cluster arguments for a queue configuration."""
    import sys

    resources = ",".join(f"{k}={v:g}" for k, v in
                         JobqueueExecutor.resources_per_job(queue).items())
    directives = list(queue.directives)
    if queue.gpus and queue.kind == "slurm":
        directives.append(f"--gres=gpu:{queue.gpus}")
    elif queue.gpus and queue.kind == "pbs":
        directives.append(f"-l ngpus={queue.gpus}")
    elif queue.gpus and queue.kind == "sge":
        directives.append(f"-l gpu={queue.gpus}")
    options: dict[str, Any] = {
        "cores": queue.cores, "processes": 1, "memory": queue.memory,
        "job_script_prologue": list(queue.prologue), "job_extra_directives": directives,
        "worker_extra_args": ["--resources", resources],
        "python": queue.python or sys.executable, "log_directory": str(log_dir),
        "job_name": f"cryoweave-{queue.kind}",
        "scheduler_options": {**_NO_DASHBOARD,
                              **({"host": queue.scheduler_host} if queue.scheduler_host
                                 else {})},
    }
    if queue.walltime:
        options["walltime"] = queue.walltime
    if queue.account:
        options["account"] = queue.account
    if queue.partition:
        options["queue"] = queue.partition
    return options


EXECUTORS: dict[str, Callable[..., Executor]] = {
    "threads": ThreadExecutor,
    "processes": ProcessExecutor,
    "dask": DaskExecutor,
}


def make_executor(kind: str, workers: int, address: str | None = None) -> Executor:
    if kind not in EXECUTORS:
        raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
    if kind == "dask":
        return DaskExecutor(workers, address or os.environ.get("CRYOWEAVE_DASK_SCHEDULER"))
    return EXECUTORS[kind](workers)


def make_queue_executor(queue_name: str, queue: Any, *, executor: str, workers: int,
                        log_dir: Path, address: str | None = None) -> Executor:
    """The executor of a configured queue (a ``local`` queue uses ``executor``)."""
    if queue.kind == "local":
        return make_executor(executor, workers, address)
    if queue.kind == "dask":
        return DaskExecutor(workers, queue.address, queue_name=queue_name)
    return JobqueueExecutor(queue, queue_name=queue_name, log_dir=log_dir)


def probe_step(ctx: StepContext) -> StepResult:
    """A trivial step (``cryoweave config check-queue``): where it ran, what it saw."""
    return StepResult(info={"host": socket.gethostname(), "pid": os.getpid(),
                            "threads": ctx.threads,
                            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "sees_folder": Path(ctx.run_dir).is_dir()})


def check_queue(queue_name: str, queue: Any, folder: Path, *, gpu: bool = False,
                timeout_s: float = 300.0) -> dict[str, Any]:
    """Submit :func:`probe_step` to a queue and wait for it; returns what the step saw.

    ``folder`` (in the project) must be visible to the workers, as a run folder is.
    """
    folder.mkdir(parents=True, exist_ok=True)
    executor = make_queue_executor(queue_name, queue, executor="threads", workers=1,
                                   log_dir=folder / "logs" / "workers")
    start = time.perf_counter()
    try:
        ctx = StepContext(0, "check-queue", folder, 1, "cpu")
        handle = executor.submit(f"{__name__}:probe_step", {}, ctx, [],
                                 {"cpus": 1, "gpu": gpu, "mem_gb": 0})
        deadline = time.monotonic() + timeout_s
        while not executor.wait([handle], 0.5):
            if time.monotonic() > deadline:
                raise CryoweaveError(f"queue {queue_name!r}: the test job did not run within "
                                     f"{timeout_s:.0f} s (is the queue full, or are workers "
                                     "unable to start? see the job logs in "
                                     f"{folder / 'logs' / 'workers'})")
        result, _ = executor.outcome(handle)
    finally:
        executor.shutdown()
    return {**result.info, "seconds": round(time.perf_counter() - start, 2)}
