"""The reply guard's learned layer: a logistic head on the default model's hidden states over the child's words
and the reply together.

The phrase patterns of `guard.screen_reply` catch a reply that says a harmful thing in so many words. Most harm a
small model does to a child is said kindly: "这个说法挺有道理的" to a child who blames herself, "那就好" after a
disclosure laughed off, "哥哥对你这么好" about a groomer's gift, "请告诉妈妈" when mum did it. Whether such a reply
harms depends on what the child said, so the head reads both, embedded by the same cut model as the input head
(`qiaoban.safety.head`). It is trained on rated replies (the 1.5B's real ones, and contrastive pairs written for
it: harmful replies in a warm voice, harmless ones in a clumsy one) and on good companion turns of the gold corpus.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from qiaoban.dialogue import iter_jsonl
from qiaoban.safety import head
from qiaoban.safety.head import Embedder
from qiaoban.safety.labelled import json_objects

CHILD_CHARS = 160  # the end of what the child said that the head reads (the embedder's window is 512 tokens)
EARLIER_MESSAGES = 1  # earlier child messages put before the current one
L2 = 0.03
THRESHOLD = 0.3  # chosen by cross-validation grouped by child message on the rated dev replies (docs/safety.md)
HARM_KINDS = ("keeps_secret", "cover_story", "stay_quiet", "blames", "sends_back", "endorses_harm", "dangerous_help")


class ReplyFormatError(ValueError):
    """A rated-reply file with a line that is not a rated reply."""


def reply_head_path() -> Path:
    return Path(str(resources.files("qiaoban.safety").joinpath("reply_head.json")))


def reply_input(reply: str, said: Sequence[str]) -> str:
    """The text the head embeds: the child's last messages (oldest first, the current one last), then the reply."""
    child = " / ".join(list(said)[-(EARLIER_MESSAGES + 1):])[-CHILD_CHARS:]
    return f"孩子：{child}\n小桥：{reply}"


def read_replies(path: str | Path) -> list[dict[str, Any]]:
    """Lines of {"text", "context"?, "reply", "harmful": bool, "kinds"?}: a reply to the child's `text` (after
    the earlier `context`) and whether it harms; a bad line names file:line."""
    items = []
    for number, item in json_objects(path, ReplyFormatError, fields=("text", "reply")):
        if not isinstance(item.get("harmful"), bool):
            raise ReplyFormatError(f"{path}:{number}: \"harmful\" must be true or false")
        unknown = set(item.get("kinds", [])) - set(HARM_KINDS)
        if unknown:
            raise ReplyFormatError(f"{path}:{number}: unknown harm kinds {sorted(unknown)}")
        items.append(item)
    return items


def gold_replies(path: str | Path, everyday_per_dialogue: int | None = None) -> list[dict[str, Any]]:
    """Companion turns of a gold dialogue corpus as harmless replies to the child's messages before them: all
    of them, or every turn of a dialogue with a risk and `everyday_per_dialogue` seeded ones of each other."""
    items = []
    for dialogue in iter_jsonl(path):
        said: list[str] = []
        turns = []
        for turn in dialogue.turns:
            if turn.role == "child":
                said.append(turn.text)
            elif said:
                turns.append({"text": said[-1], "context": said[:-1][-EARLIER_MESSAGES:], "reply": turn.text,
                              "harmful": False, "dialogue": dialogue.id})
        if everyday_per_dialogue is not None and not dialogue.meta.get("risk"):
            turns = random.Random(dialogue.id).sample(turns, min(everyday_per_dialogue, len(turns)))
        items += turns
    return items


def inputs(items: Iterable[dict[str, Any]]) -> list[str]:
    return [reply_input(item["reply"], [*item.get("context", []), item["text"]]) for item in items]


@dataclass
class ReplyHead:
    params: dict[str, Any]
    embed: Embedder

    def score(self, reply: str, said: Sequence[str]) -> float:
        """Probability that `reply` harms the child whose messages (oldest first) are `said`."""
        vector = self.embed(reply_input(reply, said))[None, :]
        return float(head.probability(self.params, vector)[0])

    @property
    def threshold(self) -> float:
        return float(self.params.get("threshold", THRESHOLD))


@cache
def load(path: str | None = None) -> ReplyHead:
    """The reply head and the embedder it reads; ModelError or FileNotFoundError if either is missing."""
    file = Path(path) if path else reply_head_path()
    if not file.is_file():
        raise FileNotFoundError(f"reply head not found at {file}; build it with `qiaoban safety train-reply-head`")
    params = json.loads(file.read_text("utf-8"))
    return ReplyHead(params, head.embedder(params["model"], params.get("layers")))


def available() -> ReplyHead | None:
    """The packaged reply head, or None when its model is not installed (the phrase patterns then decide alone)."""
    from qiaoban.models import ModelError

    try:
        return load()
    except (ModelError, FileNotFoundError):
        return None
