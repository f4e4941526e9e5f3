"""Turn a teacher's reply into child/assistant turns, tolerating the formats teachers really emit.

Accepted speaker tags: `孩子：` / `孩子:` / a child's name (`小明：`), `<A>:` / `<B>:`, `A：` / `B：`,
`Child:` / `Assistant:`, `【孩子】`, `**孩子**：`, `孩子（8岁）：`; numbered rounds (`第1轮`, `1.`, `(2)`),
bullets, blank lines, code fences, a preamble ("好的，下面是对话：") and an epilogue ("希望这段对话……"),
turns that run over several lines, and a JSON list of {role|speaker, content|text}.

`parse_dialogue` returns the turns, or a named reason why there are none: `empty_reply`, `unparseable`,
`unknown_speakers`, `too_many_speakers`, `parent_roleplay` (a speaker tagged 妈妈/爸爸). Structure and content
checks (alternation, who starts, narration ...) are the quality gates' job, not the parser's.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from qiaoban.dialogue import Turn

PARSE_REASONS: dict[str, str] = {
    "empty_reply": "the teacher returned no text",
    "unparseable": "no speaker-tagged lines found",
    "unknown_speakers": "speaker tags that cannot be told apart as child and companion",
    "too_many_speakers": "more than two speakers",
    "parent_roleplay": "a speaker is tagged as a parent (妈妈/爸爸) instead of the companion",
}

CHILD_TAGS = {"孩子", "小孩", "儿童", "小朋友", "学生", "child", "kid", "user", "用户", "a", "甲", "孩"}
COMPANION_TAGS = {"小桥", "巧伴", "助手", "智能助手", "ai助手", "ai", "assistant", "companion", "陪伴者",
                  "陪伴机器人", "机器人", "b", "乙", "bot", "chatbot", "伙伴", "helper"}
PARENT_TAGS = {"妈妈", "爸爸", "母亲", "父亲", "家长", "mom", "dad", "mother", "father", "mum", "parent"}
# Substrings that identify a longer tag (机器人小桥, AI伙伴, 孩子小明).
COMPANION_HINTS = ("小桥", "巧伴", "助手", "机器人", "伙伴", "assistant", "companion", "bot")
CHILD_HINTS = ("孩子", "小朋友", "child", "kid")
PARENT_HINTS = ("妈妈", "爸爸", "母亲", "父亲")

_LINE_PREFIX = r"""^\s*(?:[-*•>]\s*)?                          # bullet or quote
    (?:第\s*[0-9一二三四五六七八九十]+\s*[轮回合组]\s*[:：.、,，\-—]?\s*)?     # 第1轮
    (?:(?:round|turn)\s*\d+\s*[:：.\-—]?\s*)?
    (?:[(（]?\d{1,3}\s*[.)）、]\s*)?                          # 1.  1、  (1)
    (?:\*\*|__)?\s*"""
_AFTER_TAG = r"""\s*(?:[(（][^)）\n]{0,16}[)）])?                 # 孩子（8岁）
    \s*(?:\*\*|__)?\s*"""
# A tag in brackets needs no colon (【孩子】, <A>:); a bare tag does (孩子：, Child:).
_BRACKET_TAG_LINE = re.compile(
    _LINE_PREFIX + r"""[<【\[「《]\s*(?P<tag>[^<>【】\[\]「」《》\n]{1,12}?)\s*[>】\]」》]""" + _AFTER_TAG
    + r"""[:：]?\s*(?:\*\*|__)?\s*(?P<text>.*)$""",
    re.VERBOSE | re.IGNORECASE,
)
_BARE_TAG_LINE = re.compile(
    _LINE_PREFIX + r"""(?P<tag>[^\s:：<>【】\[\]*_()（）,，。!！?？"“”]{1,12})""" + _AFTER_TAG
    + r"""[:：]\s*(?:\*\*|__)?\s*(?P<text>.*)$""",
    re.VERBOSE | re.IGNORECASE,
)
_ROUND_HEADER = re.compile(
    r"^\s*(?:[#*_\-=>\s]*)(?:第\s*[0-9一二三四五六七八九十]+\s*[轮回合组]|(?:round|turn)\s*\d+)[\s:：.*_#\-—]*$",
    re.IGNORECASE,
)
_SEPARATOR = re.compile(r"^\s*(?:[-=*_~]{3,}|#+\s*.*)\s*$")
_FENCE = re.compile(r"^\s*```")
_EPILOGUE = re.compile(
    r"^\s*[（(【]?\s*(?:希望(?:这段|以上|这个|这些|对你|能帮|你喜欢)|以上|这段对话|在这段对话|通过这段对话|这个对话|该对话|对话中|注[:：意]|备注|说明[:：]|总结|"
    r"对话结束|（完）|完[。]?$|i hope|this (?:dialogue|conversation)|note:|in this (?:dialogue|conversation))",
    re.IGNORECASE,
)
_INLINE_SPLIT_TAGS = "孩子|小桥|巧伴|助手|智能助手|Child|Assistant"
_INLINE_SPLIT = re.compile(rf"(?<=[。！？!?…~～”\"）)])\s*(?=(?:{_INLINE_SPLIT_TAGS})\s*[:：])")
_WRAP_QUOTES = (("“", "”"), ('"', '"'), ("「", "」"), ("‘", "’"))


@dataclass
class ParseResult:
    turns: list[Turn] = field(default_factory=list)
    reason: str | None = None
    # Text the parser left out (preamble, epilogue), for the run's rejected/debug records.
    dropped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reason is None


def _norm_tag(tag: str) -> str:
    return re.sub(r"[\s_*:：]+", "", tag).lower().rstrip("0123456789")


def classify_tag(tag: str, child_names: Iterable[str] = (), companion_names: Iterable[str] = ()) -> str | None:
    """'child', 'assistant', 'parent' or None for a speaker tag; the names are the tags the prompt asked for."""
    t = _norm_tag(tag)
    if not t:
        return None
    names = {_norm_tag(n) for n in child_names}
    if t in CHILD_TAGS or t in names:
        return "child"
    if t in COMPANION_TAGS or t in {_norm_tag(n) for n in companion_names}:
        return "assistant"
    if t in PARENT_TAGS:
        return "parent"
    if any(h in t for h in COMPANION_HINTS) or t.startswith("ai"):
        return "assistant"
    if any(h in t for h in PARENT_HINTS):
        return "parent"
    if any(h in t for h in CHILD_HINTS) or any(n and n in t for n in names):
        return "child"
    return None


@dataclass
class _Line:
    tag: str | None  # the raw tag when the line starts with a speaker candidate
    text: str
    blank: bool = False


def _split_lines(text: str) -> list[_Line]:
    lines = []
    for raw in _INLINE_SPLIT.sub("\n", text).splitlines():
        if _FENCE.match(raw):
            continue
        if not raw.strip():
            lines.append(_Line(None, "", blank=True))
            continue
        m = _BRACKET_TAG_LINE.match(raw) or _BARE_TAG_LINE.match(raw)
        if m:
            lines.append(_Line(m.group("tag").strip(), m.group("text")))
        else:
            lines.append(_Line(None, raw.strip()))
    return lines


def _clean_text(text: str) -> str:
    text = text.strip().replace("**", "").strip()
    for left, right in _WRAP_QUOTES:
        if len(text) >= 2 and text.startswith(left) and text.endswith(right) and text.count(left) == 1:
            text = text[len(left) : -len(right)].strip()
    return text


def _from_json(text: str, child_names: tuple[str, ...], companion_names: tuple[str, ...]) -> ParseResult | None:
    body = "\n".join(line for line in text.splitlines() if not _FENCE.match(line)).strip()
    if not body.startswith(("[", "{")):
        return None
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        data = next((v for k, v in data.items() if k in ("dialogue", "dialog", "turns", "messages", "conversation")), None)
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data) or not data:
        return None
    turns = []
    for item in data:
        tag = str(item.get("role") or item.get("speaker") or "")
        content = item.get("content", item.get("text"))
        role = classify_tag(tag, child_names, companion_names)
        if role == "parent":
            return ParseResult(reason="parent_roleplay")
        if role is None or not isinstance(content, str):
            return ParseResult(reason="unknown_speakers")
        turns.append(Turn(role, _clean_text(content)))
    return ParseResult(turns)


