"""Perplexity of the reference replies under a model, given the real history (teacher forcing).

The dialogue is rendered with the model's own chat template and cut into segments at message boundaries:
context segments and reply segments. Each segment is tokenized on its own, so the reply tokens are exactly the
reference text plus the template's end-of-turn marker (what a fine-tune is trained to produce). One forward pass
over the whole dialogue scores every assistant turn; only reply tokens count. Perplexity is
exp(total negative log-likelihood / total reply tokens).

- llama.cpp: a second `Llama(..., logits_all=True)` instance on the same GGUF (+ LoRA), the prompt rendered with
  the GGUF's template exactly as `LlamaCppBackend.render_prompt` does.
- transformers: the backend's own model and tokenizer, `apply_chat_template`, a forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from qiaoban.backends import Backend, Message
from qiaoban.backends.llama_scoring import open_for_scoring, token_nll
from qiaoban.chat import Persona
from qiaoban.dialogue import Dialogue
from qiaoban.eval.cache import JsonlCache, stable_hash
from qiaoban.eval.generate import eval_items

Render = Callable[[list[Message], bool], str]  # (messages, add_generation_prompt) -> prompt text


@dataclass
class Segment:
    text: str
    item_id: str | None  # the item whose reply this is; None for context


def segments_for(messages: list[Message], reply_at: dict[int, str], render: Render) -> list[Segment]:
    """Cut the rendered conversation into context and reply segments.

    `reply_at` maps the index of each scored assistant message to its item id. Raises ValueError when the
    template does not render a conversation as the concatenation of its prefixes (then replies cannot be
    isolated).
    """
    last = max(reply_at)
    full = render(messages[: last + 1], False)
    segments: list[Segment] = []
    position = 0
    for index in sorted(reply_at):
        prefix = render(messages[:index], True)
        start, end = len(prefix), len(render(messages[: index + 1], False).rstrip())
        if not (position <= start <= end <= len(full)) or not full.startswith(prefix):
            raise ValueError("the chat template does not render this conversation prefix by prefix")
        segments.append(Segment(full[position:start], None))
        segments.append(Segment(full[start:end], reply_at[index]))
        position = end
    return [s for s in segments if s.text]


class Scorer:
    """Turns text segments into tokens and returns per-token negative log-likelihoods."""

    render: Render
    context_length: int

    def tokenize(self, text: str) -> list[int]: ...

    def token_nll(self, tokens: Sequence[int]) -> np.ndarray:
        """nll[i] = -log p(tokens[i + 1] | tokens[: i + 1]), for i in 0..len-2."""
        ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class LlamaCppScorer(Scorer):
    def __init__(self, model_path: str | Path, adapter_path: str | Path | None = None, n_ctx: int = 2048,
                 n_threads: int | None = None):
        from qiaoban.backends.llama_cpp import chat_formatter

        self.llm = open_for_scoring(model_path, adapter_path, n_ctx, n_threads)
        self.context_length = self.llm.n_ctx()
        self._formatters = {flag: chat_formatter(self.llm, Path(model_path), add_generation_prompt=flag)
                            for flag in (True, False)}

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self._formatters[add_generation_prompt](messages=messages).prompt

    def tokenize(self, text: str) -> list[int]:
        # The formatter reports added_special=True: the template writes any BOS itself, as in render_prompt.
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def token_nll(self, tokens: Sequence[int]) -> np.ndarray:
        return token_nll(self.llm, tokens)

    def close(self) -> None:
        self.llm.close()


class TransformersScorer(Scorer):
    def __init__(self, backend: Backend):
        self.model, self.tokenizer = backend.model, backend.tokenizer  # type: ignore[attr-defined]
        self.context_length = backend.context_length

    def render(self, messages: list[Message], add_generation_prompt: bool) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def token_nll(self, tokens: Sequence[int]) -> np.ndarray:
        import torch

        ids = torch.tensor([list(tokens)], device=self.model.device)
        with torch.no_grad():
            logits = self.model(input_ids=ids).logits[0, :-1].float()
            nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
        return nll.cpu().numpy().astype(np.float64)


def scorer_for(backend: Backend, n_ctx: int = 2048) -> Scorer | None:
    """A scorer on the same weights as `backend`; None for backends without access to logits (HTTP)."""
    from qiaoban.backends.llama_cpp import LlamaCppBackend

    if isinstance(backend, LlamaCppBackend):
        return LlamaCppScorer(backend.model_path, backend.adapter_path, n_ctx=n_ctx)
    if hasattr(backend, "model") and hasattr(backend, "tokenizer"):
        return TransformersScorer(backend)
    return None


def _score_window(scorer: Scorer, segments: list[Segment]) -> dict[str, tuple[float, int]]:
    tokens: list[int] = []
    owners: list[str | None] = []
    for segment in segments:
        ids = scorer.tokenize(segment.text)
        tokens += ids
        owners += [segment.item_id] * len(ids)
    if len(tokens) > scorer.context_length:
        raise OverflowError(len(tokens))
    nll = scorer.token_nll(tokens)
    totals: dict[str, tuple[float, int]] = {}
    for position in range(1, len(tokens)):
        owner = owners[position]
        if owner is not None:
            total, count = totals.get(owner, (0.0, 0))
            totals[owner] = (total + float(nll[position - 1]), count + 1)
    return totals


def reference_nll(
    scorer: Scorer,
    dialogues: list[Dialogue],
    cache: JsonlCache,
    *,
    model_key: dict,
    system_prompt: str | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """item_id -> {"nll": summed NLL of the reply tokens, "tokens": their count}; cached per dialogue.

    A dialogue longer than the scorer's context is scored turn by turn, each turn with the newest history that
    fits (oldest exchanges dropped, as the chat does).
    """
    system_prompt = system_prompt or Persona().system_prompt()
    out: dict[str, dict[str, float]] = {}
    for dialogue in tqdm(dialogues, desc="perplexity", disable=not progress, unit="dialogue"):
        items = list(eval_items([dialogue]))
        if not items:
            continue
        messages = dialogue.to_chat_messages(system_prompt)
        key = stable_hash({"model": model_key, "messages": messages, "items": [it.item_id for it in items]})
        cached = cache.get(key)
        if cached is None:
            reply_at = {it.turn + 1: it.item_id for it in items}  # +1: the system message comes first
            try:
                totals = _score_window(scorer, segments_for(messages, reply_at, scorer.render))
            except OverflowError:
                totals = {}
                for index, item_id in reply_at.items():
                    totals.update(_score_turn(scorer, messages, index, item_id))
            cached = {item_id: {"nll": total, "tokens": count} for item_id, (total, count) in totals.items()}
            cache.put(key, cached)
        out.update(cached)
    return out


def _score_turn(scorer: Scorer, messages: list[Message], index: int, item_id: str) -> dict[str, tuple[float, int]]:
    start = 1
    while True:
        window = messages[:1] + messages[start : index + 1]
        try:
            return _score_window(scorer, segments_for(window, {len(window) - 1: item_id}, scorer.render))
        except OverflowError:
            start += 2  # drop one exchange (a child message and the reply to it)
            if start >= index:
                return {}


def perplexity(nll_sum: float, tokens: int) -> float:
    return math.exp(nll_sum / tokens) if tokens else float("nan")
