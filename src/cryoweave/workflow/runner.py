"""The runner: executes a run's plan of keyed steps, records results, resumes, streams.

Only the runner writes the database. A finished step's status, its published items, set
properties and events are recorded in one transaction, which is what makes a run killed at
any moment and continued end with exactly the outputs of an uninterrupted run.

Over 400 lines on purpose: the run loop, step recording and resume share that one-transaction
rule, and keeping them in one module keeps the exactly-once invariant readable in one place.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from cryoweave.errors import CryoweaveError, StepFailed, StopRequested, StorageError
from cryoweave.plugin import ForEachBatch, Plan, PlanContext, Step, StepContext, StepResult
from cryoweave.store import SET_TYPES, Project, SetHandle, pid_alive, queries, set_handle
from cryoweave.store.queries import FAILED_ITEMS_KEY, failed_items
from cryoweave.store.schema import Event, Run, SetRow, StepRow, StreamCursor, StreamUnit
from cryoweave.store.writers import append_items, derive_items, put_optics, retract_items
from cryoweave.workflow._config import QueueConfig, load_config
from cryoweave.workflow._executors import Executor, _attach_run_log, make_queue_executor
from cryoweave.workflow._runs import load_run_protocol
from cryoweave.workflow._streams import BatchStream, StreamBatch, WatchStream

POLL_INTERVAL_S = 0.2
_PARTIAL_WRITE = re.compile(r"\..+\.[0-9a-f]{8}\.part")  # formats._atomic.temporary_path
STOP_CHECK_INTERVAL_S = 0.5


class RunProgress:
    """Progress display interface; the CLI renders it with rich, tests pass nothing."""

    def run_started(self, run_id: int, title: str) -> None: ...
    def steps_changed(self, done: int, total: int) -> None: ...
    def step_started(self, key: str, label: str) -> None: ...
    def step_progress(self, key: str, done: int, total: int | None) -> None: ...
    def step_info(self, key: str, info: dict[str, Any]) -> None: ...
    def step_finished(self, key: str, ok: bool, seconds: float) -> None: ...
    def message(self, text: str) -> None: ...


@dataclass
class _StepState:
    key: str
    func: str
    args: dict[str, Any]
    outputs: list[str]
    after: list[str]
    resources: dict[str, Any]
    label: str
    status: str
    started_at: float | None = None  # wall clock (time.time()) when submitted


@dataclass
class RunSummary:
    run_id: int
    status: str
    error: str | None = None
    steps_run: int = 0
    steps_skipped: int = 0
    seconds: float = 0.0
    outputs: dict[str, int] = field(default_factory=dict)
    failed_items: int = 0  # input items that steps reported as failed (the run goes on)


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: getattr(o, "tolist", lambda: str(o))()))


class Runner:
    """Execute one run of a project (``resume=True`` for ``--continue``)."""

    def __init__(self, project: Project, run_id: int, *, workers: int | None = None,
                 executor: str = "threads", threads: int | None = None, device: str = "cpu",
                 progress: RunProgress | None = None, dask_address: str | None = None,
                 poll_interval_s: float = POLL_INTERVAL_S, queue: str | None = None):
        self.project = project
        self.run_id = run_id
        # None: the plan's `concurrent_steps`, at most the cores (threads per step: all cores)
        self._workers_given = workers
        self.workers = max(1, workers or 1)
        self.executor_kind = executor
        self._threads_given = threads
        # threads per step: given (--threads, engine_threads, CRYOWEAVE_FFT_WORKERS), else the
        # cores shared among the steps that start together (`_step_threads`)
        self.threads = threads or max(1, (os.cpu_count() or 1) // self.workers)
        self._threads_configured = False
        self.device = device
        self.progress = progress or RunProgress()
        self.dask_address = dask_address
        self.poll_interval_s = poll_interval_s
        self.queue = queue  # None: the run's recorded queue, else the configured default
        self.queue_config = QueueConfig(kind="local")
        self.log = logging.getLogger(f"cryoweave.run{run_id}")
        self.steps: dict[str, _StepState] = {}
        self.inputs: dict[str, SetHandle | None] = {}
        self.outputs: dict[str, SetHandle] = {}
        self.salt = ""
        self.summary = RunSummary(run_id, "saved")

    # -- entry point ------------------------------------------------------------------------
    def execute(self, *, resume: bool = False) -> RunSummary:
        start = time.perf_counter()
        self.queue, self.queue_config = self._resolve_queue()
        run = self._claim(resume)
        protocol_cls, params, input_ids = load_run_protocol(run)
        self.salt = f"{protocol_cls.identity()}@{protocol_cls.schema_version}"
        self.run_dir = self.project.run_dir(run)
        for sub in ("extra", "tmp", "logs"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        _attach_run_log(StepContext(self.run_id, "", self.run_dir))
        self.inputs = {n: (set_handle(self.project, sid) if sid is not None else None)
                       for n, sid in input_ids.items()}
        with self.project.reader() as s:
            for row in s.scalars(select(SetRow).where(SetRow.run_id == self.run_id)):
                self.outputs[row.name] = SET_TYPES[row.kind](self.project, row.id)
        self.log.info("run %d (%s) %s", self.run_id, run.protocol,
                      "continued" if resume else "started")
        self.progress.run_started(self.run_id, f"{self.run_id} {protocol_cls.__name__}")
        executor: Executor | None = None
        try:
            if not protocol_cls.streams_inputs:
                self._wait_for_closed_inputs()
            protocol = protocol_cls()
            ctx = PlanContext(self.run_id, self.run_dir, self.inputs, self.device, self.threads,
                              self.project)
            plan = protocol.plan(params, ctx)
            if self._workers_given is None:
                self.workers = max(1, min(plan.concurrent_steps, os.cpu_count() or 1))
            self._load_existing_steps()
            self.register_steps(plan.steps)
            executor = make_queue_executor(self.queue or "local", self.queue_config,
                                           executor=self.executor_kind, workers=self.workers,
                                           log_dir=self.run_dir / "logs" / "workers",
                                           address=self.dask_address)
            self._loop(plan, executor)
            self._finish_checked()
            if self.summary.status == "finished":
                try:
                    self._remove_tmp()
                except OSError as exc:  # the run's results stand; the scratch stays behind
                    self.log.warning("run %d: could not empty tmp/: %s", self.run_id, exc)
        except StopRequested as exc:
            self._finish("aborted", str(exc))
        except KeyboardInterrupt:
            self._finish("aborted", "interrupted")
            raise
        except StepFailed as exc:
            self._finish("failed", str(exc))
        except CryoweaveError as exc:
            self._finish("failed", str(exc))
        except Exception as exc:
            self.log.error("run %d failed:\n%s", self.run_id, traceback.format_exc())
            self._finish("failed", f"{type(exc).__name__}: {exc}")
        finally:
            if executor is not None:
                executor.shutdown()
        self.summary.seconds = time.perf_counter() - start
        self.summary.outputs = {n: h.id for n, h in self.outputs.items()}
        self.summary.failed_items = failed_items(self.project, self.run_id)[0]
        return self.summary

    def _resolve_queue(self) -> tuple[str, QueueConfig]:
        """The queue given, else the one recorded on the run, else the configured default."""
        config = load_config(self.project.root).config
        self._threads_configured = self._threads_given is None and bool(config.engine_threads)
        if self._threads_configured:
            self.threads = config.engine_threads
        name = self.queue
        if name is None:
            with self.project.reader() as s:
                name = s.scalar(select(Run.queue).where(Run.id == self.run_id))
        return config.queue(name)

    def _claim(self, resume: bool) -> Run:
        with self.project.transaction() as s:
            run = s.get(Run, self.run_id)
            if run is None:
                raise StorageError(f"no run {self.run_id} in this project")
            if run.status == "running" and pid_alive(run.pid) and run.host == socket.gethostname():
                raise StorageError(f"run {run.id} is already running (pid {run.pid}); "
                                   f"stop it with `cryoweave stop {run.id}` first")
            if run.status != "saved" and not resume:
                raise StorageError(f"run {run.id} has already been started (status "
                                   f"{run.status}); use --continue {run.id} to resume it")
            run.status = "running"
            run.error = None
            run.pid = os.getpid()
            run.host = socket.gethostname()
            run.started_at = time.time()
            run.finished_at = None
            run.summary = None  # stored again when the run finishes
            run.stop_requested = False
            run.queue = self.queue
            s.add(Event(run_id=run.id, kind="run_started" if not resume else "run_continued",
                        message=f"pid {run.pid} on {run.host}, queue {run.queue}"))
            s.flush()
            s.expunge(run)
            return run

    def _finish_checked(self) -> None:
        """Finish, or fail when items failed and none reached an output (nothing to use)."""
        count, message = failed_items(self.project, self.run_id)
        if count and not any(handle.count() for handle in self.outputs.values()):
            self._finish("failed", f"all {count} input items failed, no output item was "
                                   f"produced (last: {message}); `cryoweave show "
                                   f"{self.run_id}` lists the failures")
        else:
            self._finish("finished", None)

    def _remove_tmp(self) -> None:
        """Empty the run's tmp/ (scratch of the plan and steps) and remove the partial files
        of writes killed before their rename (formats.atomic_path): a finished run has no
        step running, keeps its results in extra/, and a later --continue plans again."""
        tmp = self.run_dir / "tmp"
        for path in tmp.iterdir() if tmp.is_dir() else ():
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        for folder, _dirs, files in os.walk(self.run_dir):  # links to data are not followed
            for name in files:
                if _PARTIAL_WRITE.fullmatch(name):
                    Path(folder, name).unlink(missing_ok=True)

    def _finish(self, status: str, error: str | None) -> None:
        with self.project.transaction() as s:
            if status == "finished":
                for handle in self.outputs.values():
                    s.execute(update(SetRow).where(SetRow.id == handle.id, SetRow.state == "open")
                              .values(state="closed", version=SetRow.version + 1))
            s.execute(update(Run).where(Run.id == self.run_id).values(
                status=status, error=error, finished_at=time.time()))
            s.add(Event(run_id=self.run_id, kind=f"run_{status}",
                        level="error" if status == "failed" else "info", message=error or ""))
        self.summary.status = status
        self.summary.error = error
        if status == "finished":
            self._store_summary()
        if error:
            self.log.log(logging.ERROR if status == "failed" else logging.WARNING,
                         "run %d %s: %s", self.run_id, status, error)
        else:
            self.log.info("run %d %s", self.run_id, status)

    def _store_summary(self) -> None:
        """Store the protocol's summary of the finished run (``runs.summary``), which `show`,
        `runs --json` and the GUI then read without importing the protocol. A summary that
        fails or is not JSON is not stored (it is computed when asked, and says why)."""
        from cryoweave.workflow._report import compute_summary, storable_summary

        try:
            summary = compute_summary(self.project, self.project.get_run(self.run_id),
                                      strict=True)
        except Exception as exc:  # a summary never fails a finished run
            self.log.warning("summary of run %d not stored: %s", self.run_id, exc)
            return
        stored = storable_summary(summary)
        if stored is not None:
            with self.project.transaction() as s:
                s.execute(update(Run).where(Run.id == self.run_id).values(summary=stored))

    # -- steps ------------------------------------------------------------------------------
    def _load_existing_steps(self) -> None:
        with self.project.reader() as s:
            for row in s.scalars(select(StepRow).where(StepRow.run_id == self.run_id)):
                status = "done" if row.status == "done" else "pending"
                self.steps[row.key] = _StepState(row.key, row.func, dict(row.args or {}),
                                                 list(row.outputs or []), list(row.after or []),
                                                 dict(row.resources or {}), row.key, status)

    def _outputs_exist(self, outputs: list[str]) -> bool:
        return all((self.run_dir / p).exists() for p in outputs)

    def register_steps(self, steps: list[Step], *,
                       cursor: tuple[str, int, int, int | None] | None = None,
                       units: list[tuple[str, str, str]] | None = None) -> None:
        """Persist new or changed steps (and a stream cursor) in one transaction.

        A step whose key and content hash match a finished step whose outputs exist is kept
        as done; a finished step that changed is redone and its published items retracted.
        """
        keys = [s.key for s in steps]
        if len(set(keys)) != len(keys):
            duplicates = sorted({k for k in keys if keys.count(k) > 1})
            raise ValueError(f"duplicate step keys in plan: {duplicates}")
        with self.project.transaction() as s:
            for step in steps:
                digest = step.content_hash(self.salt)
                row = s.scalar(select(StepRow).where(StepRow.run_id == self.run_id,
                                                     StepRow.key == step.key))
                outputs = list(step.outputs)
                # a finished step is trusted when its recorded outputs (those it produced)
                # still exist
                if (row is not None and row.status == "done" and row.content_hash == digest
                        and self._outputs_exist(list(row.outputs or []))):
                    self.steps[step.key].status = "done"
                    self.summary.steps_skipped += 1
                    continue
                if row is not None and row.status == "done":
                    self._retract(s, row)
                if row is None:
                    row = StepRow(run_id=self.run_id, key=step.key)
                    s.add(row)
                row.func = step.func_path
                row.args = _json_safe(dict(step.args))
                row.outputs = outputs
                row.after = list(step.after)
                row.resources = {"cpus": step.resources.cpus, "gpu": step.resources.gpu,
                                 "mem_gb": step.resources.mem_gb}
                row.content_hash = digest
                row.status = "pending"
                row.result = row.published = row.error = None
                self.steps[step.key] = _StepState(step.key, row.func, row.args, outputs,
                                                  list(step.after), row.resources,
                                                  step.label or step.key, "pending")
            if cursor is not None:
                name, set_id, seq, next_item_id = cursor
                row_c = s.get(StreamCursor, (self.run_id, name))
                if row_c is None:
                    row_c = StreamCursor(run_id=self.run_id, input_name=name, set_id=set_id)
                    s.add(row_c)
                row_c.seq = seq
                if next_item_id is not None:
                    row_c.next_item_id = next_item_id
            for stream, unit_key, step_key in units or []:
                s.add(StreamUnit(run_id=self.run_id, stream=stream, unit_key=unit_key,
                                 step_key=step_key))
        self._report_totals()

    def _record_batch(self, batch: StreamBatch | None) -> None:
        """Register a stream's new steps with its cursor (one transaction)."""
        if batch is not None:
            self.register_steps(batch.steps, cursor=batch.cursor, units=batch.units)

    def _retract(self, session: Any, row: StepRow) -> None:
        for name, (set_id, seq) in (row.published or {}).items():
            handle = self.outputs.get(name) or set_handle(self.project, set_id)
            removed = retract_items(session, handle, seq)
            self.log.info("step %s is redone: %d items of %r retracted", row.key, removed, name)

    def _report_totals(self) -> None:
        done = sum(1 for st in self.steps.values() if st.status == "done")
        self.progress.steps_changed(done, len(self.steps))

    def _ready(self) -> list[_StepState]:
        done = {k for k, st in self.steps.items() if st.status == "done"}
        return [st for st in self.steps.values()
                if st.status == "pending" and all(a in done for a in st.after)]

    def _record(self, state: _StepState, result: StepResult, seconds: float) -> None:
        unknown = (set(result.publish) | set(result.optics) | set(result.properties)
                   | set(result.derive)) - set(self.outputs)
        if unknown:
            raise StepFailed(self.run_id, state.key,
                             f"step published to undeclared outputs {sorted(unknown)}")
        with self.project.transaction() as s:
            published: dict[str, list[int]] = {}
            for name, derived in result.derive.items():
                source = (set_handle(self.project, derived.source_set_id)
                          if derived.source_set_id is not None
                          else self.inputs.get(derived.input))
                if source is None:
                    raise StepFailed(self.run_id, state.key,
                                     f"derived output {name!r} refers to unset input "
                                     f"{derived.input!r}")
                self._inherit(s, source, self.outputs[name])
                if len(derived.updates):
                    seq = derive_items(s, source, self.outputs[name], derived.updates)
                    published[name] = [self.outputs[name].id, seq]
            for name, props in result.properties.items():
                row = s.get(SetRow, self.outputs[name].id)
                row.properties = {**(row.properties or {}), **_json_safe(props)}
            for name, optics in result.optics.items():
                put_optics(s, self.outputs[name].id, optics)
            for name, items in result.publish.items():
                if len(items):
                    seq = append_items(s, self.outputs[name], items)
                    published[name] = [self.outputs[name].id, seq]
            for item_id, message in result.item_failures.items():
                s.add(Event(run_id=self.run_id, kind="item_failed", level="error",
                            message=message, data={"item_id": int(item_id), "step": state.key}))
            produced = [p for p in state.outputs if p not in set(result.excused_outputs)]
            s.execute(update(StepRow).where(StepRow.run_id == self.run_id,
                                            StepRow.key == state.key).values(
                status="done", result=_json_safe({**result.info, "seconds": round(seconds, 3),
                                                  FAILED_ITEMS_KEY: sorted(result.item_failures)}),
                published=published, error=None, started_at=state.started_at,
                finished_at=time.time(), outputs=produced))
        state.status = "done"
        self.summary.steps_run += 1
        self.log.info("step %s done in %.2f s", state.key, seconds)

    @staticmethod
    def _inherit(session: Any, source: SetHandle, target: SetHandle) -> None:
        """A derived output starts with its input's properties and optics groups."""
        target_row = session.get(SetRow, target.id)
        if not target_row.properties:
            target_row.properties = dict(session.get(SetRow, source.id).properties or {})
            optics = source.optics()
            if len(optics):
                put_optics(session, target.id, optics)

    def _record_failure(self, state: _StepState, message: str) -> None:
        with self.project.transaction() as s:
            s.execute(update(StepRow).where(StepRow.run_id == self.run_id,
                                            StepRow.key == state.key).values(
                status="failed", error=message, finished_at=time.time()))
            s.add(Event(run_id=self.run_id, kind="step_failed", level="error",
                        message=message, data={"step": state.key}))
        state.status = "failed"

    def _wait_for_closed_inputs(self) -> None:
        """Until every input set is closed (a protocol that does not stream its inputs plans
        from all of them): a producer still running or not yet started is waited for; one that
        failed, was stopped, finished, or whose process is gone fails this run, saying which."""
        names = {h.id: n for n, h in self.inputs.items() if h is not None}
        waiting: set[int] = set()
        while still_open := queries.open_sets(self.project, list(names)):
            for row, producer in still_open:
                who = (f"run {producer.id} ({producer.label or producer.protocol})"
                       if producer is not None else f"run {row.run_id}")
                if producer is None or producer.status in ("failed", "aborted", "finished") \
                        or queries.process_gone(producer):
                    state = "gone" if producer is None else queries.run_state(producer)
                    raise StorageError(
                        f"input {names[row.id]!r} is set {row.id} ({row.name}) of {who}, which "
                        f"is {state} and left it open: continue that run (`cryoweave "
                        f"run-protocol --continue {row.run_id}`) or choose another input")
                if row.id not in waiting:
                    waiting.add(row.id)
                    self.log.info("waiting for input %r (set %d of %s, %s) to close",
                                  names[row.id], row.id, who, producer.status)
            if self._stop_requested():
                raise StopRequested(f"run {self.run_id} was stopped on request while waiting "
                                    "for its inputs")
            time.sleep(max(self.poll_interval_s, 0.2))

    def _step_threads(self, concurrent: int) -> int:
        """Engine threads of a step that starts while ``concurrent`` steps (itself included)
        run: the threads given or configured, else the cores shared among them (two halves
        side by side on two cores: one each; the finalize after them alone: both)."""
        if self._threads_given is not None or self._threads_configured:
            return self.threads
        return max(1, (os.cpu_count() or 1) // max(1, concurrent))

    # -- the loop ---------------------------------------------------------------------------
    def _stop_requested(self) -> bool:
        with self.project.reader() as s:
            return bool(s.scalar(select(Run.stop_requested).where(Run.id == self.run_id)))

    def _loop(self, plan: Plan, executor: Executor) -> None:
        streams: list[BatchStream | WatchStream] = [
            BatchStream(self.project, self.run_id, self.inputs, spec, self.log)
            if isinstance(spec, ForEachBatch)
            else WatchStream(self.project, self.run_id, spec, i, self.log)
            for i, spec in enumerate(plan.streams)]
        running: dict[Any, tuple[_StepState, float, str | None]] = {}
        # GPUs of a local queue, shared out one per concurrent GPU step
        free_gpus = list(self.queue_config.devices)
        capacity = max(self.workers, executor.capacity() or 0) \
            if self.queue_config.kind != "local" else self.workers
        failure: StepFailed | None = None
        aborting = False
        last_stop_check = 0.0
        while True:
            now = time.monotonic()
            if not aborting and now - last_stop_check >= STOP_CHECK_INTERVAL_S:
                last_stop_check = now
                if self._stop_requested():
                    if streams and all(st.graceful_stop for st in streams):
                        self.log.info("stop requested: closing the streams, finishing work")
                        for st in streams:
                            self._record_batch(st.stop())
                    else:
                        self.log.info("stop requested: aborting after running steps")
                        aborting = True
            if failure is None and not aborting:
                for st in streams:
                    if not st.done:
                        self._record_batch(st.poll())
                free = capacity - len(running)
                starting = self._ready()[:max(0, free)]
                for state in starting:
                    gpu_id = None
                    if state.resources.get("gpu") and self.queue_config.devices:
                        if not free_gpus:
                            continue
                        gpu_id = free_gpus.pop(0)
                    state.status = "running"
                    state.started_at = time.time()
                    ctx = StepContext(self.run_id, state.key, self.run_dir,
                                      executor.step_threads(state.resources, self._step_threads(
                                          len(running) + len(starting))),
                                      self.device, self.progress.step_progress, gpu_id)
                    self.progress.step_started(state.key, state.label)
                    handle = executor.submit(state.func, state.args, ctx, state.outputs,
                                             state.resources)
                    running[handle] = (state, time.perf_counter(), gpu_id)
            if running:
                for handle in executor.wait(list(running), self.poll_interval_s):
                    state, started, gpu_id = running.pop(handle)
                    if gpu_id is not None:
                        free_gpus.append(gpu_id)
                    try:
                        result, seconds = executor.outcome(handle)
                        self._record(state, result, seconds)
                        self.progress.step_info(state.key, dict(result.info or {}))
                        self.progress.step_finished(state.key, True, seconds)
                    except Exception as exc:  # the step's own error, reported with its key
                        if isinstance(exc, StepFailed):
                            message = exc.original_message
                        elif isinstance(exc, CryoweaveError):
                            message = str(exc)
                        else:
                            message = f"{type(exc).__name__}: {exc}"
                        self.log.error("step %s failed:\n%s", state.key,
                                       "".join(traceback.format_exception(exc)))
                        self._record_failure(state, message)
                        self.progress.step_finished(state.key, False,
                                                    time.perf_counter() - started)
                        failure = failure or StepFailed(self.run_id, state.key, message)
                    self._report_totals()
                continue
            if failure is not None:
                raise failure
            if aborting:
                raise StopRequested(f"run {self.run_id} was stopped on request")
            pending = [st for st in self.steps.values() if st.status != "done"]
            if not pending and all(st.done for st in streams):
                if plan.extend is not None:
                    more = plan.extend()
                    if more:  # (on --continue they may be done already: then ask again)
                        self.register_steps(more)
                        continue
                return
            if pending and not self._ready() and all(st.done for st in streams):
                keys = ", ".join(st.key for st in pending[:5])
                raise StepFailed(self.run_id, keys, "steps wait for dependencies that do not "
                                 "exist or failed")
            time.sleep(self.poll_interval_s)


def request_stop(project: Project, run_ref: int | str) -> Run:
    """Ask a running run to stop (streaming imports close, other runs abort)."""
    run = project.get_run(run_ref)
    with project.transaction() as s:
        s.execute(update(Run).where(Run.id == run.id).values(stop_requested=True))
        s.add(Event(run_id=run.id, kind="stop_requested", message="stop requested"))
    return run
