"""Real training runs on a tiny random-initialised Qwen2 (seconds on a CPU): loss falls, runs resume,
every method trains, and a run that cannot fit stops with a clear error before loading anything."""

from __future__ import annotations

import json

import pytest

from qiaoban.train.config import config_from_dict, load_config
from qiaoban.train.memory import MemoryBudgetError
from qiaoban.train.trainer import run_training

SYSTEM = "You are a kind friend for children."


def _config(model_dir, data, out, **optim):
    return config_from_dict({
        "model": str(model_dir),
        "method": optim.pop("method", "lora"),
        "dtype": "float32",
        "output_dir": str(out),
        "data": {"train": str(data), "eval": str(data), "max_len": 256, "system_prompt": SYSTEM},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0,
                 "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
        "optim": {"batch_size": 2, "grad_accum": 1, "lr": 1e-2, "scheduler": "constant", "logging_steps": 1,
                  "save_steps": 3, **optim},
    })


def test_lora_loss_falls_and_beats_the_base_on_held_out(tiny_model_dir, tiny_dialogues_path, tmp_path):
    metrics = run_training(_config(tiny_model_dir, tiny_dialogues_path, tmp_path / "run", max_steps=12, lr=3e-2))
    losses = metrics["train_losses"]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses
    assert metrics["heldout_tuned"]["loss"] < metrics["heldout_base"]["loss"]
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("loss" in e for e in logged) and any("heldout_loss" in e for e in logged)


def test_a_stopped_run_resumes_from_its_checkpoint(tiny_model_dir, tiny_dialogues_path, tmp_path):
    out = tmp_path / "run"
    first = run_training(_config(tiny_model_dir, tiny_dialogues_path, out, max_steps=3), compare_base=False)
    assert first["steps"] == 3 and (out / "checkpoint-3").is_dir()
    second = run_training(_config(tiny_model_dir, tiny_dialogues_path, out, max_steps=5), compare_base=False)
    assert second["resumed_from"].endswith("checkpoint-3")
    assert second["steps"] == 5


@pytest.mark.parametrize("method", ["prefix", "full"])
def test_prefix_tuning_and_full_fine_tuning_train(tiny_model_dir, tiny_dialogues_path, tmp_path, method):
    metrics = run_training(_config(tiny_model_dir, tiny_dialogues_path, tmp_path / method, max_steps=8,
                                   method=method, lr=3e-3 if method == "prefix" else 1e-3))
    losses = metrics["train_losses"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    saved = tmp_path / method / ("model" if method == "full" else "adapter")
    assert (saved / ("config.json" if method == "full" else "adapter_config.json")).is_file()
    if method == "prefix":
        stats = json.loads((tmp_path / method / "data_stats.json").read_text())
        assert stats["packing"] is False  # a prefix cannot be shared by packed samples


def test_a_run_that_cannot_fit_stops_before_loading(tiny_model_dir, tiny_dialogues_path, tmp_path, monkeypatch):
    import qiaoban.train.memory as memory

    monkeypatch.setattr(memory, "available_ram_bytes", lambda: 1 << 20)
    with pytest.raises(MemoryBudgetError, match="needs about .* GiB of RAM but only"):
        run_training(_config(tiny_model_dir, tiny_dialogues_path, tmp_path / "run", max_steps=2, method="full"))
    assert not (tmp_path / "run" / "checkpoint-1").exists()


def test_config_files_load_and_overrides_apply():
    config = load_config("configs/lora_1.5b_cpu.yaml", ["optim.lr=1e-4", "data.packing=false"])
    assert config.method == "lora" and config.optim.lr == 1e-4 and config.data.packing is False
    for name in ("lora_tiny_test", "ptuning", "full", "lora_1.5b_gpu"):
        assert load_config(f"configs/{name}.yaml").method in ("lora", "prefix", "full")
    with pytest.raises(ValueError, match="unknown keys in optim"):
        load_config("configs/lora_1.5b_cpu.yaml", ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="method must be one of"):
        load_config("configs/lora_1.5b_cpu.yaml", ["method=qlora"])


def test_lora_on_the_upper_layers_only_adapts_those_blocks_and_trains(tiny_model_dir, tiny_dialogues_path,
                                                                       tmp_path):
    import re

    from qiaoban.train.trainer import apply_method, load_model

    config = _config(tiny_model_dir, tiny_dialogues_path, tmp_path / "run", max_steps=2)
    config.lora.layers = [1]
    model = apply_method(load_model(config, tiny_model_dir), config)
    adapted = {int(m.group(1)) for name, p in model.named_parameters()
               if p.requires_grad and (m := re.search(r"layers\.(\d+)\.", name))}
    assert adapted == {1}
    metrics = run_training(config, compare_base=False)
    assert metrics["steps"] == 2 and all(loss > 0 for loss in metrics["train_losses"])
