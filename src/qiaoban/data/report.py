"""`validate` and `stats`: what is wrong with a corpus, and what is in it.

    report = validate_file("child_chat_dev.json")
    print(report.render())          # each defect kind with its count and example ids
    json.dumps(report.to_dict())
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from qiaoban.data.dedup import NearDuplicateIndex, dialogue_text
from qiaoban.data.gates import REASONS, Finding, GateConfig, check_dialogue, explain_dialogue
from qiaoban.data.importers import CorpusRecordError, detect_format, import_corpus
from qiaoban.dialogue import Dialogue, field_value

# Defects that concern the corpus rather than one dialogue's content.
CORPUS_REASONS: dict[str, str] = {
    "duplicate_id": "an id used by an earlier dialogue in the file",
    "near_duplicate": "nearly the same text as an earlier dialogue (character n-gram MinHash)",
    "malformed_record": "a record that could not be read (only with skip_bad)",
}
EXAMPLES_PER_KIND = 5


@dataclass
class ValidationReport:
    path: str
    format: str
    total: int = 0
    clean: int = 0
    # reason -> ids of the dialogues that have it, in file order
    defects: dict[str, list[str]] = field(default_factory=dict)
    # reason -> the first few findings, as {"id", "turn", "detail"}
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # (duplicate id, id of the earlier dialogue it repeats)
    duplicate_pairs: list[tuple[str, str]] = field(default_factory=list)
    safety_screen: bool = True

    def add(self, reason: str, dialogue_id: str, turn: int | None = None, detail: str = "") -> None:
        self.defects.setdefault(reason, []).append(dialogue_id)
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_KIND:
            examples.append({"id": dialogue_id, "turn": turn, "detail": detail})

    def counts(self) -> dict[str, int]:
        order = [*REASONS, *CORPUS_REASONS]
        return {r: len(self.defects[r]) for r in sorted(self.defects, key=order.index)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "total": self.total,
            "clean": self.clean,
            "safety_screen": self.safety_screen,
            "defects": {
                reason: {
                    "count": count,
                    "description": REASONS.get(reason) or CORPUS_REASONS[reason],
                    "ids": self.defects[reason],
                    "examples": self.examples[reason],
                }
                for reason, count in self.counts().items()
            },
            "duplicate_pairs": [list(pair) for pair in self.duplicate_pairs],
        }

    def render(self, max_ids: int = 8) -> str:
        share = f" ({self.clean / self.total:.0%})" if self.total else ""
        lines = [f"{self.path} [{self.format}]: {self.total} dialogues, {self.clean} clean{share}"]
        if not self.safety_screen:
            lines.append("  (safety screen off)")
        counts = self.counts()
        if not counts:
            lines.append("  no defects found")
            return "\n".join(lines)
        width = max(len(r) for r in counts)
        lines.append(f"  {'defect':<{width}}  {'count':>6}  example ids")
        for reason, count in counts.items():
            ids = self.defects[reason]
            shown = ", ".join(ids[:max_ids]) + (", …" if len(ids) > max_ids else "")
            lines.append(f"  {reason:<{width}}  {count:>6}  {shown}")
        lines.append("")
        lines.append("first example of each:")
        for reason in counts:
            ex = self.examples[reason][0]
            where = f"turn {ex['turn']}" if ex["turn"] is not None else "dialogue"
            lines.append(f"  {reason}: id {ex['id']}, {where}: {ex['detail'] or REASONS.get(reason, '')}")
        return "\n".join(lines)


def validate_dialogues(
    dialogues: Iterable[Dialogue],
    config: GateConfig | None = None,
    *,
    path: str = "<dialogues>",
    format: str = "dialogue",
    dedup_threshold: float = 0.85,
    progress: bool = False,
) -> ValidationReport:
    """Run every gate, plus duplicate-id and near-duplicate detection across the whole set."""
    config = config or GateConfig()
    report = ValidationReport(path=path, format=format, safety_screen=config.safety_screen)
    index = NearDuplicateIndex(threshold=dedup_threshold)
    seen_ids: set[str] = set()
    for dialogue in tqdm(dialogues, desc="validating", unit="dlg", disable=not progress, leave=False):
        report.total += 1
        findings: list[Finding] = explain_dialogue(dialogue, config)
        for f in findings:
            report.add(f.reason, dialogue.id, f.turn, f.detail)
        clean = not findings
        if dialogue.id in seen_ids:
            report.add("duplicate_id", dialogue.id)
            clean = False
        seen_ids.add(dialogue.id)
        if dialogue.turns and (twin := index.add(dialogue.id, dialogue_text(dialogue))) is not None:
            report.add("near_duplicate", dialogue.id, None, f"repeats {twin}")
            report.duplicate_pairs.append((dialogue.id, twin))
            clean = False
        report.clean += clean
    return report


def validate_file(
    path: str | Path,
    config: GateConfig | None = None,
    format: str | None = None,
    *,
    skip_bad: bool = False,
    progress: bool = False,
) -> ValidationReport:
    """Validate any importable corpus file. Raises DialogueFormatError when it does not parse (unless
    skip_bad, which counts malformed records as `malformed_record`)."""
    fmt = format or detect_format(path)
    errors: list[CorpusRecordError] = []
    dialogues = import_corpus(path, fmt, skip_bad=skip_bad, errors=errors)
    report = validate_dialogues(dialogues, config, path=str(path), format=fmt, progress=progress)
    for error in errors:
        where = f"line {error.line}" if error.line is not None else f"record {error.record}"
        report.add("malformed_record", where, None, str(error))
    return report


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "min": ordered[0],
        "mean": round(statistics.fmean(values), 2),
        "median": statistics.median(ordered),
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
    }


def dialogue_stats(
    dialogues: Iterable[Dialogue], config: GateConfig | None = None, *, top: int = 20, by: Sequence[str] = ()
) -> dict[str, Any]:
    """Counts, turns per dialogue, characters per turn by role, topics, emotions, sources, and how many
    dialogues each gate rejects (with `config`, default GateConfig()); `by`: dialogue counts per value of each
    field (`meta.category`, ...), and per combination when there are two or more."""
    config = config or GateConfig()
    turns_per: list[int] = []
    chars: dict[str, list[int]] = {"child": [], "assistant": []}
    topics: Counter[str] = Counter()
    emotions: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    fields: dict[str, Counter[str]] = {name: Counter() for name in by}
    combined: Counter[str] = Counter()
    accepted = 0
    for d in dialogues:
        values = [str(field_value(d, name)) for name in by]
        for name, value in zip(by, values, strict=True):
            fields[name][value] += 1
        if len(by) > 1:
            combined[" × ".join(values)] += 1
        turns_per.append(len(d.turns))
        for turn in d.turns:
            chars[turn.role].append(len(turn.text))
        topics[d.topic or "(none)"] += 1
        emotions[d.emotion or "(none)"] += 1
        sources[d.source or "(none)"] += 1
        rejected = check_dialogue(d, config)
        reasons.update(rejected)
        accepted += not rejected
    return {
        "dialogues": len(turns_per),
        "turns": sum(turns_per),
        "accepted": accepted,
        "turns_per_dialogue": _summary(turns_per),
        "chars_per_turn": {role: _summary(values) for role, values in chars.items()},
        "topics": {"distinct": len(topics), "top": dict(topics.most_common(top))},
        "emotions": dict(emotions.most_common()),
        "sources": dict(sources.most_common()),
        "rejection_reasons": dict(reasons.most_common()),
        "by": {name: dict(sorted(counts.items())) for name, counts in fields.items()},
        **({"by_combination": dict(sorted(combined.items()))} if len(by) > 1 else {}),
    }


def render_stats(stats: dict[str, Any]) -> str:
    def fmt(summary: dict[str, float]) -> str:
        if not summary.get("n"):
            return "none"
        return (f"n={summary['n']} min={summary['min']} median={summary['median']} mean={summary['mean']} "
                f"p90={summary['p90']} max={summary['max']}")

    def counts(mapping: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in mapping.items()) or "none"

    lines = [
        f"dialogues: {stats['dialogues']} ({stats['accepted']} pass every gate), turns: {stats['turns']}",
        f"turns per dialogue: {fmt(stats['turns_per_dialogue'])}",
        f"chars per child turn: {fmt(stats['chars_per_turn']['child'])}",
        f"chars per assistant turn: {fmt(stats['chars_per_turn']['assistant'])}",
        f"sources: {counts(stats['sources'])}",
        f"emotions: {counts(stats['emotions'])}",
        f"topics ({stats['topics']['distinct']} distinct), most common: {counts(stats['topics']['top'])}",
        f"rejection reasons (dialogues): {counts(stats['rejection_reasons'])}",
        *(f"by {name}: {counts(values)}" for name, values in stats.get("by", {}).items()),
    ]
    if stats.get("by_combination"):
        values = stats["by_combination"]
        lines.append(f"by combination ({len(values)} cells, fewest {min(values.values())}): {counts(values)}")
    return "\n".join(lines)
