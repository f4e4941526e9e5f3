"""Dialogues -> token ids and labels, rendered with the base model's own chat template.

Loss is only on what the companion says: every assistant turn plus the token that ends it (for ChatML
`<|im_end|>`), so the model learns to stop. The system prompt, the child's turns and the template's role
headers are masked with -100. (QiaoBan trained on every token and dropped the last one of each sample.)

We render the whole conversation once with `tokenizer.apply_chat_template(..., tokenize=False)`, find each
assistant message's character span by rendering the prefix that ends in the assistant header, and then
tokenize the full text with offsets: a token is trained on when it lies inside an assistant span. Long
dialogues are cut at turn boundaries only, never mid-turn: `truncate` keeps the longest prefix of whole
child+assistant exchanges that fits; `split` also turns the rest into further windows (each starting with the
system prompt and a child turn), so a 16-turn dialogue is not wasted at a 384-token length.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from qiaoban.dialogue import Dialogue, Turn, chat_messages

IGNORE_INDEX = -100


class TemplateError(ValueError):
    """The tokenizer's chat template does not render prefixes consistently, so masks cannot be derived."""


@dataclass
class Sample:
    input_ids: list[int]
    labels: list[int]
    dialogue_id: str = ""
    source: str = ""

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


@dataclass
class BuildStats:
    dialogues: int = 0
    samples: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    dropped_exchanges: int = 0
    tokens: int = 0
    trained_tokens: int = 0

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def exchanges_of(dialogue: Dialogue) -> list[tuple[Turn, Turn]] | None:
    """The (child, assistant) pairs of a well-formed dialogue; a trailing child turn is dropped (nothing to learn).

    None when the structure is broken (assistant first, non-alternating, empty turns): fix those upstream.
    """
    turns = list(dialogue.turns)
    if turns and turns[-1].role == "child":
        turns = turns[:-1]
    if not turns or dialogue.structure_problems():
        return None
    return [(turns[i], turns[i + 1]) for i in range(0, len(turns), 2)]


def _messages(system_prompt: str, exchanges: list[tuple[Turn, Turn]]) -> list[dict[str, str]]:
    return chat_messages(system_prompt, [turn for exchange in exchanges for turn in exchange])


def _special_texts(tokenizer) -> list[str]:
    texts = set(tokenizer.all_special_tokens)
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(token, "special", False):
            texts.add(str(token))
    return sorted(texts, key=len, reverse=True)


