"""The output guard: harm in a reply written for a child, and the `SafetyGuard` the chat engine uses."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache, cached_property

from qiaoban.safety import reply_head
from qiaoban.safety.detect import Verdict, check
from qiaoban.safety.head import Head, available
from qiaoban.safety.policy import replacement
from qiaoban.safety.reply_head import ReplyHead
from qiaoban.safety.text import lexicon, normalize


@cache
def _reply_harms() -> tuple[tuple[str, re.Pattern], ...]:
    return tuple((kind, re.compile("|".join(patterns))) for kind, patterns in lexicon()["reply_harms"].items())


@cache
def _send_back(abuser: str) -> re.Pattern:
    names = lexicon()["abuser_aliases"].get(abuser) or re.escape(abuser)
    return re.compile(lexicon()["send_back"].replace("{abuser}", names))


@cache
def _blame_when_harmed() -> re.Pattern:
    return re.compile("|".join(lexicon()["blame_when_harmed"]))


@cache
def _relief() -> re.Pattern:
    return re.compile(lexicon()["relief_when_played_down"])


@cache
def _reply_negation() -> re.Pattern:
    return re.compile(lexicon()["reply_negation"])


# Words someone else said to the child, quoted back: "还天天听“丢死人了”" reflects shaming, it does not shame.
_QUOTED = re.compile(r"“[^“”]{0,30}”|「[^「」]{0,30}」")


def _found(pattern: re.Pattern, text: str) -> bool:
    """A match not negated just before it ("更不是你活该", "不代表你做错了什么")."""
    negation = _reply_negation()
    return any(not negation.search(text[max(0, m.start() - 6) : m.start()]) for m in pattern.finditer(text))


def screen_reply(text: str) -> list[str]:
    """Harm kinds in an assistant turn: victim_blaming, shaming, belittling, secrecy, threat,
    dangerous_instructions. Empty when the text is fine."""
    norm = normalize(text)
    unquoted = normalize(_QUOTED.sub("，", text)) if _QUOTED.search(text) else norm
    return [kind for kind, pattern in _reply_harms() if _found(pattern, unquoted if kind == "shaming" else norm)]


class SafetyGuard:
    """The chat engine's guard (`qiaoban.chat.engine.Guard`). `use_head`: add the learned layers on the default
    model's hidden states when that model is installed (loaded on the first message): the input head, and the
    reply head that reads each reply against what the child said."""

    def __init__(self, use_head: bool = True):
        self.use_head = use_head

    @cached_property
    def head(self) -> Head | None:
        return available() if self.use_head else None

    @cached_property
    def reply_head(self) -> ReplyHead | None:
        return reply_head.available() if self.use_head else None

    def preload(self) -> None:
        """Load the lexicon, the classifier and the heads now, so that a child's first message does not wait."""
        self.check_input("你好")
        self.check_output("你好呀。", None, ["你好"])

    def check_input(self, text: str, context: Sequence[str] = ()) -> Verdict:
        return check(text, context, head=self.head)

    def check_output(self, reply: str, verdict: Verdict | None, said: Sequence[str] = ()) -> str | None:
        """None when the reply so far is fine; else the safe text to show instead of the rest. `said`: the
        child's messages so far, oldest first, the one answered last (the reply head reads them)."""
        if not self.harms(reply, verdict, said):
            return None
        return replacement(verdict.followup if verdict is not None and verdict.risk else None)

    def harms(self, reply: str, verdict: Verdict | None, said: Sequence[str] = ()) -> list[str]:
        """Why the reply must not be shown: phrase-pattern kinds, "send_back", "victim_blaming", "relief" (after a
        risk the child played down), or "reply_head"."""
        harms = screen_reply(reply)
        abuser = getattr(verdict, "abuser", None)
        if abuser and _found(_send_back(abuser), normalize(reply)):
            harms.append("send_back")
        harmed = verdict is not None and verdict.category in lexicon()["blame_when_harmed_categories"]
        if harmed and _found(_blame_when_harmed(), normalize(reply)):
            harms.append("victim_blaming")
        if verdict is not None and verdict.risk and verdict.played_down and _found(_relief(), normalize(reply)):
            harms.append("relief")
        head = self.reply_head if not harms and said else None
        if head is not None and head.score(reply, said) >= head.threshold:
            harms.append("reply_head")
        return harms
