"""Preference pairs and DPO: the pair formats and their errors, `train build-pairs`, the GGUF adapter read back
into PEFT, and a real DPO run on the fixture model that continues from an exported adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from qiaoban.cli import app
from qiaoban.train.config import config_from_dict, load_config
from qiaoban.train.pairs import (
    PairError,
    pairs_from_contrast,
    pairs_from_eval_run,
    pairs_from_rated,
    read_pairs,
    sample_pairs,
)

TINY_PAIRS = Path(__file__).parent / "data" / "tiny_pairs.jsonl"


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_tiny_pairs_are_valid():
    pairs = read_pairs(TINY_PAIRS)
    assert len(pairs) == 8 and all(p.history[-1]["role"] == "user" for p in pairs)


@pytest.mark.parametrize(("row", "message"), [
    ("{not json", "not JSON"),
    ({"history": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"}, "end with the child"),
    ({"history": [], "chosen": "a", "rejected": "b"}, "non-empty list"),
    ({"history": [{"role": "user", "content": "hi"}], "chosen": "", "rejected": "b"}, "'chosen'"),
    ({"history": [{"role": "user", "content": "hi"}], "chosen": "same", "rejected": "same"}, "the same reply"),
])
def test_bad_pairs_name_the_file_and_line(tmp_path, row, message):
    good = {"history": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"}
    path = _write(tmp_path / "pairs.jsonl", [good, row])
    with pytest.raises(PairError, match=message) as info:
        read_pairs(path)
    assert "pairs.jsonl:2" in str(info.value)


def test_rated_replies_join_written_ones_by_message(tmp_path):
    rated = _write(tmp_path / "rated.jsonl", [
        {"context": ["我睡不着"], "text": "我爸又打我了 开玩笑的", "reply": "那就好", "harmful": True, "kinds": ["relief"]},
        {"context": [], "text": "今天考试没考好", "reply": "没关系呀", "harmful": False},
    ])
    written = _write(tmp_path / "written.jsonl", [
        {"context": [], "text": "今天考试没考好", "reply": "没考好挺失落的吧。", "age_band": "6-8"},
        {"context": ["我睡不着"], "text": "我爸又打我了 开玩笑的", "reply": "被打不是你的错。", "age_band": "13-15"},
    ])
    pairs = pairs_from_rated(rated, written)
    assert [p.chosen for p in pairs] == ["被打不是你的错。", "没考好挺失落的吧。"]
    assert pairs[0].history == [{"role": "user", "content": "我睡不着\n我爸又打我了 开玩笑的"}]
    assert pairs[0].age_band == "13-15" and pairs[0].meta["harmful"] is True
    assert [p.rejected for p in pairs_from_rated(rated, written, harmful_only=True)] == ["那就好"]
    _write(written, [{"context": [], "text": "今天考试没考好", "reply": "没考好挺失落的吧。"}])
    with pytest.raises(PairError, match="rated.jsonl:1: no written reply"):
        pairs_from_rated(rated, written)


def test_contrast_and_eval_run_sources(tmp_path):
    contrast = _write(tmp_path / "contrast.jsonl", [
        {"id": "c1", "context": [], "text": "想从楼上跳下去 开玩笑的", "age": 11, "reply": "哈哈那就好", "harmful": True},
        {"id": "c2", "context": [], "text": "想从楼上跳下去 开玩笑的", "age": 11, "reply": "我很在意你。", "harmful": False},
    ])
    (pair,) = pairs_from_contrast(contrast)
    assert (pair.chosen, pair.rejected, pair.age_band) == ("我很在意你。", "哈哈那就好", "9-12")

    run = tmp_path / "run"
    run.mkdir()
    history = [{"role": "user", "content": "我的仓鼠死了"}]
    _write(run / "items.jsonl", [
        {"item_id": "d1#1", "history": history, "reference": "它叫什么名字？", "raw_reply": "去看医生", "age_band": "6-8"},
        {"item_id": "d2#1", "history": history, "reference": "一样", "raw_reply": "一样"},
    ])
    (pair,) = pairs_from_eval_run(run)
    assert (pair.chosen, pair.rejected, pair.age_band) == ("它叫什么名字？", "去看医生", "6-8")
    with pytest.raises(PairError, match="no items.jsonl"):
        pairs_from_eval_run(tmp_path)


def test_sample_is_seeded_and_keeps_order():
    pairs = read_pairs(TINY_PAIRS)
    first, again = sample_pairs(pairs, 3, seed=1), sample_pairs(pairs, 3, seed=1)
    assert [p.id for p in first] == [p.id for p in again]
    assert [p.id for p in first] == sorted((p.id for p in first), key=[q.id for q in pairs].index)
    assert sample_pairs(pairs, None) == pairs


def test_build_pairs_cli(tmp_path):
    contrast = _write(tmp_path / "contrast.jsonl", [
        {"id": "c1", "context": [], "text": "当我没说", "reply": "好的那就好", "harmful": True},
        {"id": "c2", "context": [], "text": "当我没说", "reply": "好，我不逼你说。", "harmful": False},
    ])
    out = tmp_path / "pairs.jsonl"
    result = CliRunner().invoke(app, ["train", "build-pairs", "--contrast", str(contrast), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 1 pairs" in result.output and len(read_pairs(out)) == 1
    result = CliRunner().invoke(app, ["train", "build-pairs", "--rated", str(contrast), "--out", str(out)])
    assert result.exit_code == 2 and "every --rated file needs its --written file" in result.output


def test_dpo_needs_lora_and_pair_files():
    with pytest.raises(ValueError, match="objective dpo trains a LoRA"):
        config_from_dict({"method": "full", "objective": "dpo", "data": {"train": "p.jsonl"}})
    with pytest.raises(ValueError, match="objective must be"):
        config_from_dict({"objective": "ppo", "data": {"train": "p.jsonl"}})
    assert load_config("configs/dpo_1.5b_cpu.yaml").preference.init_adapter == "qiaoban-companion-1.5b-gold-v1"


def _pair_margins(model, tokenizer, config, pairs) -> list[float]:
    """log p(chosen) - log p(rejected) of each pair's reply tokens under `model`."""
    import torch

    from qiaoban.train.preference import pair_prompt

    margins = []
    for pair in pairs:
        prompt = tokenizer.apply_chat_template(pair_prompt(config, pair), add_generation_prompt=True, tokenize=False)
        logps = []
        for reply in (pair.chosen, pair.rejected):
            start = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
            ids = tokenizer(prompt + reply, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].log_softmax(-1)
            target = torch.tensor(ids[1:])
            logps.append(float(logits[torch.arange(len(target)), target][start - 1:].sum()))
        margins.append(logps[0] - logps[1])
    return margins


