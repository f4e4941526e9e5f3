"""`qiaoban synth` on the command line: dry run, and clear errors for bad input."""

from __future__ import annotations

from typer.testing import CliRunner

from qiaoban.cli import app

runner = CliRunner()


def test_dry_run_prints_prompts(tmp_path):
    out = tmp_path / "x.jsonl"
    result = runner.invoke(app, ["synth", "--n", "2", "--out", str(out), "--dry-run", "--seed", "4"])
    assert result.exit_code == 0, result.output
    assert "syn-s4-000000" in result.output and "syn-s4-000001" in result.output and "【情境】" in result.output
    assert not out.exists()


def test_dry_run_with_a_plain_topic_list(tmp_path):
    topics = tmp_path / "topics.txt"
    topics.write_text("堆雪人、打雪仗\n", encoding="utf-8")
    result = runner.invoke(app, ["synth", "--n", "2", "--out", str(tmp_path / "x.jsonl"), "--dry-run",
                                 "--topics", str(topics)])
    assert result.exit_code == 0 and "堆雪人" in result.output and "打雪仗" in result.output


def test_bad_input_gives_clear_errors(tmp_path):
    out = str(tmp_path / "x.jsonl")
    result = runner.invoke(app, ["synth", "--n", "1", "--out", out, "--dry-run", "--topics", "/nope.txt"])
    assert result.exit_code == 2 and "topic file not found" in result.output
    result = runner.invoke(app, ["synth", "--n", "1", "--out", out, "--backend", "openai"])
    assert result.exit_code == 2 and "--base-url" in result.output
    gates = tmp_path / "gates.yaml"
    gates.write_text("min_turnz: 3\n", encoding="utf-8")
    result = runner.invoke(app, ["synth", "--n", "1", "--out", out, "--gates", str(gates), "--dry-run"])
    assert result.exit_code == 2 and "min_turnz" in result.output


def test_a_corrupt_output_file_is_refused_not_overwritten(tmp_path):
    out = tmp_path / "x.jsonl"
    out.write_text('{"id": "a", "turns": []}\nnot json\n{"id": "b", "turns": []}\n', encoding="utf-8")
    before = out.read_bytes()
    result = runner.invoke(app, ["synth", "--n", "1", "--out", str(out), "--backend", "openai",
                                 "--base-url", "http://127.0.0.1:9/v1", "--no-safety-screen"])
    assert result.exit_code == 2 and "x.jsonl:2" in result.output
    assert out.read_bytes() == before
