"""`qiaoban serve` as a process: SIGTERM in the middle of a reply finishes and stores it, then exits cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx

from qiaoban.serve import SessionStore
from tests.helpers import free_port, wait_for_http
from tests.serve.conftest import read_sse


def test_sigterm_mid_reply_loses_no_message(tmp_path, fixture_model_path):
    port, db = free_port(), tmp_path / "serve.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiaoban", "serve", "--model", str(fixture_model_path), "--port", str(port),
         "--db", str(db), "--max-tokens", "24"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/healthz", proc=proc)
        session = httpx.post(f"{url}/api/sessions").json()["id"]
        with httpx.stream("POST", f"{url}/api/sessions/{session}/messages", timeout=300,
                          json={"text": "Tell me a long story about a brave cat."}) as response:
            events = read_sse(response)
            assert next(events)[0] == "accepted"  # the child's message is stored
            assert next(events)[0] == "delta"  # the model is generating
            proc.send_signal(signal.SIGTERM)
            rest = list(events)
        assert rest[-1][0] == "done", rest[-1]
        assert proc.wait(timeout=120) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after shutdown
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.stdout.read()
    assert "Application shutdown complete" in output

    stored = SessionStore(db).get_session(session)
    assert [(m.role, m.text) for m in stored.messages] == [
        ("child", "Tell me a long story about a brave cat."), ("assistant", rest[-1][1]["reply"])]
