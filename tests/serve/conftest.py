"""A real uvicorn server on a loopback port, in a thread, around the shared fixture model."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from qiaoban.serve import ServeSettings, create_app
from tests.helpers import free_port

GUARDIAN_TOKEN = "guardian-test-token-0123"
# Short replies keep the suite fast on a busy CPU; the fixture model writes English either way.
REPLY_TOKENS = 12


@contextmanager
def running_server(backend: Any, settings: ServeSettings) -> Iterator[str]:
    """Serve `create_app(backend, settings)` on a free port; yields the base URL and stops it gracefully."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(backend, settings), host="127.0.0.1", port=port,
                                           log_level="warning", timeout_graceful_shutdown=60))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(90)


@pytest.fixture
def settings(tmp_path: Path) -> ServeSettings:
    return ServeSettings(db_path=tmp_path / "serve.db", model_id="fixture", guardian_token=GUARDIAN_TOKEN,
                         reply_tokens=REPLY_TOKENS, request_timeout_s=240)


@pytest.fixture
def serve(fixture_backend) -> Callable[[ServeSettings], Any]:
    """serve(settings) -> a context manager yielding the base URL of a fresh server on the fixture model."""
    return lambda settings: running_server(fixture_backend, settings)


@pytest.fixture
def base_url(serve, settings) -> Iterator[str]:
    with serve(settings) as url:
        yield url


def read_sse(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a session reply stream."""
    event = "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            yield event, json.loads(line[5:])
            event = "message"


def send_message(base_url: str, session_id: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    with httpx.stream("POST", f"{base_url}/api/sessions/{session_id}/messages", json={"text": text},
                      timeout=300) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(read_sse(response))
