"""Executors run step functions: in threads (default), in local processes, or on Dask.

Workers only compute and read/write files; only the runner writes the database. A worker
receives the step function's import path, its JSON arguments and a :class:`StepContext`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryoweave.plugin._plan import StepContext, StepResult, resolve_function

log = logging.getLogger(__name__)


def execute_step(func_path: str, args: dict[str, Any], ctx: StepContext,
                 declared_outputs: list[str]) -> tuple[StepResult, float]:
    """Run one step function (in whatever worker); check its declared outputs exist."""
    _attach_run_log(ctx)
    start = time.perf_counter()
    func = resolve_function(func_path)
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
               outputs: list[str]) -> Any:
        raise NotImplementedError

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

    def submit(self, func_path, args, ctx, outputs):  # type: ignore[no-untyped-def]
        return self.pool.submit(execute_step, func_path, args, ctx, outputs)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class ProcessExecutor(Executor):
    """A local process pool (spawned: workers never inherit database connections)."""

    name = "processes"

    def __init__(self, workers: int):
        self.pool = cf.ProcessPoolExecutor(max_workers=workers,
                                           mp_context=multiprocessing.get_context("spawn"))

    def submit(self, func_path, args, ctx, outputs):  # type: ignore[no-untyped-def]
        ctx = StepContext(ctx.run_id, ctx.step_key, ctx.run_dir, ctx.threads, ctx.device, None)
        return self.pool.submit(execute_step, func_path, args, ctx, outputs)

    def shutdown(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """Dask distributed: a scheduler address (``tcp://host:8786``) or a local cluster."""

    name = "dask"

    def __init__(self, workers: int, address: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - depends on the extra
            raise RuntimeError("the Dask executor needs `pip install cryoweave[dask]`") from exc
        if address:
            self.client = Client(address)
            self._cluster = None
        else:
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1,
                                         processes=True, dashboard_address=None)
            self.client = Client(self._cluster)

    def submit(self, func_path, args, ctx, outputs):  # type: ignore[no-untyped-def]
        ctx = StepContext(ctx.run_id, ctx.step_key, ctx.run_dir, ctx.threads, ctx.device, None)
        return self.client.submit(execute_step, func_path, args, ctx, outputs, pure=False)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        from distributed import wait as dask_wait

        try:
            done, _ = dask_wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        return list(done)

    def shutdown(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()


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
