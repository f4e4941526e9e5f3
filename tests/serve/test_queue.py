"""The bounded generation queue: in line first-come-first-served, 503 with Retry-After when the line is full."""

from __future__ import annotations

import dataclasses
import threading

import httpx
import pytest

from qiaoban.serve.queue import GenerationQueue, QueueFull
from tests.serve.conftest import read_sse


def test_queue_positions_and_limits():
    queue = GenerationQueue(slots=1, max_waiting=2)
    first, second, third = queue.admit(), queue.admit(), queue.admit()
    assert (first.position, second.position, third.position) == (0, 1, 2)
    with pytest.raises(QueueFull) as full:
        queue.admit()
    assert full.value.retry_after_s >= 1
    second.release()  # gave up while waiting: the one behind moves up
    assert third.position == 1
    woke = threading.Event()
    threading.Thread(target=lambda: third.wait(10) and woke.set()).start()
    first.release()
    assert woke.wait(10) and third.started and third.position == 0
    assert queue.stats() == {"running": 1, "waiting": 0, "slots": 1, "max_waiting": 2}
    third.release()
    third.release()  # idempotent
    assert queue.stats()["running"] == 0


def test_full_queue_answers_503_and_the_line_moves(serve, settings):
    long_story = {"model": "fixture", "stream": True, "max_tokens": 200,
                  "messages": [{"role": "user", "content": "Tell me a very long story about a dragon."}]}
    with serve(dataclasses.replace(settings, queue_size=1)) as url, httpx.Client(base_url=url, timeout=300) as http:
        session = http.post("/api/sessions").json()["id"]
        with http.stream("POST", "/v1/chat/completions", json=long_story) as holder:
            assert holder.status_code == 200
            next(holder.iter_lines())  # the first chunk: it holds the only slot now
            with http.stream("POST", f"/api/sessions/{session}/messages", json={"text": "Hello"}) as waiting:
                events = read_sse(waiting)
                assert next(events) == ("accepted", {"message_id": 1, "position": 1})

                refused = http.post("/v1/chat/completions", json={**long_story, "stream": False})
                assert refused.status_code == 503
                assert int(refused.headers["Retry-After"]) >= 1
                assert refused.json()["error"]["code"] == "queue_full"
                assert http.get("/healthz").json()["queue"] == {"running": 1, "waiting": 1, "slots": 1,
                                                                "max_waiting": 1}
                holder.close()  # the client leaves: its generation stops and the next in line starts
                rest = list(events)
        assert rest[-1][0] == "done" and rest[-1][1]["reply"]
        assert http.get("/healthz").json()["queue"]["running"] == 0
