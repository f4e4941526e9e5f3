"""The judge: parsing messy outputs, counting invalid ones, caching, bounded retries, right score to right item."""

import random
import re
import time

import pytest

from qiaoban.backends import BackendError
from qiaoban.eval.cache import JsonlCache
from qiaoban.eval.judge import Judge, JudgeSettings, judge_replies, pairwise, parse_score, parse_verdict
from tests.eval.doubles import ScriptedBackend


@pytest.mark.parametrize(("text", "score"), [
    ("评分：4", 4), ("**4/5**", 4), ("Score: 4.", 4), ('{"score": 4}', 4), ("```json\n{\"score\": 2}\n```", 2),
    ("评分：４", 4), ("我给四分。", 4), ("5", 5), ("总体不错，3分。", 3), ("I'd rate it 4 out of 5", 4),
    ("理由：回复温暖。\n\n**评分：5**", 5), ("评分：5\n（再次确认）评分：5", 5), ("评分为 2", 2), ("Rating = 1", 1),
    ("评分：4/5", 4),
])
def test_parse_score_accepts(text, score):
    parsed = parse_score(text)
    assert (parsed.score, parsed.status) == (score, "ok")


@pytest.mark.parametrize(("text", "status"), [
    ("评分：3 或 4", "ambiguous"), ("Score: 2-3", "ambiguous"), ("fluency score 3, empathy score 5", "ambiguous"),
    ("评分：7", "out_of_range"), ("8/10", "out_of_range"), ("评分：0", "out_of_range"), ("评分: 3.5", "out_of_range"),
    ("这个回复还不错", "no_score"), ("", "no_score"),
])
def test_parse_score_rejects(text, status):
    parsed = parse_score(text)
    assert parsed.score is None and parsed.status == status


def test_parse_verdict():
    assert parse_verdict("A 更好。\n结论：A") == "A"
    assert parse_verdict("结论：平") == "tie"
    assert parse_verdict("**结论：B**") == "B"
    assert parse_verdict("结论：A\n结论：B") is None
    assert parse_verdict("都挺好") is None


def _reply_number(messages) -> int:
    return int(re.search(r"reply-(\d)", messages[-1]["content"]).group(1))


def test_concurrent_shuffled_judge_writes_each_score_next_to_its_item(tmp_path):
    """PICA wrote scores next to the wrong items. Here calls finish in random order on 8 threads."""
    rng = random.Random(7)

    def slow_judge(messages, gen):
        time.sleep(rng.random() * 0.02)
        return f"理由……\n评分：{_reply_number(messages)}"

    backend = ScriptedBackend(slow_judge)
    judge = Judge(backend, JsonlCache(tmp_path / "judge.jsonl"), JudgeSettings(samples=2, workers=8))
    records = [{"item_id": f"item{i}", "history": [{"role": "user", "content": "hi"}], "reply": f"reply-{1 + i % 5} (#{i})"}
               for i in range(20)]
    rng.shuffle(records)
    judge_replies(judge, records, ("empathy", "fluency"))
    for record in records:
        expected = int(record["reply"][6])
        assert record["judge_empathy"] == expected and record["judge_fluency"] == expected
        assert record["judge_empathy_outcomes"]["ok"] == 2
    assert backend.calls == 20 * 2 * 2


def test_invalid_outputs_are_counted_not_dropped_and_every_call_is_cached(tmp_path):
    outputs = iter(["评分：4", "我觉得挺好", "评分：9", "评分：2"] * 10)
    backend = ScriptedBackend(lambda m, g: next(outputs), name="judge-x")
    cache = JsonlCache(tmp_path / "judge.jsonl")
    judge = Judge(backend, cache, JudgeSettings(samples=4))
    result = judge.score([{"role": "user", "content": "rate this"}])
    assert result["outcomes"] == {"ok": 2, "no_score": 1, "out_of_range": 1, "ambiguous": 0, "error": 0}
    assert result["mean"] == pytest.approx(3.0) and result["scores"] == [4.0, 2.0]
    assert len(cache) == 4
    # a second judge on the same cache makes no call and reproduces the result
    again = Judge(ScriptedBackend(lambda m, g: pytest.fail("called"), name="judge-x"),
                  JsonlCache(tmp_path / "judge.jsonl"), JudgeSettings(samples=4))
    assert again.score([{"role": "user", "content": "rate this"}]) == result
    assert again.calls == 0
    assert judge.describe()["judge_model"] == "judge-x" and len(judge.describe()["rubrics_hash"]) == 24


def test_no_valid_sample_gives_no_mean():
    backend = ScriptedBackend(lambda m, g: "无法评价")
    judge = Judge(backend, JsonlCache("/dev/null"), JudgeSettings(samples=3))
    result = judge.score([{"role": "user", "content": "x"}])
    assert result["mean"] is None and result["outcomes"]["no_score"] == 3


def test_the_judge_adds_no_retries_of_its_own_and_counts_errors(tmp_path):
    def down(messages, gen):
        raise BackendError("server down")

    backend = ScriptedBackend(down)
    judge = Judge(backend, JsonlCache(tmp_path / "j.jsonl"), JudgeSettings(samples=3))
    result = judge.score([{"role": "user", "content": "x"}])
    assert backend.calls == 3  # one call per sample: the backend's client alone retries transport errors
    assert result["outcomes"]["error"] == 3 and result["mean"] is None
    assert len(JsonlCache(tmp_path / "j.jsonl")) == 0  # errors are not cached: a rerun tries again

    flaky = ScriptedBackend(lambda m, g: "评分：5", fail_at=1, fail_with=BackendError("timeout"))
    cache = JsonlCache(tmp_path / "k.jsonl")
    assert Judge(flaky, cache, JudgeSettings(samples=1)).score([{"role": "user", "content": "x"}])["mean"] is None
    assert Judge(flaky, cache, JudgeSettings(samples=1)).score([{"role": "user", "content": "x"}])["mean"] == 5.0
    assert flaky.calls == 2


def test_pairwise_judges_both_orders_and_cancels_position_bias(tmp_path):
    def always_first(messages, gen):  # a judge that always prefers whatever is shown first
        return "结论：A"

    contexts = {"i1": "孩子：我很难过", "i2": "孩子：我很生气"}
    replies_a = {"i1": "a1", "i2": "a2"}
    replies_b = {"i1": "b1", "i2": "b2"}
    backend = ScriptedBackend(always_first)
    result = pairwise(Judge(backend, JsonlCache(tmp_path / "p.jsonl")), contexts, replies_a, replies_b)
    assert backend.calls == 4  # two orders per item
    assert result["counts"] == {"A": 0, "B": 0, "tie": 2, "invalid": 0}
    assert result["position_consistency"] == 0.0

    def content_judge(messages, gen):
        text = messages[-1]["content"]
        first = text.split("【回复 A】\n")[1][0]
        return "结论：A" if first == "b" else "结论：B"

    result = pairwise(Judge(ScriptedBackend(content_judge), JsonlCache(tmp_path / "q.jsonl")),
                      contexts, replies_a, replies_b)
    assert result["counts"]["B"] == 2 and result["win_rate_b"] == 1.0 and result["position_consistency"] == 1.0
