"""The fast pattern layer: lexicon.yaml's patterns over normalized text, with hyperbole, negation and
game/story/history handling."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from qiaoban.safety.text import lexicon, normalize

SEVERITIES = ("concern", "urgent", "emergency")
# Categories whose words also fill games, stories, news and history lessons ("我把boss杀了", "秦始皇杀了很多人").
FICTION_SENSITIVE = ("self_harm", "physical_abuse", "violence", "running_away", "bullying", "dangerous_challenge")
# Categories whose patterns name who did what to whom, so a negator on the verb inside the match cancels it.
INNER_NEGATION = ("physical_abuse", "sexual_abuse", "bullying", "violence")
_SENTENCE = re.compile(r"[^。！？…]+[。！？…]*")
_CLAUSE = re.compile(r"[^，。！？；…]+")
_CLAUSE_BREAK = "，。！？；…"


@dataclass(frozen=True)
class Hit:
    category: str
    severity: str
    phrase: str  # the matched normalized text
    negated: bool = False  # a negation cue right before it cancels it ("我没有想死")


@dataclass(frozen=True)
class _Rules:
    patterns: tuple[tuple[str, str, re.Pattern], ...]  # (category, severity, pattern)
    hyperbole: re.Pattern
    negation: re.Pattern
    negation_window: int
    inner_negation: re.Pattern
    fiction: re.Pattern
    real: re.Pattern
    education: re.Pattern
    lived: re.Pattern
    joke: re.Pattern
    safe_frame: re.Pattern
    asks_secrecy: re.Pattern
    needs_context: re.Pattern
    context_cues: tuple[tuple[str, str, re.Pattern], ...]
    context_frames: tuple[tuple[frozenset[str], re.Pattern, re.Pattern], ...]  # (categories, pattern, unless)
    abusers: tuple[tuple[str, re.Pattern], ...]
    silencers: tuple[tuple[str, re.Pattern], ...]


@cache
def rules() -> _Rules:
    lex = lexicon()
    patterns = tuple(
        (category, severity, re.compile(pattern))
        for category, levels in lex["categories"].items()
        for severity in SEVERITIES
        for pattern in levels.get(severity, [])
    )
    return _Rules(
        patterns=patterns,
        hyperbole=re.compile("|".join(lex["hyperbole"])),
        negation=re.compile(lex["negation"] + "$"),
        negation_window=int(lex["negation_window"]),
        inner_negation=re.compile(lex["inner_negation"]),
        fiction=re.compile(lex["fiction"]),
        real=re.compile(lex["real"]),
        education=re.compile(lex["education"]),
        lived=re.compile(lex["lived"]),
        joke=re.compile(lex["joke"]),
        safe_frame=re.compile(lex["safe_frame"]),
        asks_secrecy=re.compile(lex["asks_secrecy"]),
        needs_context=re.compile(lex["needs_context"]),
        context_cues=tuple((c["category"], c["severity"], re.compile(c["pattern"])) for c in lex["context_cues"]),
        context_frames=tuple((frozenset(f["categories"]), re.compile(f["pattern"]), re.compile(f["unless"]))
                             for f in lex["context_frames"]),
        abusers=tuple((kind, re.compile(p)) for kind, p in lex["abusers"].items()),
        silencers=tuple((kind, re.compile(p.replace("{who}", f"(?P<who>{who})")))
                        for kind, who in lex["abusers"].items() for p in lex["silencers"]),
    )


def _negated(text: str, start: int, r: _Rules) -> bool:
    before = text[max(0, start - r.negation_window - 2) : start]
    for ch in _CLAUSE_BREAK:
        before = before.rsplit(ch, 1)[-1]
    return bool(r.negation.search(before))


def scan(text: str, normalized: bool = False) -> list[Hit]:
    """Pattern hits in one message that survive hyperbole, fiction and lesson checks; negated ones are marked."""
    r = rules()
    norm = text if normalized else normalize(text)
    hits: list[Hit] = []
    for sentence in _SENTENCE.findall(norm):
        plain = r.hyperbole.sub("", sentence)
        if _lesson_or_joke(plain, r):
            continue
        fiction = [m.span() for m in _CLAUSE.finditer(plain)
                   if r.fiction.search(m.group(0)) and not r.real.search(m.group(0))]
        for category, severity, pattern in r.patterns:
            for match in pattern.finditer(plain):
                if category in FICTION_SENSITIVE and any(a <= match.start() < b for a, b in fiction):
                    continue
                negated = _negated(plain, match.start(), r) or (
                    category in INNER_NEGATION and bool(r.inner_negation.search(match.group(0))))
                hits.append(Hit(category, severity, match.group(0), negated))
                if not negated:
                    break
    return hits


def plain_text(text: str) -> str:
    """Normalized, with hyperbole removed: what both layers read."""
    return rules().hyperbole.sub("", normalize(text))


def neutralized(text: str, hits: list[Hit], category: str, has_context: bool = False) -> bool:
    """The message negates a risk, means nothing without context (and has none), exaggerates, is a lesson or a
    joke, or sets a game or a story around a `category` that games and stories are full of: the learned layers
    then need far more confidence to flag it. (A game does not neutralize grooming: "游戏里的叔叔让我别告诉爸妈".)"""
    r = rules()
    norm = normalize(text)
    plain = r.hyperbole.sub("", norm)
    if any(h.negated for h in hits) or (r.needs_context.search(plain) and not has_context) \
            or r.hyperbole.search(norm):
        return True  # exaggeration ("笑死", "累死了") sets a playful register the classifier cannot read
    fiction = category in FICTION_SENSITIVE and r.fiction.search(plain) and not r.real.search(plain)
    return bool(fiction) or _lesson_or_joke(plain, r)


def _lesson_or_joke(plain: str, r: _Rules) -> bool:
    return bool((r.education.search(plain) and not r.lived.search(plain))
                or (r.joke.search(plain) and not r.real.search(plain)))


def safe_framed(text: str) -> bool:
    """The child frames the message as safe (handled by adults, supervised, a joke, curiosity), without asking
    for secrecy or insisting that it is real."""
    norm = normalize(text)
    r = rules()
    return bool(r.safe_frame.search(norm)) and not (r.real.search(norm) or r.asks_secrecy.search(norm))


def context_framed(category: str, text: str, context: Sequence[str] = ()) -> bool:
    """The message and the child's recent messages explain a concern in `category` as harmless ("他说这是我们俩的
    秘密" after "明天是妈妈生日"), and none of them names harm."""
    joined = "。".join(normalize(message) for message in [*context, text])
    return any(category in categories and pattern.search(joined) and not unless.search(joined)
               for categories, pattern, unless in rules().context_frames)


def context_cue(text: str, earlier: set[str]) -> Hit | None:
    """A cue in this message that raises an earlier message's category ("我已经决定了" after despair)."""
    norm = rules().hyperbole.sub("", normalize(text))
    for category, severity, pattern in rules().context_cues:
        if category in earlier and (match := pattern.search(norm)):
            return Hit(category, severity, match.group(0))
    return None


def abuser_of(texts: list[str]) -> tuple[str, str] | None:
    """(kind, word) for who hurt the child when the messages name family or a teacher, family first."""
    joined = "。".join(normalize(t) for t in texts)
    for kind, pattern in rules().abusers:
        if match := pattern.search(joined):
            return kind, match.group(0)
    return None


def silencer_of(texts: list[str]) -> tuple[str, str] | None:
    """(kind, word) for family or a teacher who demands silence, or whom the child fears finding out or
    punishing ("爸爸说不能往外说", "怕被我妈知道")."""
    joined = "。".join(normalize(t) for t in texts)
    for kind, pattern in rules().silencers:
        if match := pattern.search(joined):
            return kind, match.group("who")
    return None
