"""Generation over a test set: teacher-forced items, the disk cache, and resuming an interrupted run."""

import json

import pytest

from qiaoban.backends import GenerationConfig
from qiaoban.eval.cache import CachedBackend, JsonlCache
from qiaoban.eval.generate import eval_items, generate_replies
from qiaoban.eval.pipeline import run_eval
from tests.eval.doubles import ScriptedBackend, dialogues


def echo(messages, gen):
    return "回复：" + messages[-1]["content"]


def test_items_are_teacher_forced_assistant_turns():
    items = list(eval_items(dialogues()))
    assert [i.item_id for i in items] == ["d1#1", "d1#3", "d2#1", "d3#1"]  # d3#2 answers no child turn
    second = items[1]
    assert [m["content"] for m in second.history] == ["我今天考试没考好。", "听起来你有点难过。", "嗯，妈妈会生气。"]
    assert second.reference == "你担心妈妈生气，对吗？"


def test_interrupted_run_resumes_without_repeating_calls(tmp_path):
    crashing = ScriptedBackend(echo, fail_at=3)
    with pytest.raises(RuntimeError, match="interrupted"):
        run_eval(crashing, dialogues(), tmp_path / "run", progress=False)
    assert len(JsonlCache(tmp_path / "run" / "cache" / "generations.jsonl")) == 2

    resumed = ScriptedBackend(echo)
    run_eval(resumed, dialogues(), tmp_path / "run", progress=False)
    assert resumed.calls == 2  # only the two items not finished before the crash

    rerun = ScriptedBackend(echo)
    run_eval(rerun, dialogues(), tmp_path / "run", progress=False)
    assert rerun.calls == 0  # a rerun is free
    records = [json.loads(line) for line in (tmp_path / "run" / "items.jsonl").read_text("utf-8").splitlines()]
    assert len(records) == 4
    for record in records:  # each reply belongs to its own item
        assert record["reply"] == "回复：" + record["history"][-1]["content"]
        assert record["history"][-1]["role"] == "user"
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["items"] == 4 and run["style"] == "raw model output" and run["generation"]["seed"] == 0


def test_cache_key_covers_model_settings_and_prompt(tmp_path):
    cache = JsonlCache(tmp_path / "g.jsonl")
    items = list(eval_items(dialogues()))[:2]
    backend = ScriptedBackend(echo)
    generate_replies(backend, items, cache, progress=False)
    generate_replies(backend, items, cache, gen=GenerationConfig(seed=1), progress=False)  # new settings
    generate_replies(backend, items, cache, adapter="lora.gguf", progress=False)  # new adapter
    generate_replies(backend, items, cache, system_prompt="另一个系统提示", progress=False)  # new prompt
    generate_replies(backend, items, cache, progress=False)  # all cached
    assert backend.calls == 8


def test_as_deployed_applies_the_spoken_filter_and_keeps_the_raw_reply(tmp_path):
    backend = ScriptedBackend(lambda m, g: "**别担心**\n1. 深呼吸\n2. 说出来")
    items = list(eval_items(dialogues()))[:1]
    raw = generate_replies(backend, items, JsonlCache(tmp_path / "a.jsonl"), progress=False)[0]
    spoken = generate_replies(backend, items, JsonlCache(tmp_path / "a.jsonl"), as_deployed=True,
                              progress=False)[0]
    assert backend.calls == 1  # same raw generation, cached
    assert raw["reply"] == raw["raw_reply"] and "**" in raw["reply"]
    assert spoken["raw_reply"] == raw["raw_reply"] and "**" not in spoken["reply"] and "1." not in spoken["reply"]


def test_torn_last_line_is_skipped_and_the_file_stays_readable(tmp_path):
    path = tmp_path / "c.jsonl"
    cache = JsonlCache(path)
    cache.put("a", {"text": "一"})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"key": "b", "value": {"te')  # killed mid-write
    reopened = JsonlCache(path)
    assert reopened.skipped_lines == 1 and reopened.get("a") == {"text": "一"} and "b" not in reopened
    reopened.put("c", {"text": "三"})
    again = JsonlCache(path)
    assert again.get("c") == {"text": "三"} and again.skipped_lines == 1


def test_cached_backend_does_not_store_an_abandoned_stream(tmp_path):
    inner = ScriptedBackend(lambda m, g: "完整的回复")
    cached = CachedBackend(inner, JsonlCache(tmp_path / "s.jsonl"))
    messages = [{"role": "user", "content": "你好"}]
    for _ in cached.stream_chat(messages):
        break  # the reader stopped early: nothing is cached
    assert len(cached.cache) == 0
    assert cached.chat(messages).text == "完整的回复"
    assert cached.chat(messages).text == "完整的回复" and inner.calls == 2
