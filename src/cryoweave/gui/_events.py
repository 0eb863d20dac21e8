"""The event stream (server-sent events) that keeps every open page up to date."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse

from cryoweave.workflow import queries


async def events(request: Request) -> StreamingResponse:
    """Server-sent events: ``change`` with the project's change marker whenever it changes
    (polled every ``poll_interval_s``), a comment every 15 s to keep the line open.
    ``?max_s=`` ends the stream after that many seconds (tests)."""
    st = request.app.state.gui
    try:
        max_s = float(request.query_params.get("max_s", "0"))
    except ValueError:
        max_s = 0.0

    async def stream() -> Any:
        last: dict[str, Any] | None = None
        start = last_sent = time.monotonic()
        yield "retry: 2000\n\n"
        while True:
            marker = await asyncio.to_thread(queries.change_marker, st.project)
            now = time.monotonic()
            if marker != last:
                last = marker
                last_sent = now
                yield f"event: change\ndata: {json.dumps(marker)}\n\n"
            elif now - last_sent > 15:
                last_sent = now
                yield ": keep-alive\n\n"
            if max_s and now - start >= max_s:
                return
            if await request.is_disconnected():
                return
            await asyncio.sleep(st.poll_interval_s)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
