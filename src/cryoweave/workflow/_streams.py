"""Streams turn new input items (or new files) into keyed steps and a cursor advance.

``poll()`` returns a :class:`StreamBatch` (new steps, the cursor, the units seen); the runner
records the cursor advance and the new steps in one transaction, so a run killed at any moment
and continued neither loses nor repeats a batch. Streams read the database, never write it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from sqlalchemy import select

from cryoweave.errors import StepFailed
from cryoweave.plugin import ForEachBatch, ItemBatch, Step, Watch, WorkUnit
from cryoweave.store import Project, SetHandle, pid_alive
from cryoweave.store.schema import Run, SetRow, StreamCursor, StreamUnit


@dataclass
class StreamBatch:
    """What one poll found: steps to register, the cursor to persist with them
    (name, set id, set version, next item id) and (stream, unit key, step key) triples."""

    steps: list[Step]
    cursor: tuple[str, int, int, int | None]
    units: list[tuple[str, str, str]] = field(default_factory=list)


class BatchStream:
    """Consume an input set (open or closed) in batches of new items."""

    graceful_stop = False

    def __init__(self, project: Project, run_id: int, inputs: dict[str, SetHandle | None],
                 spec: ForEachBatch, log: logging.Logger):
        self.project = project
        self.run_id = run_id
        self.log = log
        self.spec = spec
        self.name = f"input:{spec.input}"
        handle = inputs.get(spec.input)
        if handle is None:
            raise ValueError(f"stream over input {spec.input!r}, which is not set")
        self.handle: SetHandle = handle
        with project.reader() as s:
            cursor = s.get(StreamCursor, (run_id, self.name))
            self.cursor_seq = cursor.seq if cursor is not None else 0
        self.done = False
        self._warned_dead = False

    def poll(self) -> StreamBatch | None:
        """New items as steps (and the cursor to record with them), or None."""
        batch = None
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
            batch = StreamBatch(steps, (self.name, self.handle.id, row.version, None))
            self.cursor_seq = row.version
        if row.state == "closed" and self.cursor_seq >= row.version:
            self.done = True
        elif row.state == "open":
            self._check_producer(row)
        return batch

    def _check_producer(self, row: SetRow) -> None:
        if row.run_id is None:
            return
        with self.project.reader() as s:
            producer = s.get(Run, row.run_id)
            status, pid = producer.status, producer.pid
        if status in ("failed", "aborted"):
            raise StepFailed(self.run_id, self.name,
                             f"input {self.spec.input!r} comes from run {row.run_id}, which is "
                             f"{status}; continue run {row.run_id}, then continue this run")
        if status == "running" and not pid_alive(pid) and not self._warned_dead:
            self._warned_dead = True
            self.log.warning("input %r: producing run %s is marked running but its "
                                    "process is gone; waiting for it to be continued",
                                    self.spec.input, row.run_id)

    def stop(self) -> StreamBatch | None:
        self.done = True
        return None


class WatchStream:
    """Poll the outside world; each batch of new units becomes one step with fresh item ids."""

    graceful_stop = True

    def __init__(self, project: Project, run_id: int, spec: Watch, index: int,
                 log: logging.Logger):
        self.log = log
        self.spec = spec
        self.name = f"watch:{index}"
        with project.reader() as s:
            self.seen = set(s.scalars(select(StreamUnit.unit_key).where(
                StreamUnit.run_id == run_id, StreamUnit.stream == self.name)))
            cursor = s.get(StreamCursor, (run_id, self.name))
            self.next_item_id = cursor.next_item_id if cursor is not None else 1
        self.done = False
        self.last_new = time.monotonic()
        self.last_poll = 0.0

    def poll(self) -> StreamBatch | None:
        """Settled new units as steps (and the cursor and units to record), or None."""
        now = time.monotonic()
        if now - self.last_poll < self.spec.interval_s:
            return None
        self.last_poll = now
        new = self._new(self.spec.discover())
        if not new:
            if now - self.last_new >= self.spec.timeout_s:
                self.log.info("%s: no new input for %.0f s, closing", self.name,
                              self.spec.timeout_s)
                return self._close()
            return None
        batch = self._batch(new)
        self.last_new = time.monotonic()
        return batch

    def _new(self, units: list[WorkUnit]) -> list[WorkUnit]:
        """Units not seen before, one per key (a watcher may name one unit twice)."""
        fresh: dict[str, WorkUnit] = {}
        for unit in units:
            if unit.key not in self.seen:
                fresh.setdefault(unit.key, unit)
        return list(fresh.values())

    def _batch(self, new: list[WorkUnit]) -> StreamBatch | None:
        if not new:
            return None
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
        self.next_item_id = next_id
        self.seen.update(u.key for u in new)
        return StreamBatch(steps, (self.name, 0, 0, next_id),
                           [(self.name, k, sk) for k, sk in units])

    def _close(self) -> StreamBatch | None:
        """End the watch; units that never became ready become a last batch of steps."""
        self.done = True
        if self.spec.remaining is not None:
            left = self._new(self.spec.remaining())
            if left:
                self.log.info("%s: closing with %d unit(s) that were not ready",
                              self.name, len(left))
            return self._batch(left)
        return None

    def stop(self) -> StreamBatch | None:
        return self._close() if not self.done else None
