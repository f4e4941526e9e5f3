"""The transformers backend with a real (tiny, random) model saved to disk: it streams, and it stops generating
as soon as its stream is closed."""

import time

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    chars = list("<>|/_:abcdefghijklmnopqrstuvwxyz 你好我很难过。") + ["<eos>", "<unk>"]
    vocab = {ch: i for i, ch in enumerate(chars)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="<unk>", pad_token="<eos>")
    tokenizer.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         eos_token_id=None, pad_token_id=vocab["<eos>"])  # it never ends on its own
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-hf")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_closing_the_stream_stops_generation(tiny_model_dir):
    from qiaoban.backends.base import GenerationConfig
    from qiaoban.backends.transformers_hf import TransformersBackend

    backend = TransformersBackend(tiny_model_dir, device="cpu", dtype="fp32")
    forwards = []
    backend.model.register_forward_hook(lambda *args: forwards.append(1))
    gen = GenerationConfig(max_tokens=3000, temperature=0.0)
    stream = backend.stream_chat([{"role": "user", "content": "我很难过"}], gen)
    pieces = iter(stream)
    got = [next(pieces) for _ in range(3)]
    pieces.close()
    assert "".join(got) and stream.result.text == "".join(got)
    ran = len(forwards)
    time.sleep(1.0)
    assert len(forwards) == ran < 100  # stopped when the stream was closed, not 3000 tokens later
    full = backend.chat([{"role": "user", "content": "你好"}], GenerationConfig(max_tokens=20, temperature=0.0))
    assert full.completion_tokens == 20  # and the next call runs normally
