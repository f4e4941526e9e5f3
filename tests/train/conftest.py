"""Fixtures for the training tests: the fixture model's tokenizer (read straight from its GGUF) and a tiny
random-initialised Qwen2 that uses it, small enough to train in seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_DIALOGUES = Path(__file__).parent / "data" / "tiny_dialogues.jsonl"


@pytest.fixture(scope="session")
def fixture_tokenizer(fixture_model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(fixture_model_path.parent), gguf_file=fixture_model_path.name)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, fixture_tokenizer) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    path = tmp_path_factory.mktemp("tiny-qwen2")
    tok = fixture_tokenizer
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024, tie_word_embeddings=True, initializer_range=0.2,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dialogues_path() -> Path:
    return TINY_DIALOGUES
