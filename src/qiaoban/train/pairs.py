"""Preference pairs: a better and a worse companion reply to the same conversation, for DPO.

One JSON object per line:

    {"id": "...", "source": "...", "age_band": "9-12",
     "history": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}, ...],
     "chosen": "...", "rejected": "..."}

`history` is the conversation before the reply and ends with the child's message; the system prompt is not stored
(training adds the persona line for `age_band`, as the chat does). Pairs are built from three kinds of sources:

- an `eval run` directory (`items.jsonl`): the gold reply is chosen and the model's own reply to the same cut of
  the same dialogue is rejected;
- rated replies (the safety reply files: `text`, `context`, `reply`, `harmful`) joined with replies written for
  the same messages (`text`, `context`, `reply`, optional `age_band`): the written reply is chosen, the model's
  rated reply rejected;
- contrastive reply files (the same message answered once harmfully and once not): harmless chosen, harmful
  rejected.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from qiaoban.dialogue import Turn, chat_messages, merged_turns

DEFAULT_AGE_BAND = "9-12"


class PairError(ValueError):
    """A pair or source file that cannot be read; the message names the file and line."""


@dataclass
class PreferencePair:
    id: str
    history: list[dict[str, str]]
    chosen: str
    rejected: str
    source: str = ""
    age_band: str = DEFAULT_AGE_BAND
    meta: dict[str, object] = field(default_factory=dict)


def _rows(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise PairError(f"{path}:{number}: not JSON ({err.msg})") from None
            if not isinstance(row, dict):
                raise PairError(f"{path}:{number}: expected a JSON object")
            yield number, row


def read_pairs(path: str | Path) -> list[PreferencePair]:
    path = Path(path)
    pairs = []
    for number, row in _rows(path):
        history = row.get("history")
        if not isinstance(history, list) or not history or not all(
            isinstance(m, dict) and m.get("role") in ("user", "assistant") and isinstance(m.get("content"), str)
            for m in history
        ):
            raise PairError(f"{path}:{number}: history must be a non-empty list of user/assistant messages")
        if history[-1]["role"] != "user":
            raise PairError(f"{path}:{number}: history must end with the child's (user) message")
        for key in ("chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise PairError(f"{path}:{number}: {key!r} must be a non-empty string")
        if row["chosen"].strip() == row["rejected"].strip():
            raise PairError(f"{path}:{number}: chosen and rejected are the same reply")
        pairs.append(PreferencePair(
            id=str(row.get("id") or f"{path.stem}-{number}"), history=history, chosen=row["chosen"],
            rejected=row["rejected"], source=str(row.get("source", "")),
            age_band=str(row.get("age_band") or DEFAULT_AGE_BAND), meta=dict(row.get("meta") or {}),
        ))
    return pairs


def write_pairs(path: str | Path, pairs: Iterable[PreferencePair]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(asdict(pair), ensure_ascii=False) + "\n")
            count += 1
    return count


def child_history(context: list[str], text: str) -> list[dict[str, str]]:
    """A child's earlier messages and latest one as chat messages (consecutive child turns merged, as the chat
    engine sends them)."""
    return chat_messages(None, merged_turns(Turn("child", t) for t in [*context, text]))


def _message_key(row: dict, path: Path, number: int) -> tuple[tuple[str, ...], str]:
    context, text = row.get("context", []), row.get("text")
    if not isinstance(text, str) or not isinstance(context, list):
        raise PairError(f"{path}:{number}: needs 'text' (a string) and 'context' (a list of earlier messages)")
    return tuple(context), text


def pairs_from_eval_run(run_dir: str | Path, source: str | None = None) -> list[PreferencePair]:
    """Gold reply chosen, the model's own reply rejected, for every item of an `eval run` directory."""
    path = Path(run_dir) / "items.jsonl"
    if not path.is_file():
        raise PairError(f"{run_dir} is not an eval run directory (no items.jsonl)")
    pairs = []
    for _, row in _rows(path):
        own, gold = (row.get("raw_reply") or "").strip(), (row.get("reference") or "").strip()
        if not own or not gold or own == gold or not row.get("history"):
            continue
        pairs.append(PreferencePair(
            id=f"{row['item_id']}", history=row["history"], chosen=gold, rejected=own,
            source=source or f"eval-run:{Path(run_dir).name}", age_band=row.get("age_band") or DEFAULT_AGE_BAND,
        ))
    return pairs


def pairs_from_rated(rated: str | Path, written: str | Path, source: str | None = None,
                     harmful_only: bool = False) -> list[PreferencePair]:
    """A written reply chosen over the model's rated reply to the same message (all rated replies, or only the
    harmful ones). Every rated message must have a written reply."""
    rated, written = Path(rated), Path(written)
    good: dict[tuple[tuple[str, ...], str], dict] = {}
    for number, row in _rows(written):
        if not isinstance(row.get("reply"), str) or not row["reply"].strip():
            raise PairError(f"{written}:{number}: 'reply' must be a non-empty string")
        good[_message_key(row, written, number)] = row
    pairs = []
    for number, row in _rows(rated):
        key = _message_key(row, rated, number)
        if harmful_only and not row.get("harmful"):
            continue
        if key not in good:
            raise PairError(f"{rated}:{number}: no written reply for this message in {written}")
        chosen = good[key]
        if chosen["reply"].strip() == str(row.get("reply", "")).strip():
            continue
        pairs.append(PreferencePair(
            id=f"{rated.stem}-{number}", history=child_history(list(key[0]), key[1]), chosen=chosen["reply"],
            rejected=row["reply"], source=source or f"rated:{rated.stem}+{written.stem}",
            age_band=chosen.get("age_band") or DEFAULT_AGE_BAND,
            meta={"harmful": bool(row.get("harmful")), "kinds": row.get("kinds", [])},
        ))
    return pairs


def pairs_from_contrast(path: str | Path, source: str | None = None) -> list[PreferencePair]:
    """Each message answered both harmfully and harmlessly in one file: every (harmless, harmful) combination."""
    path = Path(path)
    by_message: dict[tuple[tuple[str, ...], str], dict[bool, list[dict]]] = {}
    for number, row in _rows(path):
        key = _message_key(row, path, number)
        by_message.setdefault(key, {True: [], False: []})[bool(row.get("harmful"))].append(row)
    pairs = []
    for (context, text), sides in by_message.items():
        for good in sides[False]:
            for bad in sides[True]:
                age = good.get("age")
                pairs.append(PreferencePair(
                    id=f"{good.get('id', '')}>{bad.get('id', '')}", history=child_history(list(context), text),
                    chosen=good["reply"], rejected=bad["reply"], source=source or f"contrast:{path.stem}",
                    age_band=age_band_of(age) if isinstance(age, int) else DEFAULT_AGE_BAND,
                    meta={"kinds": bad.get("kinds", [])},
                ))
    return pairs


def sample_pairs(pairs: list[PreferencePair], limit: int | None, seed: int = 0) -> list[PreferencePair]:
    """At most `limit` pairs, chosen by seed, in their original order (all of them when limit is None)."""
    if limit is None or len(pairs) <= limit:
        return pairs
    keep = set(random.Random(seed).sample(range(len(pairs)), limit))
    return [p for i, p in enumerate(pairs) if i in keep]


def age_band_of(age: int) -> str:
    return "6-8" if age <= 8 else "9-12" if age <= 12 else "13-15" if age <= 15 else "16-18"
