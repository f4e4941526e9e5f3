"""`qiaoban data` commands: validate flags the defects the data README lists; import, stats, split; errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from qiaoban.data import import_corpus, validate_file
from qiaoban.data.cli import app
from qiaoban.dialogue import read_jsonl

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture(scope="module")
def child_chat(shared_data):
    path = shared_data / "qiaoban" / "child_chat_dev.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return path


@pytest.fixture(scope="module")
def child_chat_report(child_chat):
    result = run("validate", str(child_chat), "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_validate_flags_the_readme_defects(child_chat_report):
    report = child_chat_report
    defects = report["defects"]
    assert report["total"] == 70 and report["format"] == "qiaoban"
    # README: ~20 of 100 dialogues have the assistant speaking as 妈妈 -> about 14 of these 70
    assert 10 <= defects["parent_roleplay"]["count"] <= 20
    assert {"69", "44", "59", "100"} <= set(defects["parent_roleplay"]["ids"])
    # ... and the child calls the "assistant" 妈妈/爸爸: it is parent-child role-play throughout
    assert defects["child_calls_parent"]["count"] >= 60
    # README: 19 adjacent non-alternating turns in 100 dialogues
    assert 8 <= defects["non_alternating"]["count"] <= 19
    # README: 38 of 100 end on a child turn -> about 27 of these 70
    assert 20 <= defects["ends_with_child"]["count"] <= 34
    # README: dialogue 69, the teacher hit the child and the "assistant" asks what the child did wrong
    assert "69" in defects["unsafe_assistant"]["ids"]
    example = defects["unsafe_assistant"]["examples"][0]
    assert example["id"] == "69" and "victim_blaming" in example["detail"]
    assert report["clean"] == 0


def test_validate_human_report_names_each_defect(child_chat):
    result = run("validate", str(child_chat))
    assert result.exit_code == 0
    for name in ("parent_roleplay", "non_alternating", "unsafe_assistant", "ends_with_child"):
        assert name in result.stdout
    assert "70 dialogues" in result.stdout and "69" in result.stdout


def test_validate_real_entry_point_on_malformed_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"turns": [{"role": "child", "text": "你好"}]}\n{"turns": [\n', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "qiaoban", "data", "validate", str(bad)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"})
    assert proc.returncode == 2
    assert f"{bad}:2: invalid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_validate_skip_bad_counts_malformed_records(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = {"id": "a", "turns": [{"role": "child", "text": "我今天很难过。"}, {"role": "assistant", "text": "我在听。"}]}
    path.write_text(json.dumps(good, ensure_ascii=False) + '\n{"id": "b", "turns": [{"role": "teacher"}]}\n',
                    encoding="utf-8")
    assert run("validate", str(path)).exit_code == 2
    result = run("validate", str(path), "--skip-bad", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["total"] == 1 and report["defects"]["malformed_record"]["ids"] == ["line 2"]


def test_validate_reports_duplicates(tmp_path):
    record = {"turns": [{"role": "child", "text": "我和好朋友吵架了，他不理我了，我很难过。"},
                        {"role": "assistant", "text": "和好朋友吵架真的会让人难过，发生了什么呢？"}]}
    lines = [{**record, "id": "one"}, {**record, "id": "two"}, {**record, "id": "one"}]
    path = tmp_path / "dups.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    report = validate_file(path)
    assert report.defects["duplicate_id"] == ["one"]
    assert report.duplicate_pairs == [("two", "one"), ("one", "one")]
    assert report.clean == 0  # too short too (2 turns)


def test_import_then_stats_then_split(child_chat, tmp_path):
    out = tmp_path / "qiaoban.jsonl"
    result = run("import", str(child_chat), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "70 dialogues" in result.stdout
    imported = read_jsonl(out)
    assert [d.to_dict() for d in imported] == [d.to_dict() for d in import_corpus(child_chat)]

    result = run("stats", str(out), "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["dialogues"] == 70 and stats["turns"] == sum(len(d.turns) for d in imported)
    assert stats["sources"] == {"qiaoban": 70}
    assert stats["emotions"]["happy"] == 27
    assert stats["rejection_reasons"]["parent_roleplay"] >= 10
    assert stats["chars_per_turn"]["child"]["n"] + stats["chars_per_turn"]["assistant"]["n"] == stats["turns"]
    assert "turns per dialogue" in run("stats", str(out)).stdout

    result = run("split", str(out), "--out-dir", str(tmp_path / "splits"), "--seed", "3")
    assert result.exit_code == 0, result.output
    parts = {name: read_jsonl(tmp_path / "splits" / f"{name}.jsonl") for name in ("train", "dev", "test")}
    assert [len(p) for p in parts.values()] == [56, 7, 7]
    assert len({d.id for p in parts.values() for d in p}) == 70


def test_import_skip_bad_and_errors(tmp_path):
    src = tmp_path / "m.jsonl"
    src.write_text('{"id": 1, "messages": [{"role": "client", "content": "嗨"}]}\n'
                   '{"id": 2, "messages": [{"role": "robot", "content": "?"}]}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    out.write_text("keep me\n", encoding="utf-8")
    failed = run("import", str(src), "--out", str(out))
    assert failed.exit_code == 2 and ":2:" in failed.output and "unknown role 'robot'" in failed.output
    assert out.read_text(encoding="utf-8") == "keep me\n"  # a failed import leaves OUT as it was
    assert not list(tmp_path.glob("*.partial"))
    result = run("import", str(src), "--out", str(out), "--skip-bad")
    assert result.exit_code == 0 and "1 dialogues" in result.stdout and "1 malformed records skipped" in result.stdout
    assert run("import", str(tmp_path / "nope.json"), "--out", str(out)).exit_code == 2
    assert run("split", str(out), "--out-dir", str(tmp_path), "--ratios", "0.5,0.6").exit_code == 2
    assert run("validate", str(src), "--disable", "no_such_gate").exit_code == 2


def test_gate_config_from_yaml(tmp_path):
    data = tmp_path / "d.jsonl"
    turns = [{"role": "child", "text": "我今天被老师表扬了！"}, {"role": "assistant", "text": "哇，听起来你特别开心！"},
             {"role": "child", "text": "对呀，因为我画的画。"}]
    data.write_text(json.dumps({"id": "p", "turns": turns}, ensure_ascii=False) + "\n", encoding="utf-8")
    gates = tmp_path / "gates.yaml"
    gates.write_text("min_turns: 2\nmax_turns: 4\ndisabled: [ends_with_child]\n", encoding="utf-8")
    strict = json.loads(run("validate", str(data), "--json").stdout)
    assert set(strict["defects"]) == {"too_few_turns", "ends_with_child"}
    relaxed = json.loads(run("validate", str(data), "--json", "--gates", str(gates)).stdout)
    assert relaxed["defects"] == {} and relaxed["clean"] == 1
    gates.write_text("max_turn: 4\n", encoding="utf-8")
    result = run("validate", str(data), "--gates", str(gates))
    assert result.exit_code == 2 and "unknown GateConfig keys" in result.output
