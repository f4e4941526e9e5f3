"""Content quality gates for child–companion dialogues, each failure a stable snake_case reason.

    reasons = check_dialogue(dialogue)            # [] when the dialogue passes
    findings = explain_dialogue(dialogue)         # the same, with the turn and the offending text

The same gates run in `qiaoban synth` (to accept or reject teacher output) and `qiaoban data validate`.
Patterns live in `lexicon.yaml` next to this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from qiaoban.chat.style import find_markdown
from qiaoban.data.dedup import normalize_text
from qiaoban.dialogue import Dialogue, Turn, structure_problems

# Every reason a gate can give, in report order, with what it means.
REASONS: dict[str, str] = {
    "empty_dialogue": "no turns at all",
    "assistant_speaks_first": "the first turn is not the child's",
    "non_alternating": "two consecutive turns by the same speaker",
    "empty_turn": "a turn with no text",
    "too_few_turns": "fewer turns than min_turns",
    "too_many_turns": "more turns than max_turns",
    "turn_too_short": "a turn shorter than min_turn_chars",
    "turn_too_long": "a turn longer than max_turn_chars",
    "not_chinese": "a turn whose Chinese share is below min_chinese_ratio",
    "english_slip": "an English word that is no loanword inside Chinese text (这 sounds很不舒服)",
    "narration": "stage directions such as （微笑）, *叹气*, 【旁白】",
    "leaked_role_tag": "a speaker label inside the text (孩子：, <B>, A:, 第2轮)",
    "ai_disclosure": "the companion talks about being an AI or language model",
    "parent_roleplay": "the companion speaks as the child's parent (妈妈理解你, 我是你的妈妈)",
    "child_calls_parent": "the child addresses the companion as 妈妈/爸爸 (parent–child role-play data)",
    "markdown": "headings, bullet lists or bold in a spoken reply",
    "repeated_turn": "the same text spoken twice by one speaker",
    "speaker_confusion": "the child calls someone by the child's own name (the persona in meta.persona.name)",
    "parroting": "a phrase said twice in one turn, or a turn that mostly restates the previous or an earlier one",
    "ends_with_child": "the dialogue ends on the child's turn",
    "unsafe_assistant": "the safety screen flags a companion turn (victim-blaming, threats, shaming, secrecy ...)",
}


@dataclass
class GateConfig:
    """Bounds and switches for the gates; the defaults suit short spoken dialogues with a child."""

    min_turns: int = 4
    max_turns: int = 40
    min_turn_chars: int = 2
    max_turn_chars: int = 200
    require_chinese: bool = True
    min_chinese_ratio: float = 0.5
    require_ends_with_assistant: bool = True
    safety_screen: bool = True
    # parroting: a turn whose character 3-grams lie at least this much inside what was just said to it plus what its
    # speaker said before (1.0 = nothing new).
    max_restated: float = 0.8
    # Reason names to skip entirely, e.g. {"markdown", "repeated_turn"}.
    disabled: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        self.disabled = frozenset(self.disabled)
        unknown = self.disabled - REASONS.keys()
        if unknown:
            raise ValueError(f"unknown gate names in disabled: {sorted(unknown)}; known: {', '.join(REASONS)}")
        if self.min_turns > self.max_turns:
            raise ValueError(f"min_turns ({self.min_turns}) is larger than max_turns ({self.max_turns})")
        if not 0.0 <= self.min_chinese_ratio <= 1.0:
            raise ValueError(f"min_chinese_ratio must be in [0, 1], got {self.min_chinese_ratio}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> GateConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown GateConfig keys: {sorted(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**values)


@dataclass
class Finding:
    """One gate failure: which gate, on which turn (None for the whole dialogue), and what it saw."""

    reason: str
    turn: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "turn": self.turn, "detail": self.detail}


@dataclass(frozen=True)
class _Patterns:
    narration_always: re.Pattern[str]
    narration_bracket: re.Pattern[str]
    narration_aside: re.Pattern[str]
    narration_cue: re.Pattern[str]
    narration_action: re.Pattern[str]
    narration_manner: re.Pattern[str]
    english_slips: re.Pattern[str]
    role_tag: re.Pattern[str]
    ai_disclosure: re.Pattern[str]
    child_vocative: re.Pattern[str]
    assistant_parent: re.Pattern[str]


def _any(patterns: list[str], flags: int = 0) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), flags)


@cache
def _patterns() -> _Patterns:
    lex = yaml.safe_load(resources.files("qiaoban.data").joinpath("lexicon.yaml").read_text("utf-8"))
    tags = lex["role_tag"]
    labels = "|".join(tags["labels"])
    role_tag = _any([
        # 孩子：, **助手**:, 孩子（8岁）：, A1:
        rf"(?:^|\n|[。！？!?…～~\s])\s*\**\s*(?:{labels})\s*\d*\s*(?:[（(][^）)\n]{{0,8}}[）)])?\s*\**\s*[:：]",
        # a child's name as a speaker tag at the start of a line: 小明：
        r"(?:^|\n)\s*小[\u4e00-\u9fff]{1,2}\s*[:：]",
        tags["bracketed"],
        tags["rounds"],
    ])
    return _Patterns(
        narration_always=_any(lex["narration"]["always"], re.MULTILINE),
        narration_bracket=re.compile(lex["narration"]["bracket"]),
        narration_aside=re.compile(lex["narration"]["aside"]),
        narration_cue=_any(lex["narration"]["cues"]),
        narration_action=re.compile(lex["narration"]["action"]),
        narration_manner=re.compile(lex["narration"]["manner"]),
        english_slips=re.compile(lex["english_slips"], re.IGNORECASE),
        role_tag=role_tag,
        ai_disclosure=_any(lex["ai_disclosure"]),
        child_vocative=_any(lex["parent_roleplay"]["child_vocative"]),
        assistant_parent=_any(lex["parent_roleplay"]["assistant_self"]),
    )


_SENTENCE_END = set("。！？!?…，,；;：:~～")
_QUOTED = re.compile(r"“[^“”]*”|「[^「」]*」|『[^『』]*』|\"[^\"\n]*\"")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]+")


def chinese_ratio(text: str) -> float:
    """Share of Chinese among the text's words: each Han character counts one, each Latin word counts one
    (so "我喜欢玩Minecraft" is mostly Chinese). 1.0 for text with neither, e.g. "……"."""
    han = len(_CJK.findall(text))
    latin = len(_LATIN_WORD.findall(text))
    return 1.0 if han + latin == 0 else han / (han + latin)


def find_narration(text: str) -> str | None:
    if m := _patterns().narration_always.search(text):
        return m.group(0)
    for m in _patterns().narration_bracket.finditer(text):
        inside = m.group(1).strip()
        before, after = text[: m.start()].rstrip(), text[m.end() :].lstrip()
        stands_alone = (len(inside) <= 6 or not before or not after
                        or before[-1] in _SENTENCE_END or after[0] in _SENTENCE_END)
        if all(_patterns().narration_manner.match(piece.strip()) for piece in re.split(r"[、，,]", inside)):
            return m.group(0)
        if _patterns().narration_aside.search(inside):
            continue
        if stands_alone and _patterns().narration_cue.search(inside):
            return m.group(0)
        if (not before or not after) and _patterns().narration_action.search(inside):
            return m.group(0)
    return None


def find_role_tag(text: str) -> str | None:
    m = _patterns().role_tag.search(text)
    return m.group(0).strip() if m else None


def find_ai_disclosure(text: str) -> str | None:
    m = _patterns().ai_disclosure.search(text)
    return m.group(0) if m else None


def find_parent_roleplay(role: str, text: str) -> str | None:
    if role == "child":
        m = _patterns().child_vocative.search(text)
    else:
        m = _patterns().assistant_parent.search(_QUOTED.sub("“”", text))
    return m.group(0).strip() if m else None


def _screen_reply():
    try:
        from qiaoban.safety import screen_reply
    except ImportError as err:
        raise RuntimeError(
            f"the safety screen needs qiaoban.safety.screen_reply ({err}); "
            "run without it with --no-safety (GateConfig(safety_screen=False))"
        ) from err
    return screen_reply


_CLAUSE_BREAK = re.compile(r"[，,。.！!？?、；;…~～\s]+")


def _trigrams(text: str) -> set[str]:
    text = normalize_text(text)  # the same text the near-duplicate index shingles
    return {text[i : i + 3] for i in range(len(text) - 2)}


def find_parroting(turns: list[Turn], i: int, max_restated: float = 0.8) -> str | None:
    """Why turn i parrots, or None: a clause of 3+ characters said twice in it ("你有点害怕？你有点害怕？"), or
    its 3-grams lie inside the previous turn plus its speaker's earlier turns (restating, adding nothing)."""
    clauses = [c for c in _CLAUSE_BREAK.split(turns[i].text) if len(c) >= 3]
    if twice := next((c for k, c in enumerate(clauses) if c in clauses[:k]), None):
        return f"{twice!r} twice in one turn"
    own = _trigrams(turns[i].text)
    if len(own) < 4 or i == 0:
        return None
    heard = _trigrams(turns[i - 1].text).union(*(_trigrams(t.text) for t in turns[:i] if t.role == turns[i].role))
    share = len(own & heard) / len(own)
    return f"{share:.0%} of it restates earlier turns: {_snippet(turns[i].text)}" if share >= max_restated else None


