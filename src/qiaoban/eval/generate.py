"""Replies to score: at each assistant turn of a test dialogue, the model answers the real history.

The context is teacher-forced: the model sees the reference conversation up to the child's message (under the
companion's system prompt), never its own earlier replies. Each call is cached on disk under a hash of the
model, adapter, generation settings and prompt messages, so a rerun costs nothing and a killed run resumes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from qiaoban.backends import Backend, GenerationConfig, Message
from qiaoban.chat import ChatEngine, Guard, Persona, trim_history
from qiaoban.chat.style import spoken
from qiaoban.dialogue import Dialogue, Turn
from qiaoban.eval.cache import CachedBackend, JsonlCache, stable_hash

# The chat's deployed sampling settings, with a fixed seed so that a rerun reproduces the replies.
EVAL_GENERATION = GenerationConfig(max_tokens=160, temperature=0.7, top_p=0.9, top_k=40, repeat_penalty=1.1, seed=0)


@dataclass
class EvalItem:
    """One assistant turn to answer: `history` is the conversation before it, ending on the child's message."""

    item_id: str
    dialogue_id: str
    turn: int
    history: list[Message]
    reference: str
    topic: str = ""
    emotion: str = ""
    age_band: str = ""


def eval_items(dialogues: Iterable[Dialogue]) -> Iterator[EvalItem]:
    """Every assistant turn that directly answers a child turn (non-alternating turns are not scored)."""
    for dialogue in dialogues:
        for i, turn in enumerate(dialogue.turns):
            if turn.role != "assistant" or i == 0 or dialogue.turns[i - 1].role != "child":
                continue
            history = Dialogue(dialogue.id, dialogue.turns[:i]).to_chat_messages()
            yield EvalItem(f"{dialogue.id}#{i}", dialogue.id, i, history, turn.text, dialogue.topic, dialogue.emotion,
                           str(dialogue.meta.get("age_band") or ""))


def cuts_per_dialogue(items: Iterable[tuple[str, str]], per_dialogue: int, seed: int = 0) -> list[str]:
    """Item ids, seeded: `per_dialogue` of each dialogue's (item id, dialogue id) pairs, any child turn (the
    opening included) equally likely. `eval run --per-dialogue` and `eval annotate export` pick the same ones."""
    by_dialogue: dict[str, list[str]] = {}
    for item_id, dialogue_id in items:
        by_dialogue.setdefault(dialogue_id, []).append(item_id)

    def rank(item_id: str) -> str:
        return stable_hash({"seed": seed, "key": item_id})

    return [i for ids in by_dialogue.values() for i in sorted(ids, key=rank)[:per_dialogue]]


def prompt_messages(backend: Backend, item: EvalItem, system_prompt: str, gen: GenerationConfig) -> list[Message]:
    """System prompt plus the history, oldest exchanges dropped if it does not fit the context."""
    turns = [Turn("child" if m["role"] == "user" else "assistant", m["content"]) for m in item.history]
    kept = trim_history(system_prompt, turns, backend.count_prompt_tokens, backend.context_length - gen.max_tokens)
    return Dialogue(item.dialogue_id, kept).to_chat_messages(system_prompt)


def model_id(backend: Backend, adapter: str | None = None) -> dict[str, Any]:
    return {"name": backend.name, "adapter": adapter or "", "backend": type(backend).__name__}


def generate_replies(
    backend: Backend,
    items: list[EvalItem],
    cache: JsonlCache,
    *,
    adapter: str | None = None,
    gen: GenerationConfig = EVAL_GENERATION,
    system_prompt: str | None = None,
    as_deployed: bool = False,
    through_engine: bool = False,
    guard: Guard | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """One record per item: reference, raw model reply, the evaluated reply, token counts, and the cache key.

    `as_deployed=True` evaluates the reply after the chat's spoken-style filter (markdown stripped), as a child
    would see it; the raw reply is kept either way. `through_engine=True` answers each item through the whole
    chat engine instead (`engine_reply`), the guard included when one is given.
    """
    if through_engine:
        return engine_replies(backend, items, cache, adapter=adapter, gen=gen, guard=guard, progress=progress)
    system_prompt = system_prompt or Persona().system_prompt()
    cached_backend = CachedBackend(backend, cache, model_id(backend, adapter))
    records = []
    for item in tqdm(items, desc=f"generating ({backend.name})", disable=not progress, unit="reply"):
        messages = prompt_messages(backend, item, system_prompt, gen)
        result = cached_backend.chat(messages, gen)
        raw = result.text.strip()
        records.append({
            "item_id": item.item_id, "dialogue_id": item.dialogue_id, "turn": item.turn,
            "topic": item.topic, "emotion": item.emotion, "age_band": item.age_band, "history": item.history,
            "reference": item.reference, "raw_reply": raw, "reply": spoken(raw).strip() if as_deployed else raw,
            "kept_history_messages": len(messages) - 1, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens, "finish_reason": result.finish_reason,
            "cache_key": cached_backend.key(messages, gen),
        })
    return records


def engine_replies(
    backend: Backend,
    items: list[EvalItem],
    cache: JsonlCache,
    *,
    adapter: str | None = None,
    gen: GenerationConfig = EVAL_GENERATION,
    guard: Guard | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """What a child would receive at each item: the chat engine (persona for the item's age band, the safety
    guard on both sides, the engine's reply filters) answers the last child message of the real history."""
    cached_backend = CachedBackend(backend, cache, {**model_id(backend, adapter), "through": "chat engine"})
    records = []
    for item in tqdm(items, desc=f"replying through the engine ({backend.name})", disable=not progress,
                     unit="reply"):
        persona = Persona(age_band=item.age_band) if item.age_band else Persona()
        engine = ChatEngine(cached_backend, persona, gen=gen, guard=guard)
        engine.turns = [Turn("child" if m["role"] == "user" else "assistant", m["content"]) for m in item.history]
        message = engine.turns.pop().text
        reply = engine.reply(message)
        result, verdict = reply.result, reply.verdict
        records.append({
            "item_id": item.item_id, "dialogue_id": item.dialogue_id, "turn": item.turn,
            "topic": item.topic, "emotion": item.emotion, "age_band": item.age_band, "history": item.history,
            "reference": item.reference, "raw_reply": result.text.strip() if result else "", "reply": reply.text,
            "from_template": result is None, "guard_replaced": reply.replaced,
            "risk_category": getattr(verdict, "category", None) if getattr(verdict, "risk", False) else None,
            "prompt_tokens": result.prompt_tokens if result else 0,
            "completion_tokens": result.completion_tokens if result else 0,
            "finish_reason": result.finish_reason if result else "template",
        })
    return records
