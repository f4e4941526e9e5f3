"""A data mix by weight: QiaoBan's idea of child dialogues plus general empathic data, made reproducible.

A mix spec (YAML mapping, or the `data.mix` section of a training config):

    seed: 0
    eval_fraction: 0.1          # held out per source, before anything is sampled, so eval never leaks
    total: null                 # dialogues in the training mix; null = as many as the weights allow without repeats
    gates: true                 # drop dialogues that qiaoban.data.check_dialogue flags
    sources:
      - {path: ../shared/data/qiaoban/child_chat_dev.json, format: qiaoban, weight: 0.6}
      - {path: ../shared/data/smilechat/smilechat_00.jsonl, format: messages, weight: 0.4, max_turns: 8, limit: 3000}

Weights are shares of dialogues in the training mix. With `total: null` the mix is the largest one in which
no source is repeated: the scarcest source (relative to its weight) is used whole. `format` is anything
`qiaoban.data.import_corpus` understands; `dialogue` (our JSONL) is read directly. `max_turns` keeps
only the first N turns of long dialogues (counselling sessions run long; children's chats do not); `limit`
reads only the first N records of a big corpus (gating 14,000 dialogues takes minutes on a small CPU).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qiaoban.dialogue import Dialogue, read_jsonl


class MixError(ValueError):
    """A mix spec that cannot be satisfied (unknown key, missing file, weights that are not positive)."""


@dataclass
class MixSource:
    path: str
    weight: float
    format: str | None = None
    max_turns: int | None = None
    limit: int | None = None  # read only the first N records of a big corpus
    name: str = ""

    def label(self) -> str:
        return self.name or Path(self.path).stem


@dataclass
class MixSpec:
    sources: list[MixSource]
    seed: int = 0
    eval_fraction: float = 0.1
    total: int | None = None
    gates: bool | dict[str, Any] = True  # True, False, or GateConfig fields (e.g. {disabled: [child_calls_parent]})

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base_dir: Path | None = None) -> MixSpec:
        allowed = {"sources", "seed", "eval_fraction", "total", "gates"}
        unknown = set(raw) - allowed
        if unknown:
            raise MixError(f"unknown mix keys {sorted(unknown)}; allowed: {sorted(allowed)}")
        sources = []
        for i, src in enumerate(raw.get("sources") or []):
            if not isinstance(src, dict) or "path" not in src:
                raise MixError(f"mix source {i}: expected a mapping with 'path' and 'weight', got {src!r:.80}")
            bad = set(src) - {"path", "weight", "format", "max_turns", "limit", "name"}
            if bad:
                raise MixError(f"mix source {i}: unknown keys {sorted(bad)}")
            path = Path(src["path"]).expanduser()
            if base_dir is not None and not path.is_absolute() and not path.exists():
                path = base_dir / path
            weight = float(src.get("weight", 1.0))
            if weight <= 0:
                raise MixError(f"mix source {i} ({path}): weight must be positive, got {weight}")
            sources.append(MixSource(str(path), weight, src.get("format"), src.get("max_turns"), src.get("limit"),
                                     src.get("name", "")))
        if not sources:
            raise MixError("a mix needs at least one source")
        fraction = float(raw.get("eval_fraction", 0.1))
        if not 0 <= fraction < 1:
            raise MixError(f"eval_fraction must be in [0, 1), got {fraction}")
        return cls(sources, int(raw.get("seed", 0)), fraction, raw.get("total"), raw.get("gates", True))


@dataclass
class MixReport:
    per_source: dict[str, dict[str, int]] = field(default_factory=dict)
    gate_problems: dict[str, int] = field(default_factory=dict)

    def lines(self) -> list[str]:
        out = [f"{name}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) for name, counts in self.per_source.items()]
        if self.gate_problems:
            out.append("gated out: " + ", ".join(f"{k} {v}" for k, v in sorted(self.gate_problems.items())))
        return out


def load_source(source: MixSource) -> list[Dialogue]:
    path = Path(source.path)
    if not path.exists():
        raise MixError(f"mix source not found: {path}")
    if source.format in ("dialogue", "jsonl") or (source.format is None and path.suffix == ".jsonl" and _is_dialogue_jsonl(path)):
        records = read_jsonl(path)
    else:
        try:
            from qiaoban.data import import_corpus
        except ImportError as err:
            raise MixError(f"{path}: importing format {source.format or 'auto'} needs qiaoban.data.import_corpus ({err})") from err
        records = import_corpus(path, format=source.format)
    dialogues = list(itertools.islice(records, source.limit))
    for d in dialogues:
        d.source = d.source or source.label()
    if source.max_turns:
        for d in dialogues:  # cut at an assistant turn, so the kept part still ends on the companion
            d.turns = d.turns[: source.max_turns]
            if d.turns and d.turns[-1].role == "child":
                d.turns.pop()
    return dialogues


def _is_dialogue_jsonl(path: Path) -> bool:
    import json

    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    try:
        record = json.loads(first)
    except ValueError:
        return False
    return isinstance(record, dict) and isinstance(record.get("turns"), list)


def gate(dialogues: list[Dialogue], report: MixReport, settings: bool | dict[str, Any] = True) -> list[Dialogue]:
    """Keep the dialogues that pass qiaoban.data's quality and safety gates, counting why others failed."""
    from qiaoban.data import GateConfig, check_dialogue

    config = GateConfig.from_dict(settings) if isinstance(settings, dict) else GateConfig()
    kept = []
    for d in dialogues:
        problems = check_dialogue(d, config)
        for problem in problems:
            key = problem.split(":")[0]
            report.gate_problems[key] = report.gate_problems.get(key, 0) + 1
        if not problems:
            kept.append(d)
    return kept


