"""The hand-written gold corpus (corpora/coach-gold): what its data card promises holds for every dialogue."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from qiaoban.data import check_dialogue, split_dialogues
from qiaoban.data.dedup import NearDuplicateIndex, dialogue_text
from qiaoban.dialogue import read_jsonl
from qiaoban.synth.topics import load_taxonomy

GOLD = Path(__file__).resolve().parents[2] / "corpora" / "coach-gold"
SPLITS = ("train", "dev", "test")
LIMITS = {"6-8": 40, "9-12": 80, "13-15": 80, "16-18": 80}
RISK_LIMIT = 100  # a reply that must carry a trusted adult and a help line (docs/coaching-guide.md, section 3)
# Each writing round is split on its own, so a later round never moves a dialogue of an earlier one.
SPLIT_ARGS = {"ratios": (0.8, 0.1, 0.1), "seed": 0, "group_by": "meta.scenario",
              "stratify_by": ("meta.category", "meta.age_band")}


@pytest.fixture(scope="module")
def splits():
    return {name: read_jsonl(GOLD / f"{name}.jsonl") for name in SPLITS}


@pytest.fixture(scope="module")
def corpus(splits):
    return [d for part in splits.values() for d in part]


def test_every_dialogue_passes_every_quality_gate_and_the_shape_rules(corpus):
    ids = Counter(d.id for d in corpus)
    assert not [i for i, n in ids.items() if n > 1]
    categories = {s.category_id for s in load_taxonomy()}
    for d in corpus:
        assert check_dialogue(d) == [], d.id
        assert 6 <= len(d.turns) <= 16 and len(d.turns) % 2 == 0, d.id
        assert d.source == "coach-gold" and d.meta["category"] in categories, d.id
        limit = RISK_LIMIT if d.meta["risk"] else LIMITS[d.meta["age_band"]]
        for turn in d.turns[1::2]:
            assert len(turn.text) <= limit, (d.id, turn.text)
            assert turn.text.count("？") + turn.text.count("?") <= 1, (d.id, turn.text)


def test_no_near_duplicates_anywhere(corpus):
    index = NearDuplicateIndex(threshold=0.85)
    twins = [(d.id, twin) for d in corpus if (twin := index.add(d.id, dialogue_text(d))) is not None]
    assert twins == []


def test_the_split_is_the_documented_one_and_keeps_scenarios_apart(splits, corpus):
    again: dict[str, list[str]] = {name: [] for name in SPLITS}
    for round_ in sorted({d.meta["round"] for d in corpus}):
        for name, part in split_dialogues([d for d in corpus if d.meta["round"] == round_], **SPLIT_ARGS).items():
            again[name] += [d.id for d in part]
    assert {k: sorted(v) for k, v in again.items()} == {k: sorted(d.id for d in v) for k, v in splits.items()}
    scenarios = {name: {d.meta["scenario"] for d in part} for name, part in splits.items()}
    assert not scenarios["test"] & (scenarios["train"] | scenarios["dev"])


def test_the_review_covers_a_tenth_and_records_its_verdicts(corpus):
    reviews = [json.loads(line) for line in (GOLD / "review.jsonl").read_text("utf-8").splitlines() if line]
    reviewed = {r["id"] for r in reviews}
    assert len(reviewed) >= len(corpus) // 10
    kept = {d.id for d in corpus}
    for r in reviews:
        assert r["verdict"] in ("pass", "fixed", "dropped"), r
        assert (r["id"] in kept) == (r["verdict"] != "dropped"), r


def test_the_corpus_covers_what_the_issue_asks(corpus):
    assert len(corpus) >= 1200
    cells = Counter((d.meta["category"], d.meta["age_band"]) for d in corpus)
    allowed = {(s.category_id, band) for s in load_taxonomy() for band in s.age_bands}
    assert set(cells) == allowed and min(cells.values()) >= 15
    joyful = {"joy", "pride", "excited", "grateful", "curious", "bored"}
    assert sum(d.meta["moment"] in joyful or d.meta["category"] == "joy" for d in corpus) >= 0.20 * len(corpus)
    assert sum(bool(d.meta["risk"]) for d in corpus) >= 0.10 * len(corpus)
    assert sum(bool(d.meta["hard"]) for d in corpus) >= 0.15 * len(corpus)
    played_down = [d for d in corpus if d.meta["risk"] and d.meta["risk"]["style"] != "plain"]
    assert len(played_down) >= 0.5 * sum(bool(d.meta["risk"]) for d in corpus)
