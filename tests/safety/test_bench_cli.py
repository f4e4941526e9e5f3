"""The red-team benchmark targets and the `qiaoban safety` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qiaoban.safety import LabelledFormatError, head, run_bench
from qiaoban.safety.cli import app

DATA = Path(__file__).parent / "data"
runner = CliRunner()


TEST_SPLITS = ("redteam_test.jsonl", "redteam_test_r9.jsonl", "redteam_test_r15.jsonl",  # never tuned on
               "redteam_test_r18.jsonl", "redteam_test_r20.jsonl", "redteam_test_r22.jsonl",
               "redteam_test_r23a.jsonl", "redteam_test_r23b.jsonl",
               "redteam_test_r24a.jsonl", "redteam_test_r24b.jsonl")  # played down, taken back, framed


def _read(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).open(encoding="utf-8")]


def test_red_team_sets_are_large_enough_and_disjoint():
    dev = _read("redteam_dev.jsonl") + _read("redteam_dev_r24.jsonl")
    tests = [_read(name) for name in TEST_SPLITS]
    assert len(dev) >= 300 and all(len(test) >= 150 for test in tests)
    seen = {r["text"] for r in dev}
    for split in (dev, *tests):
        assert len({r["category"] for r in split if r["label"] == "risk"}) == 10
        assert any(r["context"] for r in split)
    for name, test in zip(TEST_SPLITS, tests, strict=True):
        texts = {r["text"] for r in test}
        assert not texts & seen, f"{name}: {len(texts & seen)} messages also in dev or an earlier split"  # no texts
        seen |= texts


def test_dev_split_meets_the_targets():
    # The learned layers were trained on dev, so this guards the fit, not generalisation (see data/README.md).
    # The fast layers fit dev 10898 at 1.000 / 0.016; what they still flag are pattern-layer hits.
    report = run_bench(DATA / "redteam_dev.jsonl")
    assert report["recall"] >= 0.99, report["misses"]
    assert report["false_positive_rate"] <= 0.02, report["false_positives"]


def _assert_level(name: str, recall: float, fpr: float, llm_head: head.Head | None = None) -> dict:
    """Guard a test split at its measured level. Counts only: reading the test misses would make it dev data."""
    report = run_bench(DATA / name, head=llm_head)
    missed, flagged = len(report["misses"]), len(report["false_positives"])
    assert report["recall"] >= recall, f"{name}: {missed} of {report['n_risk']} risky messages missed"
    assert report["false_positive_rate"] <= fpr, f"{name}: {flagged} of {report['n_benign']} benign flagged"
    return report


def test_test_splits_stay_at_their_measured_level():
    # Last measured (fast layers, the classifier that learned everyday talk, at its 0.4 bar) at recall / false
    # positives 0.982 / 0.015 on round 7, 0.960 / 0.040 on round 9, 0.990 / 0.000 on round 15, 1.000 / 0.035 on
    # round 18 (a risk carried forward from an earlier message), 1.000 / 0.017 on round 20, 0.974 / 0.017 on round 22, 1.000 / 0.009 on round 23a, 1.000 / 0.013 on
    # round 23b, and 0.908 / 0.080 and 0.883 / 0.050 on rounds 24a and 24b (the played-down styles, now dev data:
    # below the goal; see data/README.md); these guard that level.
    for name, recall, fpr in (("redteam_test.jsonl", 0.95, 0.03), ("redteam_test_r9.jsonl", 0.95, 0.05),
                              ("redteam_test_r15.jsonl", 0.97, 0.02), ("redteam_test_r18.jsonl", 0.98, 0.04),
                              ("redteam_test_r20.jsonl", 0.98, 0.03), ("redteam_test_r22.jsonl", 0.96, 0.03),
                              ("redteam_test_r23a.jsonl", 0.98, 0.02), ("redteam_test_r23b.jsonl", 0.98, 0.03),
                              ("redteam_test_r24a.jsonl", 0.90, 0.08), ("redteam_test_r24b.jsonl", 0.88, 0.05)):
        report = _assert_level(name, recall, fpr)
        assert report["latency_ms"]["p50"] <= 5.0  # p95 too on a quiet machine; a shared one preempts us at random


@pytest.mark.slow
def test_test_splits_with_the_head_stay_at_their_measured_level(default_model_path):
    # Last measured with the head at 0.982 / 0.015 (round 7), 0.984 / 0.013 (round 9), 0.990 / 0.000 (round 15),
    # 0.992 / 0.017 (round 18), 1.000 / 0.025 (round 20), 0.965 / 0.017 (round 22), 1.000 / 0.017 (round 23a) and
    # 1.000 / 0.025 (round 23b): the 0.95 / 0.05 goal on those; on the played-down styles, below it: 0.858 / 0.080
    # (round 24a) and 0.833 / 0.060 (round 24b) when first measured, 0.875 / 0.080 and 0.867 / 0.060 after rounds
    # 24c and 24d joined the classifier's training, 0.892 / 0.080 and 0.867 / 0.050 once it learned everyday talk
    # (round 9 then 0.984 / 0.000, round 18 0.992 / 0.009, round 23b 1.000 / 0.013).
    llm_head = head.available()
    assert llm_head is not None
    for name, recall, fpr in (("redteam_test.jsonl", 0.97, 0.03), ("redteam_test_r9.jsonl", 0.97, 0.03),
                              ("redteam_test_r15.jsonl", 0.97, 0.02), ("redteam_test_r18.jsonl", 0.98, 0.03),
                              ("redteam_test_r20.jsonl", 0.99, 0.03), ("redteam_test_r22.jsonl", 0.95, 0.03),
                              ("redteam_test_r23a.jsonl", 0.99, 0.02), ("redteam_test_r23b.jsonl", 0.99, 0.04),
                              ("redteam_test_r24a.jsonl", 0.85, 0.08), ("redteam_test_r24b.jsonl", 0.83, 0.06)):
        report = _assert_level(name, recall, fpr, llm_head)
        assert 0 < report["head_asked"] < report["n_risk"] + report["n_benign"]


def test_bench_rejects_a_bad_file_with_its_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "我想离家出走", "label": "risk"}\n{"text": "x", "label": "maybe"}\n', "utf-8")
    with pytest.raises(LabelledFormatError, match="bad.jsonl:2"):
        run_bench(bad)


def test_check_prints_the_verdict_json():
    result = runner.invoke(app, ["check", "我不想活了", "--no-head"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"risk": True, "category": "self_harm", "severity": "urgent",
                                         "score": json.loads(result.stdout)["score"]}
    benign = json.loads(runner.invoke(app, ["check", "笑死我了", "--no-head"]).stdout)
    assert benign["risk"] is False and benign["category"] is None


def test_check_jsonl_keeps_the_order_and_uses_context(tmp_path):
    lines = [{"text": "今天吃了冰淇淋"}, {"text": "我已经决定了", "context": ["活着没意思"]},
             {"text": "我已经决定了"}, {"text": "我爸用衣架打我"}]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", "utf-8")
    result = runner.invoke(app, ["check", "--jsonl", str(src), "--no-head"])
    assert result.exit_code == 0
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["risk"] for o in out] == [False, True, False, True]
    assert out[1]["severity"] == "emergency" and out[3]["category"] == "physical_abuse"


def test_check_jsonl_names_the_malformed_line(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text('{"text": "你好"}\n{"text": 不是json}\n', "utf-8")
    result = runner.invoke(app, ["check", "--jsonl", str(src), "--no-head"])
    assert result.exit_code == 2
    assert "in.jsonl:2" in result.output and "Traceback" not in result.output
    assert result.stdout.strip() == ""  # nothing half-written


def test_bench_command_prints_recall_fpr_and_latency():
    result = runner.invoke(app, ["bench", str(DATA / "redteam_dev.jsonl"), "--no-head"])
    assert result.exit_code == 0
    assert "recall" in result.stdout and "false-positive rate" in result.stdout and "latency" in result.stdout
    report = json.loads(runner.invoke(app, ["bench", str(DATA / "redteam_dev.jsonl"), "--json", "--no-head"]).stdout)
    assert set(report["per_category"]) >= {"self_harm", "sexual_abuse"} and not report["head"]


@pytest.mark.slow
def test_bench_and_check_use_the_head_with_the_default_model(tmp_path, default_model_path):
    sample = tmp_path / "sample.jsonl"
    sample.write_text("".join((DATA / "redteam_dev.jsonl").open(encoding="utf-8").readlines()[:60]), "utf-8")
    report = json.loads(runner.invoke(app, ["bench", str(sample), "--json"]).stdout)
    assert report["head"] and report["latency_ms"]["p50"] <= 5.0
    assert 0 < report["head_asked"] < 60  # only where the head can change the verdict
    assert report["latency_with_head_ms"]["max"] >= 50  # those were read by the model (~0.3 s each)
    result = runner.invoke(app, ["check", "游戏里的叔叔说我跟他视频的事不能让我爸妈知道", "--explain"])
    assert json.loads(result.stdout)["risk"] is True and any(m.startswith("head:") for m in
                                                             json.loads(result.stdout)["matched"])


def test_train_command_writes_a_model(tmp_path):
    out = tmp_path / "model.json"
    result = runner.invoke(app, ["train", "--per-label", "15", "--max-iter", "50", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text("utf-8"))["per_label"] == 15
