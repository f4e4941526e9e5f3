"""The chat engine: a companion persona, the emotion-coaching system prompt, token-budgeted history, spoken-style
streaming, and the safety guard on both sides of the model.

    engine = ChatEngine(load_backend("llama"), Persona(name="小桥", age_band="9-12"))
    for piece in engine.stream("我今天被同学笑话了"):
        print(piece, end="", flush=True)

Each turn: the guard screens the child's message (with recent context); an emergency is answered from a vetted
template without the model; any other risk adds guidance to the system prompt and a vetted follow-up (trusted
adult, help line) to the reply. The output guard checks the model's text at every clause, before any of it is
shown; a harmful continuation is stopped and replaced.

What one model needs beyond that comes from its `ChatProfile` in the model registry (`backend.profile`): the
untuned base model gets the long coaching prompt, its reply stopped at a sentence end past 60 characters, and any
sentence that says the child's own words back in her first person ("我爸爸又打我了。") left out; a companion
trained on the gold corpus gets its short persona prompt and only the filters it still needs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Protocol

import yaml

from qiaoban.backends.base import Backend, ChatResult, GenerationConfig
from qiaoban.chat.history import trim_history
from qiaoban.chat.style import (
    CLAUSE_END,
    SENTENCE_END,
    ClauseStream,
    restates,
    split_sentences,
    unmatched_closers_removed,
)
from qiaoban.dialogue import Dialogue, Turn, chat_messages, content_id
from qiaoban.models.registry import ChatProfile

# How many earlier child messages the safety screen sees ("我已经决定了" after earlier despair).
SAFETY_CONTEXT_TURNS = 4
MAX_MESSAGE_CHARS = 2000
# The most of an unfinished sentence held back while the engine waits to see whether it parrots the child.
HELD_CHARS = 40


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

    def system_prompt(self, short: bool = False) -> str:
        """The coaching prompt for an untuned model; `short`: the persona line alone, for a model that was tuned
        on the gold corpus and has learned the behaviour (the line it was trained with)."""
        name = "prompts/system_short_zh.md" if short else "prompts/system_zh.md"
        template = resources.files("qiaoban.chat").joinpath(name).read_text("utf-8")
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

    def check_output(self, reply: str, verdict: Verdict | None, said: Sequence[str] = ()) -> str | None:
        """None when the reply is fine; otherwise the safe text to show instead of the rest. `said`: the child's
        messages, oldest first, the one being answered last."""
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
        profile: ChatProfile | None = None,
    ):
        self.backend = backend
        self.persona = persona or Persona()
        self.gen = gen or GenerationConfig(max_tokens=160, temperature=0.7, top_p=0.9, repeat_penalty=1.1)
        self.guard = guard
        self.profile = profile or backend.profile
        self.turns: list[Turn] = []

    @property
    def system_prompt(self) -> str:
        return self.persona.system_prompt(short=self.profile.short_prompt)

    def reset(self) -> None:
        self.turns = []

    def warm(self) -> str:
        """Ready the backend for a first message under this persona's system prompt (see `Backend.warm`)."""
        return self.backend.warm(self.system_prompt)

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
                reply = yield from self._generate(text, verdict, [*context, text])
        except BaseException:
            self.turns.pop()  # a failed or abandoned turn leaves the history as it was
            raise
        self.turns.append(Turn("assistant", reply.text))
        holder["reply"] = reply

    def _generate(self, message: str, verdict: Verdict | None, said: list[str]) -> Iterator[str]:
        system = self.system_prompt
        if verdict is not None and verdict.guidance:
            system += "\n\n" + verdict.guidance
        kept = trim_history(system, self.turns, self.backend.count_prompt_tokens,
                            self.backend.context_length - self.gen.max_tokens)
        stream = self.backend.stream_chat(chat_messages(system, kept), self.gen)
        clauses = ClauseStream()
        shown = _Shown(message, drop_echo=self.profile.drop_echo)
        stop_after = self.profile.stop_after_chars
        substitute: str | None = None
        long_enough = False
        deltas = iter(stream)
        for delta in deltas:
            piece = clauses.feed(delta)
            if not piece:
                continue
            if self.guard and (substitute := self.guard.check_output(clauses.text, verdict, said)) is not None:
                deltas.close()  # stop the model; what it has not said yet is never shown
                break
            yield from shown.add(piece)
            if (stop_after and len(shown.text) >= stop_after and not shown.pending
                    and shown.text[-1] in SENTENCE_END):
                deltas.close()
                long_enough = True
                break
        result = stream.result
        if substitute is None and not long_enough:
            tail = clauses.finish(truncated=result.finish_reason == "length")
            if tail and self.guard:
                substitute = self.guard.check_output(clauses.text, verdict, said)
            if substitute is None:
                yield from shown.add(tail)
        yield from shown.flush()
        if substitute is not None:
            yield from shown.add(substitute, as_is=True)
        elif long_enough and shown.open_quotes:  # stopped inside a quotation: close it
            yield from shown.add("”", as_is=True)
        if not shown.text.strip():
            yield from shown.add(_persona_data()["fallback_reply"], as_is=True)
        text = shown.text
        if verdict is not None and verdict.followup and verdict.followup not in text:
            ended = text[-1:] in CLAUSE_END + "：:、" or (text[-1:] in "”’" and text[-2:-1] in SENTENCE_END)
            yield from shown.add(("" if ended else "。") + verdict.followup, as_is=True)
        return Reply(shown.text.strip(), result=result, verdict=verdict, replaced=substitute is not None)

    def to_dialogue(self, dialogue_id: str | None = None, **meta: Any) -> Dialogue:
        return Dialogue(
            id=dialogue_id or content_id(self.turns),
            turns=list(self.turns),
            source="qiaoban-chat",
            meta={"model": self.backend.name, "persona": self.persona.name, "age_band": self.persona.age_band,
                  **meta},
        )


class _Shown:
    """The model's text on its way to the child. With `drop_echo` it is released a sentence at a time: a sentence
    that restates the child's message in the child's own voice is dropped, and so is a closing quotation mark
    whose opener was."""

    def __init__(self, message: str, drop_echo: bool):
        self.message = message
        self.drop_echo = drop_echo
        self.text = ""  # what the child has been shown
        self.pending = ""  # the unfinished sentence
        self.open_quotes = 0

    def add(self, piece: str, as_is: bool = False) -> Iterator[str]:
        if as_is:
            self.text += piece
            yield piece
            return
        if not self.drop_echo:
            yield from self._release(piece)
            return
        finished, self.pending = split_sentences(self.pending + piece)
        if len(self.pending) > HELD_CHARS:  # a sentence that runs on is not held back any longer
            finished.append(self.pending)
            self.pending = ""
        for sentence in finished:
            yield from self._release(sentence)

    def flush(self) -> Iterator[str]:
        rest, self.pending = self.pending, ""
        yield from self._release(rest)

    def _release(self, sentence: str) -> Iterator[str]:
        if not sentence or (self.drop_echo and restates(sentence, self.message)):
            return
        kept, self.open_quotes = unmatched_closers_removed(sentence, self.open_quotes)
        if kept:
            self.text += kept
            yield kept
