"""Rendering, assistant-only labels, whole-turn truncation and packing, checked against a real tokenizer."""

from __future__ import annotations

import pytest

from qiaoban.dialogue import Dialogue, Turn, read_jsonl
from qiaoban.train.dataset import IGNORE_INDEX, collate, encode_dialogue, encode_dialogues, pack

SYSTEM = "You are a kind friend for children."


def _dialogue(n_exchanges: int = 3, trailing_child: bool = False) -> Dialogue:
    turns = []
    for i in range(n_exchanges):
        turns += [Turn("child", f"Child message number {i} about my day."),
                  Turn("assistant", f"Answer {i}: that sounds hard, tell me more.")]
    if trailing_child:
        turns.append(Turn("child", "ok bye"))
    return Dialogue("d1", turns)


def _trained_runs(tokenizer, sample) -> list[str]:
    """Decode each contiguous run of trained (unmasked) tokens."""
    runs, current = [], []
    for token, label in zip(sample.input_ids, sample.labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run, skip_special_tokens=False) for run in runs]


def test_only_assistant_turns_and_their_end_token_are_trained(fixture_tokenizer):
    dialogue = _dialogue(3)
    [sample] = encode_dialogue(fixture_tokenizer, dialogue, SYSTEM, max_len=1024)
    end = fixture_tokenizer.eos_token  # <|im_end|> for this ChatML model
    expected = [t.text + end for t in dialogue.turns if t.role == "assistant"]
    assert _trained_runs(fixture_tokenizer, sample) == expected


def test_rendering_matches_the_tokenizers_own_chat_template(fixture_tokenizer):
    dialogue = _dialogue(2)
    [sample] = encode_dialogue(fixture_tokenizer, dialogue, SYSTEM, max_len=1024)
    reference = fixture_tokenizer.apply_chat_template(dialogue.to_chat_messages(SYSTEM), tokenize=True)
    reference_ids = reference["input_ids"] if hasattr(reference, "keys") else reference
    assert sample.input_ids == list(reference_ids)


def test_trailing_child_turn_is_dropped_and_broken_dialogues_skipped(fixture_tokenizer):
    [sample] = encode_dialogue(fixture_tokenizer, _dialogue(2, trailing_child=True), SYSTEM, max_len=1024)
    assert "ok bye" not in fixture_tokenizer.decode(sample.input_ids)
    broken = Dialogue("b", [Turn("assistant", "Hi!"), Turn("child", "hello")])
    samples, stats = encode_dialogues(fixture_tokenizer, [broken], SYSTEM, max_len=1024)
    assert samples == [] and stats.skipped == {"bad_structure": 1}


def test_truncation_keeps_whole_turns(fixture_tokenizer):
    dialogue = _dialogue(4)
    [full] = encode_dialogue(fixture_tokenizer, dialogue, SYSTEM, max_len=4096)
    max_len = len(full) // 2
    [sample] = encode_dialogue(fixture_tokenizer, dialogue, SYSTEM, max_len=max_len, long_dialogues="truncate")
    assert len(sample) <= max_len
    runs = _trained_runs(fixture_tokenizer, sample)
    answers = [t.text + fixture_tokenizer.eos_token for t in dialogue.turns if t.role == "assistant"]
    assert 1 <= len(runs) < 4 and runs == answers[: len(runs)]


def test_split_windows_cover_every_exchange_once(fixture_tokenizer):
    dialogue = _dialogue(5)
    [full] = encode_dialogue(fixture_tokenizer, dialogue, SYSTEM, max_len=4096)
    samples = encode_dialogue(fixture_tokenizer, dialogue, SYSTEM, max_len=len(full) // 2)
    assert len(samples) >= 2
    runs = [r for s in samples for r in _trained_runs(fixture_tokenizer, s)]
    assert runs == [t.text + fixture_tokenizer.eos_token for t in dialogue.turns if t.role == "assistant"]
    for s in samples:  # every window is a conversation of its own: system prompt first
        assert fixture_tokenizer.decode(s.input_ids).startswith("<|im_start|>system\n" + SYSTEM)
        assert len(s) <= len(full) // 2


def test_an_exchange_longer_than_max_len_is_skipped_not_cut(fixture_tokenizer):
    dialogue = Dialogue("long", [Turn("child", "hi"), Turn("assistant", "word " * 300)])
    samples, stats = encode_dialogues(fixture_tokenizer, [dialogue], SYSTEM, max_len=64)
    assert samples == [] and stats.skipped == {"exchange_longer_than_max_len": 1}


def test_packing_restarts_positions_and_keeps_samples_apart(fixture_tokenizer, tiny_model_dir, tiny_dialogues_path):
    """A sample's logits inside a packed row equal its logits alone: attention does not cross samples."""
    import torch
    from transformers import AutoModelForCausalLM

    samples, _ = encode_dialogues(fixture_tokenizer, read_jsonl(tiny_dialogues_path), SYSTEM, max_len=512)
    rows = pack(samples, max_len=512)
    assert len(rows) < len(samples) and all(len(r.input_ids) <= 512 for r in rows)
    assert sum(r.labels.count(IGNORE_INDEX) for r in rows) == sum(s.labels.count(IGNORE_INDEX) for s in samples)
    row = next(r for r in rows if r.position_ids.count(0) >= 2)
    start = row.position_ids.index(0, 1)  # the second sample in the row
    end = row.position_ids.index(0, start + 1) if row.position_ids.count(0) > 2 else len(row.input_ids)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    batch = collate([row], pad_id=fixture_tokenizer.pad_token_id)
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = model(input_ids=torch.tensor([row.input_ids[start:end]])).logits[0]
    assert torch.allclose(packed[start:end], alone, atol=1e-4)
    assert row.position_ids[start:end] == list(range(end - start))


def test_collate_pads_unpacked_samples_with_a_mask(fixture_tokenizer, tiny_dialogues_path):
    samples, _ = encode_dialogues(fixture_tokenizer, read_jsonl(tiny_dialogues_path), SYSTEM, max_len=512)
    batch = collate(samples[:3], pad_id=0)
    width = max(len(s) for s in samples[:3])
    assert batch["input_ids"].shape == (3, width)
    assert batch["attention_mask"].sum().item() == sum(len(s) for s in samples[:3])
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_invalid_long_dialogue_mode(fixture_tokenizer):
    with pytest.raises(ValueError, match="long_dialogues"):
        encode_dialogue(fixture_tokenizer, _dialogue(1), SYSTEM, max_len=64, long_dialogues="drop")


def test_the_short_persona_prompt_follows_each_dialogues_age_band(fixture_tokenizer):
    from qiaoban.train.config import config_from_dict
    from qiaoban.train.trainer import system_prompt_for

    config = config_from_dict({"data": {"train": "x.jsonl", "system_prompt": "persona-short"}})
    prompt = system_prompt_for(config)
    young, teen = _dialogue(1), _dialogue(1)
    young.meta, teen.meta = {"age_band": "6-8"}, {"age_band": "16-18"}
    assert "六到八岁" in prompt(young) and "十六到十八岁" in prompt(teen)
    [sample] = encode_dialogue(fixture_tokenizer, young, prompt, max_len=1024)
    assert "六到八岁" in fixture_tokenizer.decode(sample.input_ids)
