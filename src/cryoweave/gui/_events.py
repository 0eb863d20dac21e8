"""The event stream (server-sent events) that keeps every open page up to date.

One watcher per GUI polls the project's change marker (:func:`queries.change_marker`, a few
cheap queries) every ``poll_interval_s`` while at least one page listens, and wakes every
listener when it changes: ten open tabs cost the database what one costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from cryoweave.store import Project, queries

KEEPALIVE_S = 15.0


class ChangeWatcher:
    """The latest change marker of a project, polled while anyone listens."""

    def __init__(self, project: Project, poll_interval_s: float):
        self.project = project
        self.poll_interval_s = poll_interval_s
        self.marker: dict[str, Any] | None = None
        self.version = 0  # +1 whenever the marker changes
        self.listeners = 0
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def _start(self) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while self.listeners > 0:
            marker = await asyncio.to_thread(queries.change_marker, self.project)
            if marker != self.marker:
                self.marker = marker
                self.version += 1
                assert self._changed is not None
                self._changed.set()
                self._changed = asyncio.Event()
            await asyncio.sleep(self.poll_interval_s)

    async def newer_than(self, seen: int, timeout_s: float) -> int:
        """The version after ``seen`` (waits up to ``timeout_s``; ``seen`` again if none)."""
        if self.version > seen:
            return self.version
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(timeout_s, 0.0))
        return self.version

    @contextlib.asynccontextmanager
    async def listening(self) -> Any:
        self.listeners += 1
        self._start()
        try:
            yield self
        finally:
            self.listeners -= 1


async def events(request: Request) -> StreamingResponse:
    """Server-sent events: ``change`` with the project's change marker whenever it changes, a
    comment every 15 s to keep the line open. ``?max_s=`` ends the stream after that many
    seconds (tests, benchmarks)."""
    watcher: ChangeWatcher = request.app.state.watcher
    try:
        max_s = max(0.0, float(request.query_params.get("max_s", "0")))
    except ValueError:
        max_s = 0.0

    async def stream() -> Any:
        yield "retry: 2000\n\n"
        start = time.monotonic()
        seen = 0
        async with watcher.listening():
            while True:
                left = max_s - (time.monotonic() - start) if max_s else KEEPALIVE_S
                if max_s and left <= 0:
                    return
                version = await watcher.newer_than(seen, min(KEEPALIVE_S, left))
                if version != seen:
                    seen = version
                    yield f"event: change\ndata: {json.dumps(watcher.marker)}\n\n"
                else:
                    yield ": keep-alive\n\n"

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