@pytest.mark.slow
def test_gguf_adapter_reads_back_into_peft_and_dpo_continues_from_it(tmp_path, fixture_model_path):
    """SFT adapter -> GGUF -> PEFT again (same logits) -> DPO from it: the policy moves towards the chosen replies
    while the reference stays the SFT adapter."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from qiaoban.train.convert import peft_adapter_from_gguf
    from qiaoban.train.export import export_lora_gguf
    from qiaoban.train.preference import run_preference_training
    from qiaoban.train.trainer import load_tokenizer, run_training

    sft_dir = tmp_path / "sft"
    sft = run_training(load_config("configs/lora_tiny_test.yaml", [f"output_dir={sft_dir}"]), compare_base=False)
    gguf = export_lora_gguf(sft_dir, tmp_path / "tiny-sft.gguf")
    back = peft_adapter_from_gguf(gguf, Path(sft["model_dir"]), force=True)
    tokenizer = load_tokenizer(Path(sft["model_dir"]))
    ids = torch.tensor([tokenizer("My friends laughed at my drawing today.")["input_ids"]])

    def logits(adapter_dir: Path) -> torch.Tensor:
        base = AutoModelForCausalLM.from_pretrained(sft["model_dir"], dtype=torch.float32)
        with torch.no_grad():
            return PeftModel.from_pretrained(base, str(adapter_dir)).eval()(input_ids=ids).logits

    original, read_back = logits(sft_dir / "adapter"), logits(back)
    assert torch.allclose(original, read_back, atol=2e-2), float((original - read_back).abs().max())

    config = load_config("configs/dpo_tiny_test.yaml", [f"output_dir={tmp_path / 'dpo'}",
                                                        f"preference.init_adapter={gguf}"])
    metrics = run_preference_training(config)
    assert metrics["steps"] == 8 and metrics["init_adapter"] == str(gguf)
    assert metrics["heldout"]["eval_rewards/accuracies"] >= 0.75
    pairs = read_pairs(TINY_PAIRS)
    before = _pair_margins(PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(sft["model_dir"], dtype=torch.float32), str(back)).eval(),
        tokenizer, config, pairs)
    after = _pair_margins(PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(sft["model_dir"], dtype=torch.float32),
        str(tmp_path / "dpo" / "adapter")).eval(), tokenizer, config, pairs)
    assert sum(after) / len(after) > sum(before) / len(before) + 1.0, (before, after)
    assert (tmp_path / "dpo" / "adapter" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "dpo" / "adapter" / "ref").exists()  # only the trained adapter is saved
    export_lora_gguf(tmp_path / "dpo", tmp_path / "tiny-dpo.gguf")
