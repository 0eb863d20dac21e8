"""Streams turn new input items (or new files) into keyed steps, persisting their cursors.

The cursor advance and the new steps are written in one transaction, so a run killed at any
moment and continued neither loses nor repeats a batch.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import select

from cryoweave.errors import StepFailed
from cryoweave.plugin._plan import ForEachBatch, ItemBatch, Step, Watch, WorkUnit
from cryoweave.store._project import pid_alive
from cryoweave.store._sets import SetHandle
from cryoweave.store.schema import Run, SetRow, StreamCursor, StreamUnit

if TYPE_CHECKING:
    from cryoweave.workflow.runner import Runner


class BatchStream:
    """Consume an input set (open or closed) in batches of new items."""

    graceful_stop = False

    def __init__(self, runner: Runner, spec: ForEachBatch):
        self.runner = runner
        self.spec = spec
        self.name = f"input:{spec.input}"
        handle = runner.inputs.get(spec.input)
        if handle is None:
            raise ValueError(f"stream over input {spec.input!r}, which is not set")
        self.handle: SetHandle = handle
        with runner.project.reader() as s:
            cursor = s.get(StreamCursor, (runner.run_id, self.name))
            self.cursor_seq = cursor.seq if cursor is not None else 0
        self.done = False
        self._warned_dead = False

    def poll(self) -> None:
        row = self.handle.row()
        if row.version > self.cursor_seq:
            query = self.handle.query().published_between(self.cursor_seq, row.version)
            items = query.frame()
            steps: list[Step] = []
            if len(items):
                optics = self.handle.optics()
                props = dict(row.properties or {})
                size = max(1, self.spec.batch_size)
                for start in range(0, len(items), size):
                    chunk = items.iloc[start:start + size].reset_index(drop=True)
                    steps.append(self.spec.make_step(
                        ItemBatch(self.spec.input, chunk, props, optics)))
            self.runner.register_steps(
                steps, cursor=(self.name, self.handle.id, row.version, None))
            self.cursor_seq = row.version
        if row.state == "closed" and self.cursor_seq >= row.version:
            self.done = True
        elif row.state == "open":
            self._check_producer(row)

    def _check_producer(self, row: SetRow) -> None:
        if row.run_id is None:
            return
        with self.runner.project.reader() as s:
            producer = s.get(Run, row.run_id)
            status, pid = producer.status, producer.pid
        if status in ("failed", "aborted"):
            raise StepFailed(self.runner.run_id, self.name,
                             f"input {self.spec.input!r} comes from run {row.run_id}, which is "
                             f"{status}; continue run {row.run_id}, then continue this run")
        if status == "running" and not pid_alive(pid) and not self._warned_dead:
            self._warned_dead = True
            self.runner.log.warning("input %r: producing run %s is marked running but its "
                                    "process is gone; waiting for it to be continued",
                                    self.spec.input, row.run_id)

    def stop(self) -> None:
        self.done = True


class WatchStream:
    """Poll the outside world; each batch of new units becomes one step with fresh item ids."""

    graceful_stop = True

    def __init__(self, runner: Runner, spec: Watch, index: int):
        self.runner = runner
        self.spec = spec
        self.name = f"watch:{index}"
        with runner.project.reader() as s:
            self.seen = set(s.scalars(select(StreamUnit.unit_key).where(
                StreamUnit.run_id == runner.run_id, StreamUnit.stream == self.name)))
            cursor = s.get(StreamCursor, (runner.run_id, self.name))
            self.next_item_id = cursor.next_item_id if cursor is not None else 1
        self.done = False
        self.last_new = time.monotonic()
        self.last_poll = 0.0

    def poll(self) -> None:
        now = time.monotonic()
        if now - self.last_poll < self.spec.interval_s:
            return
        self.last_poll = now
        new = self._new(self.spec.discover())
        if not new:
            if now - self.last_new >= self.spec.timeout_s:
                self.runner.log.info("%s: no new input for %.0f s, closing", self.name,
                                     self.spec.timeout_s)
                self._close()
            return
        self._register(new)
        self.last_new = time.monotonic()

    def _new(self, units: list[WorkUnit]) -> list[WorkUnit]:
        """Units not seen before, one per key (a watcher may name one unit twice)."""
        fresh: dict[str, WorkUnit] = {}
        for unit in units:
            if unit.key not in self.seen:
                fresh.setdefault(unit.key, unit)
        return list(fresh.values())

    def _register(self, new: list[WorkUnit]) -> None:
        if not new:
            return
        steps: list[Step] = []
        units: list[tuple[str, str]] = []
        next_id = self.next_item_id
        size = max(1, self.spec.batch_size)
        for start in range(0, len(new), size):
            chunk = new[start:start + size]
            step = self.spec.make_step(chunk, next_id)
            next_id += len(chunk)
            steps.append(step)
            units.extend((u.key, step.key) for u in chunk)
        self.runner.register_steps(steps, cursor=(self.name, 0, 0, next_id),
                                   units=[(self.name, k, sk) for k, sk in units])
        self.next_item_id = next_id
        self.seen.update(u.key for u in new)

    def _close(self) -> None:
        """End the watch; units that never became ready become a last batch of steps."""
        self.done = True
        if self.spec.remaining is not None:
            left = self._new(self.spec.remaining())
            if left:
                self.runner.log.info("%s: closing with %d unit(s) that were not ready",
                                     self.name, len(left))
            self._register(left)

    def stop(self) -> None:
        if not self.done:
            self._close()
