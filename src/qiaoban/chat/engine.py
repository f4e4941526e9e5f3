"""The chat engine: a companion persona, the emotion-coaching system prompt, token-budgeted history, spoken-style
streaming, and the safety guard on both sides of the model.

    engine = ChatEngine(load_backend("llama"), Persona(name="小桥", age_band="9-12"))
    for piece in engine.stream("我今天被同学笑话了"):
        print(piece, end="", flush=True)

Each turn: the guard screens the child's message (with recent context); an emergency is answered from a vetted
template without the model; any other risk adds guidance to the system prompt and a vetted follow-up (trusted
adult, help line) to the reply. The model's text is released clause by clause, and the output guard checks
every clause before it is shown; a harmful continuation is stopped and replaced.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Protocol

import yaml

from qiaoban.backends.base import Backend, ChatResult, GenerationConfig
from qiaoban.chat.history import build_messages, trim_history
from qiaoban.chat.style import CLAUSE_END, SENTENCE_END, ClauseStream
from qiaoban.dialogue import Dialogue, Turn, content_id

# How many earlier child messages the safety screen sees ("我已经决定了" after earlier despair).
SAFETY_CONTEXT_TURNS = 4
MAX_MESSAGE_CHARS = 2000
# Generation stops at the first sentence end past this many characters.
DEFAULT_REPLY_CHARS = 60


@cache
def _persona_data() -> dict[str, Any]:
    return yaml.safe_load(resources.files("qiaoban.chat").joinpath("prompts/personas.yaml").read_text("utf-8"))


@dataclass
class Persona:
    name: str = field(default_factory=lambda: _persona_data()["default_name"])
    age_band: str = field(default_factory=lambda: _persona_data()["default_age_band"])

    def __post_init__(self) -> None:
        bands = _persona_data()["age_bands"]
        if self.age_band not in bands:
            raise ValueError(f"unknown age band {self.age_band!r}; choose one of {', '.join(bands)}")

    def system_prompt(self) -> str:
        template = resources.files("qiaoban.chat").joinpath("prompts/system_zh.md").read_text("utf-8")
        return template.format(name=self.name, age_desc=_persona_data()["age_bands"][self.age_band]).strip()


class Verdict(Protocol):
    """What the engine reads from a safety verdict (see `qiaoban.safety`)."""

    risk: bool
    category: str | None
    severity: str | None
    template_reply: str | None  # answer with this instead of the model (emergencies)
    guidance: str  # added to the system prompt for this turn
    followup: str  # appended to the model's reply when it does not already say it


class Guard(Protocol):
    def check_input(self, text: str, context: list[str]) -> Verdict: ...

    def check_output(self, reply: str, verdict: Verdict | None) -> str | None:
        """None when the reply is fine; otherwise the safe text to show instead of the rest."""
        ...


@dataclass
class Reply:
    text: str
    result: ChatResult | None = None  # None when the reply came from a template
    verdict: Verdict | None = None
    replaced: bool = False  # the output guard stopped the model and substituted safe text


class ReplyStream:
    """Iterate for the text pieces as they are released; `.reply` afterwards."""

    def __init__(self, pieces: Iterator[str], holder: dict[str, Reply]):
        self._pieces = pieces
        self._holder = holder

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    @property
    def reply(self) -> Reply:
        if "reply" not in self._holder:
            raise RuntimeError("the reply stream has not been consumed yet")
        return self._holder["reply"]

    def collect(self) -> Reply:
        for _ in self._pieces:
            pass
        return self.reply


class ChatEngine:
    def __init__(
        self,
        backend: Backend,
        persona: Persona | None = None,
        gen: GenerationConfig | None = None,
        guard: Guard | None = None,
        max_reply_chars: int | None = DEFAULT_REPLY_CHARS,
    ):
        self.backend = backend
        self.persona = persona or Persona()
        self.gen = gen or GenerationConfig(max_tokens=160, temperature=0.7, top_p=0.9, repeat_penalty=1.1)
        self.guard = guard
        self.max_reply_chars = max_reply_chars
        self.turns: list[Turn] = []

    @property
    def system_prompt(self) -> str:
        return self.persona.system_prompt()

    def reset(self) -> None:
        self.turns = []

    def stream(self, text: str) -> ReplyStream:
        text = text.strip()
        if not text:
            raise ValueError("the message is empty")
        if len(text) > MAX_MESSAGE_CHARS:
            raise ValueError(f"the message is too long ({len(text)} characters; at most {MAX_MESSAGE_CHARS})")
        holder: dict[str, Reply] = {}
        return ReplyStream(self._respond(text, holder), holder)

    def reply(self, text: str) -> Reply:
        return self.stream(text).collect()

    def _respond(self, text: str, holder: dict[str, Reply]) -> Iterator[str]:
        context = [t.text for t in self.turns if t.role == "child"][-SAFETY_CONTEXT_TURNS:]
        verdict = self.guard.check_input(text, context) if self.guard else None
        self.turns.append(Turn("child", text))
        try:
            if verdict is not None and verdict.template_reply:
                reply = Reply(verdict.template_reply, verdict=verdict)
                yield reply.text
            else:
                reply = yield from self._generate(verdict)
        except BaseException:
            self.turns.pop()  # a failed or abandoned turn leaves the history as it was
            raise
        self.turns.append(Turn("assistant", reply.text))
        holder["reply"] = reply

    def _generate(self, verdict: Verdict | None) -> Iterator[str]:
        system = self.system_prompt
        if verdict is not None and verdict.guidance:
            system += "\n\n" + verdict.guidance
        kept = trim_history(system, self.turns, self.backend.count_prompt_tokens,
                            self.backend.context_length - self.gen.max_tokens)
        stream = self.backend.stream_chat(build_messages(system, kept), self.gen)
        clauses = ClauseStream()
        replaced = long_enough = False
        deltas = iter(stream)
        for delta in deltas:
            piece = clauses.feed(delta)
            if not piece:
                continue
            substitute = self.guard.check_output(clauses.text, verdict) if self.guard else None
            if substitute is not None:
                deltas.close()  # stop the model; what it has not said yet is never shown
                replaced = True
                break
            yield piece
            # Base models ignore the prompt's length rule; a child gets a few sentences, then a turn to talk.
            if self.max_reply_chars and len(clauses.text) >= self.max_reply_chars and clauses.text[-1] in SENTENCE_END:
                deltas.close()
                long_enough = True
                break
        result = stream.result
        text = clauses.text[: len(clauses.text) - len(piece)] if replaced else clauses.text
        if replaced:
            yield substitute
            text += substitute
        elif long_enough:
            if text.count("“") > text.count("”"):  # stopped inside a quotation: close it
                yield "”"
                text += "”"
        else:
            tail = clauses.finish(truncated=result.finish_reason == "length")
            if tail and self.guard and (substitute := self.guard.check_output(text + tail, verdict)) is not None:
                tail, replaced = substitute, True
            if tail:
                yield tail
                text += tail
        if not text.strip():
            text = _persona_data()["fallback_reply"]
            yield text
        if verdict is not None and verdict.followup and verdict.followup not in text:
            lead = "" if not text or text[-1] in CLAUSE_END + "：:、" else "。"
            yield lead + verdict.followup
            text += lead + verdict.followup
        return Reply(text.strip(), result=result, verdict=verdict, replaced=replaced)

    def to_dialogue(self, dialogue_id: str | None = None, **meta: Any) -> Dialogue:
        return Dialogue(
            id=dialogue_id or content_id(self.turns),
            turns=list(self.turns),
            source="qiaoban-chat",
            meta={"model": self.backend.name, "persona": self.persona.name, "age_band": self.persona.age_band,
                  **meta},
        )
