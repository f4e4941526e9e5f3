"""Read public dialogue corpora into our Dialogue records, faithfully: defects are kept for `validate` to report.

Formats (detected from the first record; `format=` forces one):

- `qiaoban`   JSON array of {"dialog_id", "emotion", "topic", "dialog": [{"text", "speaker": 孩子|智能助手}]}
- `messages`  JSONL {"id", "messages": [{"role": client|counselor, "content"}]} (SMILE, CPsyCoun)
- `chatml`    JSONL {"messages": [{"role": system|user|assistant, "content"}]}
- `xtuner`    JSON array of {"conversation": [{"system"?, "input", "output"}]} (EmoLLM)
- `dialogue`  our own JSONL (see qiaoban.dialogue)

Any of them may be a JSON array or JSONL. A malformed record raises DialogueFormatError naming the file and
the line (JSONL) or record number (JSON array); with `skip_bad=True` it is skipped and appended to `errors`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from qiaoban.dialogue import Dialogue, DialogueFormatError, Turn, content_id, iter_json_lines

FORMATS = ("qiaoban", "messages", "chatml", "xtuner", "dialogue")

QIAOBAN_SPEAKERS = {"孩子": "child", "智能助手": "assistant"}
# Roles of the messages/ChatML formats: the person seeking help is our child, the helper our assistant.
MESSAGE_ROLES = {"client": "child", "user": "child", "counselor": "assistant", "assistant": "assistant"}


class CorpusRecordError(DialogueFormatError):
    """A record that does not convert; `record` is its 1-based position (the line number for JSONL)."""

    def __init__(self, message: str, *, path: Path, record: int, line: int | None = None):
        super().__init__(message, path=path, line=line)
        self.record = record


def _records(path: Path) -> Iterator[tuple[str, int, Any]]:
    """Yield (where, number, record): where is "line" for JSONL, "record" (1-based) for a JSON array."""
    number = 0
    try:
        with open(path, encoding="utf-8-sig") as handle:
            head = handle.read(4096).lstrip(" \t\r\n")
        if not head:
            raise DialogueFormatError("empty file", path=path)
        if head.startswith("["):
            try:
                with open(path, encoding="utf-8-sig") as handle:
                    data = json.load(handle)
            except json.JSONDecodeError as err:
                raise DialogueFormatError(f"invalid JSON ({err.msg} at column {err.colno})", path=path,
                                          line=err.lineno) from None
            for number, record in enumerate(data, start=1):
                yield "record", number, record
            return
        for number, record in iter_json_lines(
                path, encoding="utf-8-sig", hint="; expected a JSON array or one JSON object per line"):
            yield "line", number, record
    except UnicodeDecodeError as err:
        raise DialogueFormatError(f"not UTF-8 text ({err.reason} near line {number + 1})", path=path) from None


def _format_of(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    if "turns" in record:
        return "dialogue"
    if "dialog" in record:
        return "qiaoban"
    if "conversation" in record:
        return "xtuner"
    if isinstance(record.get("messages"), list):
        roles = {m.get("role") for m in record["messages"] if isinstance(m, dict)}
        return "messages" if roles & {"client", "counselor"} else "chatml"
    return None


def detect_format(path: str | Path) -> str:
    """The format name of a corpus file, from its first record."""
    path = Path(path)
    for where, number, record in _records(path):
        fmt = _format_of(record)
        if fmt is None:
            keys = sorted(record) if isinstance(record, dict) else type(record).__name__
            raise DialogueFormatError(
                f"{where} {number}: unknown record layout (keys: {keys}); expected one of the formats "
                f"{', '.join(FORMATS)} (see `qiaoban data import --help`)", path=path)
        return fmt
    raise DialogueFormatError("no records in file", path=path)


def default_source(path: str | Path, fmt: str) -> str:
    """A source name from the file name for the corpora we know, else the format name."""
    name = str(path).lower()
    for needle, source in (("smile", "smile"), ("cpsycoun", "cpsycoun"), ("emollm", "emollm"),
                           ("qiaoban", "qiaoban"), ("child_chat", "qiaoban")):
        if needle in name:
            return source
    return "qiaoban" if fmt == "qiaoban" else fmt


def _label(value: Any) -> str:
    """A topic or emotion label; missing ones (None, or NaN from a pandas export) become ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _need(record: Any, key: str, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(record, dict):
        raise DialogueFormatError(f"expected a JSON object, got {type(record).__name__}")
    if key not in record:
        raise DialogueFormatError(f"missing {key!r} (keys: {sorted(record)})")
    value = record[key]
    if not isinstance(value, kind):
        raise DialogueFormatError(f"{key!r} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def _text(item: dict, key: str, label: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise DialogueFormatError(f"{label}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _from_qiaoban(record: Any, source: str) -> Dialogue:
    turns = []
    for i, item in enumerate(_need(record, "dialog", list)):
        if not isinstance(item, dict):
            raise DialogueFormatError(f"dialog[{i}]: expected {{'text', 'speaker'}}, got {item!r:.60}")
        speaker = item.get("speaker")
        if speaker not in QIAOBAN_SPEAKERS:
            raise DialogueFormatError(f"dialog[{i}]: unknown speaker {speaker!r} (expected 孩子 or 智能助手)")
        turns.append(Turn(QIAOBAN_SPEAKERS[speaker], _text(item, "text", f"dialog[{i}]")))
    dialog_id = record.get("dialog_id")
    return Dialogue(
        id=str(dialog_id) if dialog_id not in (None, "") else content_id(turns),
        turns=turns, topic=_label(record.get("topic")), emotion=_label(record.get("emotion")), source=source,
    )


def _from_messages(record: Any, source: str) -> Dialogue:
    turns, meta = [], {}
    for i, item in enumerate(_need(record, "messages", list)):
        if not isinstance(item, dict):
            raise DialogueFormatError(f"messages[{i}]: expected {{'role', 'content'}}, got {item!r:.60}")
        role = item.get("role")
        content = _text(item, "content", f"messages[{i}]")
        if role == "system":
            meta["system"] = content
            continue
        if role not in MESSAGE_ROLES:
            raise DialogueFormatError(
                f"messages[{i}]: unknown role {role!r} (expected one of system, {', '.join(MESSAGE_ROLES)})")
        turns.append(Turn(MESSAGE_ROLES[role], content))
    for key in ("source_file",):
        if key in record:
            meta[key] = record[key]
    record_id = record.get("id")
    return Dialogue(
        id=str(record_id) if record_id not in (None, "") else content_id(turns),
        turns=turns, topic=_label(record.get("topic")), emotion=_label(record.get("emotion")),
        source=source, meta=meta,
    )


def _from_xtuner(record: Any, source: str) -> Dialogue:
    turns, meta = [], {}
    for i, item in enumerate(_need(record, "conversation", list)):
        if not isinstance(item, dict):
            raise DialogueFormatError(f"conversation[{i}]: expected {{'input', 'output'}}, got {item!r:.60}")
        if isinstance(item.get("system"), str) and item["system"]:
            meta.setdefault("system", item["system"])
        turns.append(Turn("child", _text(item, "input", f"conversation[{i}]")))
        turns.append(Turn("assistant", _text(item, "output", f"conversation[{i}]")))
    record_id = record.get("id")
    return Dialogue(id=str(record_id) if record_id not in (None, "") else content_id(turns),
                    turns=turns, source=source, meta=meta)


def _from_dialogue(record: Any, source: str) -> Dialogue:
    dialogue = Dialogue.from_dict(record)
    if not dialogue.source:
        dialogue.source = source
    return dialogue


CONVERTERS: dict[str, Callable[[Any, str], Dialogue]] = {
    "qiaoban": _from_qiaoban,
    "messages": _from_messages,
    "chatml": _from_messages,
    "xtuner": _from_xtuner,
    "dialogue": _from_dialogue,
}


def import_corpus(
    path: str | Path,
    format: str | None = None,
    *,
    source: str | None = None,
    skip_bad: bool = False,
    errors: list[CorpusRecordError] | None = None,
) -> Iterator[Dialogue]:
    """Yield the dialogues of a corpus file. `source` defaults to a name guessed from the path ("smile",
    "cpsycoun", "emollm", "qiaoban") and is kept when a `dialogue` record has its own. With `skip_bad`, a
    malformed record is skipped and its error appended to `errors` instead of raised."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    fmt = format or detect_format(path)
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    convert = CONVERTERS[fmt]
    source = source or default_source(path, fmt)
    for where, number, record in _records(path):
        try:
            yield convert(record, source)
        except DialogueFormatError as err:
            if where == "line":
                error = CorpusRecordError(f"{fmt} record: {err}", path=path, line=number, record=number)
            else:
                error = CorpusRecordError(f"record {number}{_record_label(record)}: {err}", path=path, record=number)
            if not skip_bad:
                raise error from None
            if errors is not None:
                errors.append(error)


def _record_label(record: Any) -> str:
    if isinstance(record, dict):
        for key in ("dialog_id", "id"):
            if key in record:
                return f" ({key} {record[key]})"
    return ""