def assistant_spans(tokenizer, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character span of each assistant message, end-of-turn token included."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    specials = _special_texts(tokenizer)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        header = tokenizer.apply_chat_template(messages[:i], tokenize=False, add_generation_prompt=True)
        if not text.startswith(header):
            raise TemplateError("the chat template does not render the conversation prefix as a prefix of the whole")
        start = len(header)
        if not text.startswith(message["content"], start):
            raise TemplateError("the chat template changes the assistant's text; cannot locate the turn to train on")
        end = start + len(message["content"])
        end_of_turn = next((s for s in specials if text.startswith(s, end)), "")
        spans.append((start, end + len(end_of_turn)))
    return text, spans


def encode_messages(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[int], list[int]]:
    """input_ids, labels, and the token index where each assistant turn ends (exclusive)."""
    text, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    ends = []
    span_index = 0
    for t, (start, end) in enumerate(offsets):
        while span_index < len(spans) and start >= spans[span_index][1]:
            ends.append(t)
            span_index += 1
        if span_index < len(spans) and start >= spans[span_index][0] and end <= spans[span_index][1] and end > start:
            labels[t] = ids[t]
    ends += [len(ids)] * (len(spans) - len(ends))
    return ids, labels, ends


def encode_dialogue(
    tokenizer,
    dialogue: Dialogue,
    system_prompt: str | Callable[[Dialogue], str],
    max_len: int,
    long_dialogues: str = "split",
    stats: BuildStats | None = None,
) -> list[Sample]:
    """Samples for one dialogue: one (truncate) or several (split) windows of whole exchanges, each <= max_len.
    `system_prompt` may depend on the dialogue (e.g. its age band)."""
    if callable(system_prompt):
        system_prompt = system_prompt(dialogue)
    if long_dialogues not in ("split", "truncate"):
        raise ValueError(f"long_dialogues must be 'split' or 'truncate', got {long_dialogues!r}")
    stats = stats if stats is not None else BuildStats()
    stats.dialogues += 1
    exchanges = exchanges_of(dialogue)
    if exchanges is None:
        stats.skip("bad_structure")
        return []
    samples = []
    rest = exchanges
    while rest:
        ids, labels, ends = encode_messages(tokenizer, _messages(system_prompt, rest))
        fits = sum(1 for end in ends if end <= max_len)
        while 0 < fits < len(rest) or len(ids) > max_len:
            # render the kept window by itself (templates need not be concatenative) and check it really fits
            ids, labels, _ = encode_messages(tokenizer, _messages(system_prompt, rest[:fits]))
            if len(ids) <= max_len or fits == 0:
                break
            fits -= 1
        if fits == 0:  # the first exchange alone is too long: skip it, never cut a turn
            stats.skip("exchange_longer_than_max_len")
            rest = rest[1:]
            continue
        samples.append(Sample(ids, labels, dialogue.id, dialogue.source))
        rest = rest[fits:]
        if long_dialogues == "truncate":
            stats.dropped_exchanges += len(rest)
            break
    for sample in samples:
        stats.samples += 1
        stats.tokens += len(sample)
        stats.trained_tokens += sample.n_trained
    return samples


def encode_dialogues(
    tokenizer, dialogues: Iterable[Dialogue], system_prompt: str | Callable[[Dialogue], str], max_len: int,
    long_dialogues: str = "split",
) -> tuple[list[Sample], BuildStats]:
    stats = BuildStats()
    samples = [s for d in dialogues for s in encode_dialogue(tokenizer, d, system_prompt, max_len, long_dialogues, stats)]
    return samples, stats


# ---- packing ---------------------------------------------------------------------------------------------


@dataclass
class PackedRow:
    """Several samples back to back; position ids restart at 0 for each, which is how attention keeps them apart."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]


def pack(samples: list[Sample], max_len: int) -> list[PackedRow]:
    """First-fit-decreasing bin packing of samples into rows of at most max_len tokens.

    With `position_ids` that restart per sample and no 2-D attention mask, transformers builds a block-diagonal
    causal mask (sdpa/eager: `masking_utils.find_packed_sequence_indices`; flash-attention: varlen from
    position ids), so a sample never attends to its neighbours. The first label of every sample is masked (it is
    a template token), so no loss crosses a sample boundary either.
    """
    bins: list[list[Sample]] = []
    room: list[int] = []
    for sample in sorted(samples, key=len, reverse=True):
        if len(sample) > max_len:
            raise ValueError(f"sample of {len(sample)} tokens is longer than max_len {max_len}")
        for i, free in enumerate(room):
            if len(sample) <= free:
                bins[i].append(sample)
                room[i] -= len(sample)
                break
        else:
            bins.append([sample])
            room.append(max_len - len(sample))
    rows = []
    for group in bins:
        rows.append(
            PackedRow(
                input_ids=[t for s in group for t in s.input_ids],
                labels=[t for s in group for t in s.labels],
                position_ids=[p for s in group for p in range(len(s))],
            )
        )
    return rows


def collate(rows: list, pad_id: int) -> dict:
    """Pad a batch of Samples or PackedRows to its longest row.

    Packed rows carry position ids and no attention mask; their padding becomes its own position-0 run, which
    the block-diagonal mask keeps apart, and its labels are ignored. Unpacked samples get an ordinary
    attention mask.
    """
    import torch

    width = max(len(r.input_ids) for r in rows)
    batch: dict[str, torch.Tensor] = {
        "input_ids": torch.tensor([r.input_ids + [pad_id] * (width - len(r.input_ids)) for r in rows]),
        "labels": torch.tensor([r.labels + [IGNORE_INDEX] * (width - len(r.labels)) for r in rows]),
    }
    if isinstance(rows[0], PackedRow):
        batch["position_ids"] = torch.tensor(
            [r.position_ids + list(range(width - len(r.position_ids))) for r in rows]
        )
    else:
        batch["attention_mask"] = torch.tensor(
            [[1] * len(r.input_ids) + [0] * (width - len(r.input_ids)) for r in rows]
        )
    return batch


