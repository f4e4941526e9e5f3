"""One retry policy: the OpenAI client's own (backoff, Retry-After) against a real HTTP server on loopback that
is busy once; the judge adds no retries on top."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from qiaoban.backends.openai_http import OpenAIBackend
from qiaoban.eval.cache import JsonlCache
from qiaoban.eval.judge import Judge, JudgeSettings

CHUNKS = [
    {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "busy-judge",
     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "评分：4"}, "finish_reason": None}]},
    {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "busy-judge",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
]
STREAM = "".join(f"data: {json.dumps(c)}\n\n" for c in CHUNKS).encode() + b"data: [DONE]\n\n"


def busy_server(busy_times: int):
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - the http.server API
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.path)
            if len(seen) <= busy_times:
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"error": {"message": "busy"}}')
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(STREAM)))
            self.end_headers()
            self.wfile.write(STREAM)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def judge_at(server, retries: int, cache) -> Judge:
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    return Judge(OpenAIBackend(url, "busy-judge", max_retries=retries, timeout_s=10), cache, JudgeSettings(samples=1))


def test_a_busy_judge_is_retried_by_the_client_alone(tmp_path):
    server, seen = busy_server(busy_times=1)
    try:
        judge = judge_at(server, 2, JsonlCache(tmp_path / "judge.jsonl"))
        result = judge.score([{"role": "user", "content": "x"}])
        assert result["mean"] == 4.0 and judge.calls == 1 and len(seen) == 2  # one call, one client retry
    finally:
        server.shutdown()

    server, seen = busy_server(busy_times=10)
    try:
        judge = judge_at(server, 1, JsonlCache(tmp_path / "down.jsonl"))
        result = judge.score([{"role": "user", "content": "x"}])
        assert result["outcomes"]["error"] == 1 and len(seen) == 2  # 1 + the client's 1 retry, nothing on top
    finally:
        server.shutdown()
