"""The dialogue data model shared by every part of qiaoban.

A Dialogue is one conversation between a child and the companion. It is stored as one JSON object per line:

    {"id": "...", "topic": "...", "emotion": "...", "source": "...",
     "turns": [{"role": "child", "text": "..."}, {"role": "assistant", "text": "..."}], "meta": {...}}

Structure checks (who speaks first, alternation, empty turns) live here; content quality gates live in
`qiaoban.data`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Role = Literal["child", "assistant"]
ROLES: tuple[str, ...] = ("child", "assistant")

# How our roles map onto the chat-message roles that LLM backends speak.
CHAT_ROLE = {"child": "user", "assistant": "assistant"}


class DialogueFormatError(ValueError):
    """A record that is not a well-formed Dialogue; `line` is 1-based when read from a file."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None):
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)
        self.path = path
        self.line = line


@dataclass
class Turn:
    role: Role
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "text": self.text}


@dataclass
class Dialogue:
    id: str
    turns: list[Turn]
    topic: str = ""
    emotion: str = ""
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, record: Any) -> Dialogue:
        if not isinstance(record, dict):
            raise DialogueFormatError(f"expected a JSON object, got {type(record).__name__}")
        if "turns" not in record or not isinstance(record["turns"], list):
            raise DialogueFormatError("missing 'turns' (a list of {role, text})")
        turns = []
        for i, raw in enumerate(record["turns"]):
            if not isinstance(raw, dict) or "role" not in raw or "text" not in raw:
                raise DialogueFormatError(f"turn {i}: expected {{'role', 'text'}}, got {raw!r:.80}")
            if raw["role"] not in ROLES:
                raise DialogueFormatError(f"turn {i}: role must be one of {ROLES}, got {raw['role']!r}")
            if not isinstance(raw["text"], str):
                raise DialogueFormatError(f"turn {i}: text must be a string")
            turns.append(Turn(raw["role"], raw["text"]))
        meta = record.get("meta")
        meta = {} if meta is None else meta
        if not isinstance(meta, dict):
            raise DialogueFormatError("'meta' must be an object")
        dialogue_id = record.get("id")
        if dialogue_id is None or dialogue_id == "":
            dialogue_id = content_id(turns)
        return cls(
            id=str(dialogue_id),
            turns=turns,
            topic=str(record.get("topic") or ""),
            emotion=str(record.get("emotion") or ""),
            source=str(record.get("source") or ""),
            meta=meta,
        )

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["turns"] = [t.to_dict() for t in self.turns]
        return record

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def to_chat_messages(self, system_prompt: str | None = None) -> list[dict[str, str]]:
        return chat_messages(system_prompt, self.turns)

    def structure_problems(self) -> list[str]:
        return structure_problems(self.turns)


def chat_messages(system_prompt: str | None, turns: Iterable[Turn]) -> list[dict[str, str]]:
    """OpenAI-style messages: the system prompt (when given), then child -> user, assistant -> assistant."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": CHAT_ROLE[t.role], "content": t.text} for t in turns]


def merged_turns(turns: Iterable[Turn]) -> list[Turn]:
    """Consecutive turns of one speaker joined into one (a newline between them), as the model reads them."""
    merged: list[Turn] = []
    for turn in turns:
        if merged and merged[-1].role == turn.role:
            merged[-1] = Turn(turn.role, merged[-1].text + "\n" + turn.text)
        else:
            merged.append(turn)
    return merged


def with_pending(turns: list[Turn], message: str) -> tuple[list[Turn], str]:
    """The earlier turns and the child's new message; a child turn left unanswered at the end (a failed or
    interrupted reply) is joined to the message, so the model reads everything the child said."""
    if turns and turns[-1].role == "child":
        return turns[:-1], turns[-1].text + "\n" + message
    return turns, message


def field_value(dialogue: Dialogue, name: str) -> Any:
    """`topic`, `emotion`, `source`, `id` or `meta.KEY` (dotted, nested) of a dialogue; None when absent."""
    if not name.startswith("meta."):
        if name not in ("id", "topic", "emotion", "source"):
            raise ValueError(f"unknown field {name!r}: use id, topic, emotion, source or meta.KEY")
        return getattr(dialogue, name) or None
    value: Any = dialogue.meta
    for part in name.split(".")[1:]:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def content_id(turns: Iterable[Turn]) -> str:
    """A stable id from the dialogue's text, for records that arrive without one."""
    digest = hashlib.sha256()
    for turn in turns:
        digest.update(f"{turn.role}\x1f{turn.text}\x1e".encode())
    return digest.hexdigest()[:16]


def structure_problems(turns: list[Turn]) -> list[str]:
    """Names of structural defects: empty dialogue, assistant first, non-alternation, empty turns."""
    problems: list[str] = []
    if not turns:
        return ["empty_dialogue"]
    if turns[0].role != "child":
        problems.append("assistant_speaks_first")
    if any(a.role == b.role for a, b in zip(turns, turns[1:], strict=False)):
        problems.append("non_alternating")
    if any(not t.text.strip() for t in turns):
        problems.append("empty_turn")
    return problems


def validate(dialogue: Dialogue) -> None:
    """Raise DialogueFormatError if the dialogue breaks the structure every trainer and evaluator relies on."""
    problems = dialogue.structure_problems()
    if problems:
        raise DialogueFormatError(f"dialogue {dialogue.id}: {', '.join(problems)}")


def iter_json_lines(path: str | Path, *, encoding: str = "utf-8", hint: str = "") -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed record) from a JSONL file, skipping blank lines; a line that is not JSON raises
    DialogueFormatError naming file and line (`hint` is appended to the message)."""
    with open(path, encoding=encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise DialogueFormatError(f"invalid JSON ({err.msg} at column {err.colno}){hint}", path=path,
                                          line=number) from None


def iter_jsonl(path: str | Path) -> Iterator[Dialogue]:
    """Yield dialogues from a JSONL file; a malformed line raises DialogueFormatError naming file and line."""
    for number, record in iter_json_lines(path):
        try:
            yield Dialogue.from_dict(record)
        except DialogueFormatError as err:
            raise DialogueFormatError(str(err), path=path, line=number) from None


def read_jsonl(path: str | Path) -> list[Dialogue]:
    return list(iter_jsonl(path))


def write_jsonl(path: str | Path, dialogues: Iterable[Dialogue], *, append: bool = False) -> int:
    """Write dialogues one per line (UTF-8, not ASCII-escaped). Returns the count written."""
    count = 0
    with open(path, "a" if append else "w", encoding="utf-8") as handle:
        for dialogue in dialogues:
            handle.write(dialogue.to_json() + "\n")
            count += 1
    return count