def build_mix(spec: MixSpec) -> tuple[list[Dialogue], list[Dialogue], MixReport]:
    """(train, eval, report). Deterministic for a given spec and seed.

    The held-out set mirrors the training mix: each source gives eval_fraction of what it contributes, taken
    out before training dialogues are drawn, so no dialogue is in both.
    """
    rng = random.Random(spec.seed)
    report = MixReport()
    pools: list[tuple[MixSource, list[Dialogue]]] = []
    for source in spec.sources:
        dialogues = load_source(source)
        loaded = len(dialogues)
        if spec.gates:
            dialogues = gate(dialogues, report, spec.gates)
        well_formed = [d for d in dialogues if not d.structure_problems()]
        if len(well_formed) < len(dialogues):
            report.gate_problems["bad_structure"] = report.gate_problems.get("bad_structure", 0) + len(dialogues) - len(well_formed)
        if not well_formed:
            raise MixError(f"mix source {source.path}: no dialogue passed the gates (of {loaded} loaded)")
        rng.shuffle(well_formed)
        pools.append((source, well_formed))
        report.per_source[source.label()] = {"loaded": loaded, "kept": len(well_formed)}
    weight_sum = sum(s.weight for s in spec.sources)
    keep = 1 - spec.eval_fraction
    total = spec.total
    if total is None:  # the largest mix that repeats nothing
        total = int(min(len(pool) * keep * weight_sum / s.weight for s, pool in pools))
    train: list[Dialogue] = []
    held_out: list[Dialogue] = []
    for source, pool in pools:
        want = max(1, round(total * source.weight / weight_sum))
        n_eval = min(len(pool) - 1, max(1, round(want * spec.eval_fraction / keep))) if spec.eval_fraction else 0
        held_out += pool[:n_eval]
        rest = pool[n_eval:]
        if want > len(rest):  # asked for more than there is: repeat, and say so in the report
            picked = rest * (want // len(rest)) + rng.sample(rest, want % len(rest))
        else:
            picked = rng.sample(rest, want)
        train += picked
        report.per_source[source.label()].update(train=len(picked), unique=len({d.id for d in picked}), eval=n_eval)
    rng.shuffle(train)
    return train, held_out, report
