"""`qiaoban train` commands: help that teaches, build-data writes the mix, bad input exits 2 with a reason."""

from __future__ import annotations

from typer.testing import CliRunner

from qiaoban.dialogue import read_jsonl
from qiaoban.train.cli import app

runner = CliRunner()


def test_help_shows_the_whole_path():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "convert-gguf", "export", "build-data", "finish", "accelerate launch"):
        assert command in result.output


def test_build_data_writes_train_and_held_out(tmp_path, tiny_dialogues_path):
    mix = tmp_path / "mix.yaml"
    mix.write_text(f"eval_fraction: 0.34\ngates: false\nsources:\n  - {{path: {tiny_dialogues_path}, weight: 1}}\n")
    result = runner.invoke(app, ["build-data", str(mix), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    train = list(read_jsonl(tmp_path / "out" / "train.jsonl"))
    held_out = list(read_jsonl(tmp_path / "out" / "eval.jsonl"))
    assert len(train) == 3 and len(held_out) == 2  # 6 * 0.66 -> 3 train; their held-out share -> 2
    assert not {d.id for d in train} & {d.id for d in held_out}


def test_bad_config_and_bad_export_target_exit_with_a_reason(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: fixture\nmethod: lora\nlearning_rate: 1\ndata: {train: x.jsonl}\n")
    result = runner.invoke(app, ["run", str(bad)])
    assert result.exit_code == 2 and "unknown config keys" in result.output
    result = runner.invoke(app, ["export", str(tmp_path), "--to", "gguf-adapter"])
    assert result.exit_code == 2 and "not a finished training run" in result.output
