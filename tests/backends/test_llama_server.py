"""llama-server as the engine: start-up failures, exact token counts, batched replies, a SIGKILLed engine
(mid-reply: a clear error, then a restart; behind `qiaoban serve`: 503, and nothing stored is lost)."""

from __future__ import annotations

import os
import signal
import stat
import threading
from pathlib import Path

import httpx
import pytest

from qiaoban.backends import EngineUnavailable, GenerationConfig, load_backend
from qiaoban.backends.llama_server import ENGINE_ENV, LlamaServer, LlamaServerBackend, engine_path
from qiaoban.serve import ServeSettings
from tests.serve.conftest import read_sse, running_server, send_message

needs_engine = pytest.mark.skipif(engine_path() is None, reason="llama-server is not built (make engine)")
PROMPT = [{"role": "system", "content": "You are a kind friend."}, {"role": "user", "content": "Hi! I drew a cat."}]


def freeze_then_kill(backend: LlamaServerBackend, after_s: float) -> threading.Timer:
    """Stop the engine now (so a request is surely in flight when it dies) and SIGKILL it `after_s` later."""
    pid = backend.engine.process.pid
    os.kill(pid, signal.SIGSTOP)
    timer = threading.Timer(after_s, os.kill, (pid, signal.SIGKILL))
    timer.start()
    return timer


def fake_binary(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "llama-server"
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_missing_binary_says_how_to_build(tmp_path, monkeypatch, fixture_model_path):
    monkeypatch.setenv("QIAOBAN_HOME", str(tmp_path))
    monkeypatch.delenv(ENGINE_ENV, raising=False)
    with pytest.raises(EngineUnavailable, match="build-engine"):
        load_backend("llama-server", model=str(fixture_model_path))
    with pytest.raises(EngineUnavailable, match="no llama-server at"):
        LlamaServer(tmp_path / "nowhere", fixture_model_path)


def test_engine_that_dies_at_start_reports_its_log(tmp_path, fixture_model_path):
    engine = LlamaServer(fake_binary(tmp_path, "echo 'error: unknown argument' >&2; exit 3"), fixture_model_path)
    with pytest.raises(EngineUnavailable, match=r"exited with 3 while starting:\n.*unknown argument"):
        engine.start()


def test_engine_that_never_gets_ready_is_stopped(tmp_path, fixture_model_path):
    engine = LlamaServer(fake_binary(tmp_path, "exec sleep 60"), fixture_model_path, startup_timeout_s=1.0)
    with pytest.raises(EngineUnavailable, match="did not become ready within 1 s"):
        engine.start()
    assert engine.process is None


def test_command_gives_each_slot_its_context(tmp_path, fixture_model_path):
    engine = LlamaServer(fake_binary(tmp_path, "exit 0"), fixture_model_path, adapter_path=tmp_path / "a.gguf",
                         parallel=3, n_ctx=1024, threads=2, cache_ram_mib=64)
    command = engine.command()
    for flag, value in (("--parallel", "3"), ("--ctx-size", "3072"), ("--lora", str(tmp_path / "a.gguf")),
                        ("--cache-ram", "64"), ("--threads", "2")):
        assert command[command.index(flag) + 1] == value


@pytest.fixture(scope="module")
def engine_backend(fixture_model_path):
    backend = LlamaServerBackend(fixture_model_path, parallel=2, n_ctx=2048, threads=2)
    yield backend
    backend.close()


@needs_engine
@pytest.mark.slow
def test_counts_tokens_like_llama_cpp_and_batches_two_replies(engine_backend, fixture_backend):
    assert engine_backend.count_prompt_tokens(PROMPT) == fixture_backend.count_prompt_tokens(PROMPT)
    gen = GenerationConfig(max_tokens=16, temperature=0.0, seed=1)
    results: list = [None, None]

    def ask(i: int) -> None:
        results[i] = engine_backend.chat(PROMPT, gen)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    # Both finish; their texts are not compared: llama.cpp's batched kernels need not match bit for bit.
    assert all(r is not None and r.text.strip() and r.completion_tokens > 0 for r in results)
    slots = httpx.get(engine_backend.engine.base_url + "/slots").json()
    assert len(slots) == 2


@needs_engine
@pytest.mark.slow
def test_killed_mid_reply_fails_clearly_then_restarts(engine_backend):
    freeze_then_kill(engine_backend, 1.0)
    with pytest.raises(EngineUnavailable, match="stopped mid-reply"):
        engine_backend.chat(PROMPT, GenerationConfig(max_tokens=200, temperature=0.0))
    restarts = engine_backend.engine.restarts
    again = engine_backend.chat(PROMPT, GenerationConfig(max_tokens=8, temperature=0.0))
    assert again.text.strip() and engine_backend.engine.restarts == restarts + 1


@needs_engine
@pytest.mark.slow
def test_serve_answers_503_when_the_engine_dies_and_keeps_what_was_stored(engine_backend, tmp_path):
    settings = ServeSettings(db_path=tmp_path / "serve.db", model_id="fixture", reply_tokens=200,
                             request_timeout_s=240, slots=2)
    with running_server(engine_backend, settings) as url:
        session = httpx.post(f"{url}/api/sessions").json()["id"]
        first = send_message(url, session, "Hi! I made a new friend today.")
        assert first[-1][0] == "done", first[-1]
        freeze_then_kill(engine_backend, 2.0)
        with httpx.stream("POST", f"{url}/api/sessions/{session}/messages", json={"text": "We played football."},
                          timeout=300) as response:
            events = read_sse(response)
            assert next(events)[0] == "accepted"
            rest = list(events)
        assert rest[-1][0] == "error" and rest[-1][1]["error"]["code"] == "engine_unavailable"
        stored = httpx.get(f"{url}/api/sessions/{session}").json()["messages"]
        texts = [(m["role"], m["text"]) for m in stored]
        assert texts[:2] == [("child", "Hi! I made a new friend today."), ("assistant", first[-1][1]["reply"])]
        assert ("child", "We played football.") in texts  # acknowledged, so kept
        after = send_message(url, session, "Are you there?")
        assert after[-1][0] == "done" and after[-1][1]["reply"].strip()
