"""The judge against a real OpenAI-compatible server on loopback: llama-cpp-python's server with the fixture.

SmolLM2-135M is a weak, English-only judge: it often writes no usable score. This test checks the pipeline
(real calls made, every outcome counted, cached, recorded), not the quality of its judgement.
"""


import pytest

from qiaoban.backends import load_backend
from qiaoban.eval.cache import JsonlCache
from qiaoban.eval.judge import Judge, JudgeSettings, judge_replies, pairwise
from tests.helpers import llama_cpp_server


@pytest.fixture(scope="module")
def judge_url(fixture_model_path):
    with llama_cpp_server(fixture_model_path, alias="smollm2") as url:
        yield url


def test_judge_through_a_real_openai_compatible_server(tmp_path, judge_url):
    backend = load_backend("openai", base_url=judge_url, api_model="smollm2", timeout_s=300)
    settings = JudgeSettings(samples=2, temperature=1.0, max_tokens=16, workers=2)
    judge = Judge(backend, JsonlCache(tmp_path / "judge.jsonl"), settings, model_name="smollm2")
    records = [{"item_id": "i1", "history": [{"role": "user", "content": "我考试没考好。"}],
                "reply": "听起来你很失望，想和我说说吗？"}]
    judge_replies(judge, records, ("empathy",))
    outcomes = records[0]["judge_empathy_outcomes"]
    assert judge.calls == 2 and sum(outcomes.values()) == 2 and outcomes["error"] == 0
    assert (records[0]["judge_empathy"] is None) == (outcomes["ok"] == 0)
    assert len(records[0]["judge_empathy_prompt"]) == 24
    assert len(JsonlCache(tmp_path / "judge.jsonl")) == 2  # both real outputs cached, valid or not

    rerun = Judge(backend, JsonlCache(tmp_path / "judge.jsonl"), settings, model_name="smollm2")
    judge_replies(rerun, [dict(records[0])], ("empathy",))
    assert rerun.calls == 0

    result = pairwise(judge, {"i1": "孩子：我考试没考好。"}, {"i1": "别难过。"}, {"i1": "你一定很失望吧？"})
    assert result["n"] == 1 and sum(result["counts"].values()) == 1 and judge.calls == 4
