"""Seeded splits by dialogue: reproducible, order-independent, no leakage."""

from __future__ import annotations

import random

import pytest

from qiaoban.data import split_dialogues
from qiaoban.dialogue import Dialogue, Turn

TOPICS = ["考试", "朋友", "宠物", "搬家", "比赛", "生病", "游戏", "弟弟", "老师", "画画"]


def corpus(n: int = 200) -> list[Dialogue]:
    rng = random.Random(3)
    out = []
    for i in range(n):
        words = "".join(rng.choice("我你他很好不想去学校玩开心难过朋友老师爸妈书画跑跳哭笑") for _ in range(40))
        out.append(Dialogue(id=f"d{i}", topic=TOPICS[i % 10],
                            turns=[Turn("child", f"{TOPICS[i % 10]}{words}"), Turn("assistant", f"我在听{i}")]))
    return out


def ids(splits: dict[str, list[Dialogue]]) -> dict[str, list[str]]:
    return {name: [d.id for d in part] for name, part in splits.items()}


def test_sizes_and_no_leakage():
    splits = split_dialogues(corpus(), (0.8, 0.1, 0.1), seed=0)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 160, "dev": 20, "test": 20}
    seen = [i for part in ids(splits).values() for i in part]
    assert len(seen) == len(set(seen)) == 200


def test_reproducible_order_independent_and_seeded():
    data = corpus()
    first = ids(split_dialogues(data, seed=1))
    shuffled = data[:]
    random.Random(9).shuffle(shuffled)
    again = ids(split_dialogues(shuffled, seed=1))
    assert {k: sorted(v) for k, v in first.items()} == {k: sorted(v) for k, v in again.items()}
    other = ids(split_dialogues(data, seed=2))
    assert sorted(other["test"]) != sorted(first["test"])


def test_near_duplicates_stay_in_one_split():
    data = corpus(100)
    twins = [Dialogue(id=f"{d.id}-copy", turns=[Turn(t.role, t.text + "。") for t in d.turns]) for d in data[:30]]
    splits = split_dialogues(data + twins, seed=0)
    where = {d.id: name for name, part in splits.items() for d in part}
    assert all(where[f"d{i}"] == where[f"d{i}-copy"] for i in range(30))
    assert sum(len(p) for p in splits.values()) == 130


def test_two_way_split_and_bad_ratios():
    splits = split_dialogues(corpus(50), (0.9, 0.1), names=("train", "test"))
    assert [len(splits["train"]), len(splits["test"])] == [45, 5]
    with pytest.raises(ValueError, match="sum to 1"):
        split_dialogues(corpus(10), (0.8, 0.1, 0.2))
    with pytest.raises(ValueError, match="ratios for"):
        split_dialogues(corpus(10), (0.5, 0.5))


def test_a_shared_field_keeps_dialogues_together_and_strata_are_cut_alike():
    data = corpus(200)
    for d in data:
        d.meta = {"scenario": f"s{int(d.id[1:]) // 2}", "band": "6-8" if int(d.id[1:]) % 4 < 2 else "9-12"}
    splits = split_dialogues(data, (0.8, 0.1, 0.1), seed=5, group_by="meta.scenario", stratify_by=("meta.band",))
    where = {d.id: name for name, part in splits.items() for d in part}
    assert all(where[f"d{2 * i}"] == where[f"d{2 * i + 1}"] for i in range(100))
    for band in ("6-8", "9-12"):
        sizes = {name: sum(d.meta["band"] == band for d in part) for name, part in splits.items()}
        assert sizes == {"train": 80, "dev": 10, "test": 10}
    with pytest.raises(ValueError, match="unknown field"):
        split_dialogues(data, group_by="scenario")


def test_stats_count_dialogues_by_fields_and_their_cells():
    from qiaoban.data.report import dialogue_stats, render_stats

    data = corpus(12)
    for i, d in enumerate(data):
        d.meta = {"band": "6-8" if i % 3 else "9-12", "category": "school" if i < 6 else "family"}
    stats = dialogue_stats(data, by=("meta.category", "meta.band"))
    assert stats["by"] == {"meta.category": {"family": 6, "school": 6}, "meta.band": {"6-8": 8, "9-12": 4}}
    assert stats["by_combination"] == {"family × 6-8": 4, "family × 9-12": 2, "school × 6-8": 4,
                                       "school × 9-12": 2}
    assert "4 cells, fewest 2" in render_stats(stats)
