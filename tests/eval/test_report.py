"""The report: JSON summary keys and intervals, one self-contained HTML page, several models side by side."""

import json
import re

import pytest

from qiaoban.eval.cache import JsonlCache
from qiaoban.eval.judge import Judge, JudgeSettings
from qiaoban.eval.pipeline import run_eval
from qiaoban.eval.report import ReportError, write_report
from tests.eval.doubles import ScriptedBackend, dialogues

REQUIRED = ("ppl", "bleu4", "rouge_l", "distinct1", "distinct2", "mean_reply_chars")
JUDGED = ("fluency", "consistency", "empathy", "coaching")


def _judge(tmp_path, name):
    scores = iter([4, 5, 3, "n/a"] * 200)
    backend = ScriptedBackend(lambda m, g: f"评分：{next(scores)}", name=name)
    return Judge(backend, JsonlCache(tmp_path / f"{name}.jsonl"), JudgeSettings(samples=2))


def test_report_compares_models_with_intervals(tmp_path):
    run_eval(ScriptedBackend(lambda m, g: "听起来你很难过，想说说吗？", name="model-a"), dialogues(),
             tmp_path / "a", judge=_judge(tmp_path, "judge"), progress=False)
    run_eval(ScriptedBackend(lambda m, g: "# 建议\n1. 别哭了\n2. 去学习" + "啊" * 90, name="model-b"), dialogues(),
             tmp_path / "b", progress=False)
    summary = write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "out" / "report.html")
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert saved["models"] == json.loads(json.dumps(summary["models"]))
    a, b = saved["models"]
    assert (a["model"], b["model"]) == ("model-a", "model-b")
    for model in (a, b):
        assert all(key in model for key in REQUIRED)
        assert model["ppl"] is None  # a scripted backend has no logits: reported as missing, not invented
    assert all(key in a and f"{key}_ci" in a for key in JUDGED)
    assert not any(key in b for key in JUDGED)
    assert a["mean_reply_chars"] == 13 and a["mean_reply_chars_ci"] == [13.0, 13.0]
    assert a["question_rate"] == 1.0 and b["markdown_rate"] == 1.0 and b["over_80_rate"] == 1.0
    lo, hi = a["bleu4_ci"]
    assert lo <= a["bleu4"] <= hi
    assert a["judge_model"] == "judge"
    # every 4th judge output has no score: 4 items x 6 dimensions x 2 samples = 48 calls, 12 invalid, all counted
    assert sum(o["no_score"] for o in a["judge_outcomes"].values()) == 12
    assert sum(a["judge_outcomes"]["fluency"].values()) == 4 * 2  # 4 items x 2 samples, none dropped

    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("<svg") >= 4  # judge radar, strategy radar, a histogram per model + references
    assert "<style>" in page and "model-a" in page and "model-b" in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # nothing fetched from anywhere
    assert "qiaoban.safety.run_bench" in page or "safety" in page


def test_report_rejects_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(ReportError, match="not an evaluation run"):
        write_report([tmp_path], tmp_path / "r.html")


def test_paired_differences_are_over_shared_items_with_a_paired_interval():
    from qiaoban.eval.report import paired_differences

    def run(label, lengths):
        return {"label": label, "items": [{"dialogue_id": f"d{i}", "turn": 1, "reply_chars": n}
                                          for i, n in enumerate(lengths)]}

    base = run("base", [40, 80, 120, 60, 90, 30])
    # Every reply 10 characters shorter: a paired interval is exactly that, however much replies vary.
    shorter = run("tuned", [30, 70, 110, 50, 80, 20, 999])  # d6 is not in the baseline: left out
    paired = paired_differences(base, shorter)
    assert paired["n_shared"] == 6 and paired["mean_reply_chars"] == -10
    assert paired["mean_reply_chars_ci"] == [-10.0, -10.0]
    noisy = run("noisy", [45, 70, 130, 55, 85, 35])
    low, high = paired_differences(base, noisy)["mean_reply_chars_ci"]
    assert low < 0 < high
