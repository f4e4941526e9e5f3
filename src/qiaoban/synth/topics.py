"""What the synthesized dialogues are about: the topic taxonomy, plain topic-list imports, seeded sampling.

    scenarios = load_scenarios()                           # the packaged taxonomy (taxonomy.yaml)
    scenarios = load_scenarios("topic.txt")                # a plain list: one theme per line, items split by 、
    plan = sample_scenarios(scenarios, 100, seed=7)        # stratified over categories, no near-repeats

Sampling is prefix-stable: the first k items for a seed are the same whatever n is, so a run that is resumed
or extended with the same seed asks for the same scenario at the same index.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from itertools import islice
from pathlib import Path

import yaml

AGE_BANDS: tuple[str, ...] = ("6-8", "9-12", "13-15", "16-18")
# Emotions for imported topics, which arrive without any.
DEFAULT_EMOTIONS: tuple[str, ...] = ("开心", "难过", "生气", "委屈", "害怕", "担心", "失望", "紧张", "尴尬", "孤独")


@dataclass(frozen=True)
class Scenario:
    category_id: str
    category: str
    topic: str
    text: str
    age_bands: tuple[str, ...]
    emotions: tuple[str, ...]


class TopicFileError(ValueError):
    """A taxonomy or topic list that cannot be used."""


def load_taxonomy(path: str | Path | None = None) -> list[Scenario]:
    """Scenarios of a taxonomy YAML (default: the packaged one); a clear error names what is wrong."""
    if path is None:
        text, where = resources.files("qiaoban.synth").joinpath("taxonomy.yaml").read_text("utf-8"), "taxonomy.yaml"
    else:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise TopicFileError(f"{where}: not valid YAML: {err}") from None
    categories = data.get("categories") if isinstance(data, dict) else None
    if not isinstance(categories, list) or not categories:
        raise TopicFileError(f"{where}: expected a mapping with a non-empty 'categories' list")
    scenarios: list[Scenario] = []
    for c in categories:
        try:
            cat_ages = tuple(c.get("age_bands") or AGE_BANDS)
            cat_emotions = tuple(c["emotions"])
            for topic in c["topics"]:
                ages = tuple(topic.get("age_bands") or cat_ages)
                emotions = tuple(topic.get("emotions") or cat_emotions)
                for s in topic["scenarios"]:
                    if isinstance(s, str):
                        s = {"text": s}
                    scenarios.append(Scenario(
                        category_id=str(c["id"]), category=str(c["name"]), topic=str(topic["name"]),
                        text=str(s["text"]).strip(), age_bands=tuple(s.get("age_bands") or ages),
                        emotions=tuple(s.get("emotions") or emotions),
                    ))
        except (KeyError, TypeError, AttributeError) as err:
            raise TopicFileError(f"{where}: category {c.get('id', '?') if isinstance(c, dict) else c!r}: "
                                 f"missing or malformed field {err}") from None
    for s in scenarios:
        unknown = set(s.age_bands) - set(AGE_BANDS)
        if unknown:
            raise TopicFileError(f"{where}: scenario {s.text!r}: unknown age bands {sorted(unknown)}")
        if not s.text or not s.emotions:
            raise TopicFileError(f"{where}: scenario in {s.category_id}/{s.topic} has no text or no emotions")
    return scenarios


_QUOTES = "\"'“”‘’「」"
_OPEN, _CLOSE = "（(【[「“", "）)】]」”"


def split_topic_line(line: str) -> list[str]:
    """Items of one topic-list line: split on 、 。 ； outside brackets; stray quotes and blanks dropped."""
    items, current, depth = [], [], 0
    for ch in line:
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(depth - 1, 0)
        if ch in "、。；;" and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    cleaned = []
    for item in items:
        item = item.strip().strip("，,：: \t")
        # A quote that has no partner (the stray `"` at the start of a line) is noise; paired quotes stay.
        if item and sum(item.count(q) for q in _QUOTES) % 2:
            item = item.strip(_QUOTES).strip()
        if len(item) >= 2:
            cleaned.append(item)
    return cleaned


def import_topic_list(path: str | Path) -> list[Scenario]:
    """A plain topic list (one theme per line, items separated by 、) as scenarios: each line becomes a
    category named after its first item; an item seen before (on any line) is skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise TopicFileError(f"{path}: not UTF-8 text ({err})") from None
    seen: set[str] = set()
    scenarios: list[Scenario] = []
    for number, line in enumerate(lines, start=1):
        items = []
        for item in split_topic_line(line):
            if _fold(item) not in seen:
                seen.add(_fold(item))
                items.append(item)
        for item in items:
            scenarios.append(Scenario(
                category_id=f"{path.stem}:{number}", category=items[0], topic=item, text=item,
                age_bands=AGE_BANDS, emotions=DEFAULT_EMOTIONS,
            ))
    if not scenarios:
        raise TopicFileError(f"{path}: no topics found (expected one theme per line, items separated by 、)")
    return scenarios


def _fold(text: str) -> str:
    return re.sub(r"\s+", "", text)


def load_scenarios(path: str | Path | None = None) -> list[Scenario]:
    """The packaged taxonomy, a taxonomy YAML (.yaml/.yml) or a plain topic list (anything else)."""
    if path is None or Path(path).suffix.lower() in (".yaml", ".yml"):
        return load_taxonomy(path)
    if not Path(path).is_file():
        raise TopicFileError(f"topic file not found: {path}")
    return import_topic_list(path)


def iter_scenarios(scenarios: list[Scenario], seed: int) -> Iterator[Scenario]:
    """An endless, seeded, stratified stream: every round visits each category once (in a shuffled order, never
    the same category twice in a row); inside a category, topics and then scenarios are cycled in shuffled
    order, so a topic comes back only after all of its category's other topics have had their turn."""
    if not scenarios:
        raise TopicFileError("no scenarios to sample from")
    rng = random.Random(f"synth-plan:{seed}")
    by_category: dict[str, dict[str, list[Scenario]]] = {}
    for s in scenarios:
        by_category.setdefault(s.category_id, {}).setdefault(s.topic, []).append(s)
    topic_cycles = {c: _cycle(list(topics), rng) for c, topics in by_category.items()}
    scenario_cycles = {(c, t): _cycle(items, rng) for c, topics in by_category.items() for t, items in topics.items()}
    categories = list(by_category)
    last = None
    while True:
        order = categories[:]
        rng.shuffle(order)
        if len(order) > 1 and order[0] == last:
            order[0], order[-1] = order[-1], order[0]
        for c in order:
            topic = next(topic_cycles[c])
            yield next(scenario_cycles[(c, topic)])
        last = order[-1]


def _cycle(items: list, rng: random.Random) -> Iterator:
    while True:
        batch = items[:]
        rng.shuffle(batch)
        yield from batch


def sample_scenarios(scenarios: list[Scenario], n: int, seed: int) -> list[Scenario]:
    return list(islice(iter_scenarios(scenarios, seed), n))