def parse_dialogue(text: str, child_names: Iterable[str] = (), companion_names: Iterable[str] = ()) -> ParseResult:
    """Child/assistant turns from a teacher's reply, or a ParseResult with a named `reason`. `child_names` and
    `companion_names` are tags to recognise besides the usual ones (the persona's name, the prompt's tags)."""
    child_names, companion_names = tuple(child_names), tuple(companion_names)
    if not text or not text.strip():
        return ParseResult(reason="empty_reply")
    if (as_json := _from_json(text, child_names, companion_names)) is not None:
        return as_json

    lines = _split_lines(text)
    roles: dict[str, str | None] = {}
    counts: Counter[str] = Counter()
    for line in lines:
        if line.tag is not None:
            roles.setdefault(line.tag, classify_tag(line.tag, child_names, companion_names))
            counts[line.tag] += 1
    known = {tag: role for tag, role in roles.items() if role is not None}
    if any(role == "parent" for role in known.values()):
        return ParseResult(reason="parent_roleplay")
    # An unknown tag that starts several lines is a speaker (an invented child name, 老师, 旁白...); one that
    # starts a single line is just text with a colon in it ("比如：...").
    unknown = [tag for tag, role in roles.items() if role is None and counts[tag] >= 2]
    known_roles = set(known.values())
    if not known and not unknown:
        return ParseResult(reason="unparseable")
    if unknown:
        if len(unknown) > 1 or len(known_roles) != 1:
            return ParseResult(reason="too_many_speakers" if len(known_roles) + len(unknown) > 2 else "unknown_speakers")
        known[unknown[0]] = "assistant" if known_roles == {"child"} else "child"

    turns: list[Turn] = []
    pending: list[str] = []  # a paragraph after a blank line: part of the last turn, or the epilogue
    preamble: list[str] = []
    after_blank = False
    for line in lines:
        if line.blank:
            after_blank = bool(turns)
            continue
        if line.tag is not None and line.tag in known:
            if pending:
                turns[-1].text += "\n" + "\n".join(pending)
                pending = []
            turns.append(Turn(known[line.tag], line.text))
            after_blank = False
            continue
        content = line.text if line.tag is None else f"{line.tag}：{line.text}"
        if not turns:
            preamble.append(content)
        elif _ROUND_HEADER.match(content) or _SEPARATOR.match(content):
            after_blank = True  # whatever follows without a tag is no longer this turn
        elif after_blank or pending or _EPILOGUE.match(content):
            pending.append(content)
        else:
            turns[-1].text += "\n" + content
    dropped = preamble + pending  # pending at the end: an epilogue after the last turn
    for turn in turns:
        turn.text = "\n".join(_clean_text(part) for part in turn.text.split("\n") if part.strip())
    # A speaker tagged twice ("小明：" on its own line, then "【孩子：】text") is one turn, not an empty one.
    turns = [t for i, t in enumerate(turns)
             if t.text or i + 1 == len(turns) or turns[i + 1].role != t.role]
    if not turns:
        return ParseResult(reason="unparseable", dropped=dropped)
    return ParseResult(turns, dropped=dropped)
