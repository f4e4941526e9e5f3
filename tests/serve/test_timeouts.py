"""Request timeouts, with a test double for a model that never stops talking (timing must be exact here; the
real-model paths are covered by the other tests)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator

import httpx

from qiaoban.backends import Backend, ChatStream, GenerationConfig, Usage
from tests.serve.conftest import read_sse, running_server


class EndlessBackend(Backend):
    name = "endless"
    context_length = 4096
    first_piece_after_s = 0.0

    def stream_chat(self, messages, gen: GenerationConfig | None = None) -> ChatStream:
        def words() -> Iterator[str]:
            time.sleep(self.first_piece_after_s)
            while True:
                time.sleep(0.05)
                yield "and then. "

        return ChatStream(self.name, words(), Usage())

    def count_prompt_tokens(self, messages) -> int:
        return sum(len(m["content"]) for m in messages) // 4


def test_generation_and_queue_timeouts(settings):
    body = {"model": "endless", "messages": [{"role": "user", "content": "hi"}]}
    fast = dataclasses.replace(settings, model_id="endless", request_timeout_s=1.5, queue_size=1)
    backend = EndlessBackend()
    with running_server(backend, fast) as url, httpx.Client(base_url=url, timeout=30) as http:
        started = time.monotonic()
        stopped = http.post("/v1/chat/completions", json=body)
        assert stopped.status_code == 504 and stopped.json()["error"]["code"] == "timeout"
        assert 1.4 < time.monotonic() - started < 10

        backend.first_piece_after_s = 3.0  # the holder keeps the slot longer than the next one may wait
        session = http.post("/api/sessions").json()["id"]
        with http.stream("POST", f"/api/sessions/{session}/messages", json={"text": "hi"}) as holder:
            events = read_sse(holder)
            assert next(events)[0] == "accepted"
            waited = http.post("/v1/chat/completions", json=body)  # in line behind the holder, past its deadline
            assert waited.status_code == 503 and waited.json()["error"]["code"] == "queue_timeout"
            assert int(waited.headers["Retry-After"]) >= 1
            rest = list(events)
        assert rest[-1][0] == "error" and rest[-1][1]["error"]["code"] == "timeout"
        stored = http.get(f"/api/sessions/{session}").json()["messages"]
        assert [m["role"] for m in stored] == ["child"]  # the child's message is kept; no half reply

        backend.first_piece_after_s = 0.0
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as stream:
            chunks = [line[6:] for line in stream.iter_lines() if line.startswith("data: ")]
        assert chunks[-1] == "[DONE]" and json.loads(chunks[-2])["error"]["code"] == "timeout"
        assert http.get("/healthz").json()["queue"]["running"] == 0
