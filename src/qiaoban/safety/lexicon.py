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
# Harms no frame can clear: a joke marker, "it is over", "for a friend" or an adult standing by lowers them by one
# step at most ("我想死哈哈哈开玩笑的" is still heard).
FRAME_PROOF = ("self_harm", "physical_abuse", "sexual_abuse", "neglect", "violence", "dangerous_challenge")
# Categories whose patterns name who did what to whom, so a negator on the verb inside the match cancels it.
INNER_NEGATION = ("physical_abuse", "sexual_abuse", "bullying", "violence")
_SENTENCE = re.compile(r"[^。！？…]+[。！？…]*")
_CLAUSE = re.compile(r"[^，。！？；…]+")
_CLAUSE_BREAK = "，。！？；…"
_TOLD = re.compile("(告诉|跟|和|对|给|找|问)$")


@dataclass(frozen=True)
class Hit:
    category: str
    severity: str
    phrase: str  # the matched normalized text
    negated: bool = False  # a negation cue right before it cancels it ("我没有想死")
    framed: bool = False  # said inside a joke ("开玩笑的"): one severity step lower, never cleared


def lowered(hit: Hit) -> Hit | None:
    """A hit seen through a frame: one severity step lower; a concern is cleared unless frames cannot clear it."""
    step = SEVERITIES.index(hit.severity)
    if step == 0 and hit.category not in FRAME_PROOF:
        return None
    return Hit(hit.category, SEVERITIES[max(step - 1, 0)], hit.phrase, hit.negated, framed=True)


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
    over_frame: re.Pattern
    asks_secrecy: re.Pattern
    played_down: re.Pattern
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
        over_frame=re.compile(lex["over_frame"]),
        asks_secrecy=re.compile(lex["asks_secrecy"]),
        played_down=re.compile(lex["played_down"]),
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
    """Pattern hits in one message that survive hyperbole, fiction and lesson checks; negated ones are marked, and
    those inside a joke are `lowered`."""
    r = rules()
    norm = text if normalized else normalize(text)
    hits: list[Hit] = []
    for sentence in _SENTENCE.findall(norm):
        plain = r.hyperbole.sub("", sentence)
        if _lesson(plain, r):
            continue
        joke = _joke(plain, r)
        fiction = [m.span() for m in _CLAUSE.finditer(plain)
                   if r.fiction.search(m.group(0)) and not r.real.search(m.group(0))]
        for category, severity, pattern in r.patterns:
            for match in pattern.finditer(plain):
                if category in FICTION_SENSITIVE and any(a <= match.start() < b for a, b in fiction):
                    continue
                negated = _negated(plain, match.start(), r) or (
                    category in INNER_NEGATION and bool(r.inner_negation.search(match.group(0))))
                hit = Hit(category, severity, match.group(0), negated)
                if joke and not negated:
                    framed = lowered(hit)
                    if framed is None:
                        break
                    hit = framed
                hits.append(hit)
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
    return bool(fiction) or _lesson(plain, r) or _joke(plain, r)


def _lesson(plain: str, r: _Rules) -> bool:
    return bool(r.education.search(plain) and not r.lived.search(plain))


def _joke(plain: str, r: _Rules) -> bool:
    return bool(r.joke.search(plain) and not r.real.search(plain))


def frame_of(text: str) -> str | None:
    """"safe" when the child says they are not at risk from the thing (an adult supervises, they refuse), "over" when
    they play it down (a joke, curiosity, handled, better now); None without a frame, or when the child says it is
    real or asks for secrecy."""
    norm = normalize(text)
    r = rules()
    if r.real.search(norm) or r.asks_secrecy.search(norm):
        return None
    if r.safe_frame.search(norm):
        return "over" if r.lived.search(norm) else "safe"
    return "over" if r.over_frame.search(norm) else None


def played_down(text: str) -> bool:
    """The child laughs a disclosure off, takes it back, calls it over or normal, or takes the blame."""
    return bool(rules().played_down.search(normalize(text)))


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
    """(kind, word) for who hurt the child when the messages name family or a teacher, family first; not the one
    the child would tell or is kept from telling ("不能告诉妈妈")."""
    joined = "。".join(normalize(t) for t in texts)
    for kind, pattern in rules().abusers:
        for match in pattern.finditer(joined):
            if not _TOLD.search(joined[max(0, match.start() - 3):match.start()]):
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