def _snippet(text: str, limit: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _evidence(hit: str, text: str, width: int = 24) -> str:
    """The hit and the words around it: 「…text around hit…」."""
    start = max(text.find(hit), 0)
    left, right = max(start - width, 0), min(start + len(hit) + width, len(text))
    window = " ".join(text[left:right].split())
    return f"{hit!r} in 「{'…' if left else ''}{window}{'…' if right < len(text) else ''}」"


def explain_dialogue(dialogue: Dialogue, config: GateConfig | None = None) -> list[Finding]:
    """Every gate failure in the dialogue with its turn and evidence; at most one finding per reason."""
    config = config or GateConfig()
    found: dict[str, Finding] = {}

    def flag(reason: str, turn: int | None = None, detail: str = "") -> None:
        if reason not in config.disabled and reason not in found:
            found[reason] = Finding(reason, turn, detail)

    turns = dialogue.turns
    for reason in structure_problems(turns):
        turn = None
        detail = ""
        if reason == "non_alternating":
            repeats = [i for i in range(1, len(turns)) if turns[i].role == turns[i - 1].role]
            turn, detail = repeats[0], f"{len(repeats)} × two {turns[repeats[0]].role} turns in a row"
        elif reason == "empty_turn":
            turn = next(i for i, t in enumerate(turns) if not t.text.strip())
        flag(reason, turn, detail)
    if not turns:
        return list(found.values())

    if len(turns) < config.min_turns:
        flag("too_few_turns", None, f"{len(turns)} < {config.min_turns}")
    if len(turns) > config.max_turns:
        flag("too_many_turns", None, f"{len(turns)} > {config.max_turns}")
    if config.require_ends_with_assistant and turns[-1].role == "child":
        flag("ends_with_child", len(turns) - 1, _snippet(turns[-1].text))

    persona = dialogue.meta.get("persona")
    own_name = persona.get("name") if isinstance(persona, dict) else None
    screen = _screen_reply() if config.safety_screen and "unsafe_assistant" not in config.disabled else None
    seen: set[tuple[str, str]] = set()
    for i, turn in enumerate(turns):
        text = turn.text.strip()
        if not text:
            continue
        if len(text) < config.min_turn_chars:
            flag("turn_too_short", i, text)
        if len(text) > config.max_turn_chars:
            flag("turn_too_long", i, f"{len(text)} chars")
        if config.require_chinese and (ratio := chinese_ratio(text)) < config.min_chinese_ratio:
            flag("not_chinese", i, f"{ratio:.2f}: {_snippet(text)}")
        if _CJK.search(text) and (slip := _patterns().english_slips.search(text)):
            flag("english_slip", i, _evidence(slip.group(0), text))
        if hit := find_narration(text):
            flag("narration", i, _evidence(hit, text))
        if hit := find_role_tag(text):
            flag("leaked_role_tag", i, _evidence(hit, text))
        if turn.role == "child" and own_name and re.match(rf"{re.escape(own_name)}[，,、：:！!。 ]", text):
            flag("speaker_confusion", i, _snippet(text))
        if hit := find_parent_roleplay(turn.role, text):
            flag("child_calls_parent" if turn.role == "child" else "parent_roleplay", i, _evidence(hit, text))
        if (turn.role, text) in seen:
            flag("repeated_turn", i, _snippet(text))
        elif detail := find_parroting(turns, i, config.max_restated):
            flag("parroting", i, detail)
        seen.add((turn.role, text))
        if turn.role != "assistant":
            continue
        if hit := find_ai_disclosure(text):
            flag("ai_disclosure", i, _evidence(hit, text))
        if hit := find_markdown(text):
            flag("markdown", i, _snippet(hit))
        if screen is not None and (labels := screen(text)):
            flag("unsafe_assistant", i, f"{','.join(labels)}: {_snippet(text)}")

    order = list(REASONS)
    return sorted(found.values(), key=lambda f: order.index(f.reason))


def check_dialogue(dialogue: Dialogue, config: GateConfig | None = None) -> list[str]:
    """Names of the gates the dialogue fails, in a fixed order; [] when it passes."""
    return [f.reason for f in explain_dialogue(dialogue, config)]
