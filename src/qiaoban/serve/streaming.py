"""Server-sent events, and waiting on a job's events from a request handler."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from qiaoban.chat import Reply
from qiaoban.serve.errors import ApiError
from qiaoban.serve.jobs import Event, Job

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse(data: dict[str, Any] | str, event: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


async def job_events(job: Job) -> AsyncIterator[Event]:
    """The job's events up to and including its last ("done" or "error")."""
    while True:
        event = await job.next_event()
        yield event
        if event.kind in ("done", "error"):
            return


async def wait_reply(job: Job) -> Reply:
    async for event in job_events(job):
        if event.kind == "done":
            return event.value
        if event.kind == "error":
            raise event.value
    raise ApiError(500, "the reply ended without a result")
