"""Export round trip on the real fixture model: SmolLM2 GGUF -> trainable checkpoint -> LoRA -> GGUF adapter,
then llama.cpp with the adapter predicts the same next token as transformers + peft."""

from __future__ import annotations

import pytest

from qiaoban.train.config import load_config
from qiaoban.train.trainer import run_training

PROMPT = [
    {"role": "system", "content": "You are a kind friend for children."},
    {"role": "user", "content": "My friends laughed at my drawing today."},
]


@pytest.fixture(scope="module")
def fixture_lora_run(tmp_path_factory, fixture_model_path):
    """The tiny LoRA config trained on the converted fixture (conversion is cached in $QIAOBAN_HOME/hf)."""
    out = tmp_path_factory.mktemp("lora-run")
    metrics = run_training(load_config("configs/lora_tiny_test.yaml", [f"output_dir={out}"]))
    return out, metrics


def _transformers_logits(metrics, run_dir, ids, with_adapter: bool):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(metrics["model_dir"], dtype=torch.float32)
    if with_adapter:
        model = PeftModel.from_pretrained(model, str(run_dir / "adapter"))
    with torch.no_grad():
        return model.eval()(input_ids=torch.tensor([ids])).logits[0, -1].numpy()


def _llama_logits(model_path, adapter, ids):
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(str(model_path), lora_path=str(adapter) if adapter else None, n_ctx=512, logits_all=True,
                verbose=False, n_threads=2)
    try:
        llm.eval(ids)
        return np.array(llm.scores[len(ids) - 1])
    finally:
        llm.close()


@pytest.mark.slow
def test_lora_gguf_adapter_gives_the_same_next_token_in_llama_cpp(fixture_lora_run, tmp_path):
    """Compared on an f16 GGUF of the very weights transformers trains, so quantization does not dominate."""
    import numpy as np
    from transformers import AutoTokenizer

    from qiaoban.models import read_gguf_header
    from qiaoban.train.export import export_lora_gguf, hf_to_gguf

    run_dir, metrics = fixture_lora_run
    assert metrics["train_losses"][-1] < metrics["train_losses"][0]
    adapter = export_lora_gguf(run_dir, run_dir / "adapter.gguf")
    read_gguf_header(adapter)
    base_f16 = hf_to_gguf(metrics["model_dir"], tmp_path / "base-f16.gguf")
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    ids = list(tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True)["input_ids"])

    hf_tuned = _transformers_logits(metrics, run_dir, ids, with_adapter=True)
    hf_base = _transformers_logits(metrics, run_dir, ids, with_adapter=False)
    cpp_tuned = _llama_logits(base_f16, adapter, ids)
    cpp_base = _llama_logits(base_f16, None, ids)

    assert int(np.argmax(cpp_tuned)) == int(np.argmax(hf_tuned))
    assert int(np.argmax(cpp_base)) == int(np.argmax(hf_base))
    # The adapter really is applied in llama.cpp: it moves the logits as it moves them in transformers.
    shift_hf, shift_cpp = hf_tuned - hf_base, cpp_tuned - cpp_base
    assert np.abs(shift_hf).max() > 0.5
    assert np.corrcoef(shift_hf, shift_cpp)[0, 1] > 0.95


@pytest.mark.slow
def test_merged_export_quantizes_and_loads_in_llama_cpp(fixture_lora_run, tmp_path):
    import numpy as np

    from qiaoban.models import read_gguf_header
    from qiaoban.train.export import export_merged_gguf

    run_dir, metrics = fixture_lora_run
    merged = export_merged_gguf(run_dir, tmp_path / "merged-q4_k_m.gguf", quant="Q4_K_M")
    read_gguf_header(merged)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "adapter")
    ids = list(tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True)["input_ids"])
    hf_tuned = _transformers_logits(metrics, run_dir, ids, with_adapter=True)
    cpp_merged = _llama_logits(merged, None, ids)
    top5 = np.argsort(hf_tuned)[-5:]  # 4-bit weights: the winner must be among transformers' best five
    assert int(np.argmax(cpp_merged)) in top5


@pytest.mark.slow
def test_held_out_loss_in_llama_cpp_matches_transformers(fixture_lora_run):
    """`finish --eval-with llama` measures the exported adapter on the GGUF base: same numbers as torch."""
    from qiaoban.train.trainer import finish_run

    run_dir, metrics = fixture_lora_run
    finished = finish_run(run_dir, eval_with="llama")
    assert finished["heldout_tuned"]["tokens"] == metrics["heldout_tuned"]["tokens"]
    for key in ("heldout_base", "heldout_tuned"):
        assert abs(finished[key]["loss"] - metrics[key]["loss"]) < 0.05, (key, finished[key], metrics[key])
    assert finished["heldout_tuned"]["loss"] < finished["heldout_base"]["loss"]
