"""MinHash-LSH near-duplicate index on Chinese text."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qiaoban.data import NearDuplicateIndex, dialogue_text, import_corpus, normalize_text
from qiaoban.dialogue import Dialogue, Turn

BASE = ("今天数学考试我只考了六十分，回家的路上我一直在想怎么跟妈妈说。我觉得自己特别笨，同桌考了满分，"
        "老师还表扬了他。我心里很难受，晚饭也不想吃，只想一个人待在房间里，不想让任何人看到我哭。")
# The same story with different punctuation, spacing and one short phrase changed: a teacher's re-run.
NEAR = ("今天数学考试我只考了六十分 回家的路上我一直在想怎么跟妈妈说！我觉得自己特别笨，同桌考了满分，"
        "老师还表扬了他……我心里很难受，晚饭也不想吃，只想一个人待在房间里，不想让别人看到我哭。")
OTHER = ("周末我和好朋友去公园放风筝，风特别大，我们的风筝飞得比树还高。后来线断了，风筝挂在了树上，"
         "我们找了一位叔叔帮忙才拿下来。虽然有点小意外，但是我们玩得特别开心，约好下周再去。")
SAME_TOPIC = ("今天语文考试我考得不太好，回家以后不知道怎么跟爸爸说。我有点担心他会生气，"
              "但是我已经很努力地复习了。我想下次一定要考好一点，让他为我高兴。")


def test_near_duplicate_chinese_found_and_different_text_not():
    index = NearDuplicateIndex(threshold=0.7)
    assert index.add("base", BASE) is None
    assert index.add("near", NEAR) == "base"
    assert index.add("other", OTHER) is None
    assert index.add("same_topic", SAME_TOPIC) is None  # same theme, different words: not a duplicate
    assert len(index) == 3  # the duplicate was not stored
    assert index.query(BASE.replace("。", "，")) == "base"
    assert index.query("我喜欢画画，也喜欢唱歌。") is None


def test_similarity_tracks_jaccard():
    index = NearDuplicateIndex()
    assert index.similarity(BASE, BASE) == 1.0
    assert index.similarity(BASE, NEAR) > 0.8
    assert index.similarity(BASE, OTHER) < 0.1


def test_normalisation_ignores_width_case_punctuation_and_space():
    assert normalize_text("Ｈｅｌｌｏ， 世界！\n") == normalize_text("hello世界") == "hello世界"
    index = NearDuplicateIndex(threshold=0.99)
    index.add("a", "我今天很开心！")
    assert index.add("b", "我今天，很开心。") == "a"


def test_deterministic_across_instances_and_seed_dependent():
    a, b = NearDuplicateIndex(seed=7), NearDuplicateIndex(seed=7)
    assert np.array_equal(a.signature(BASE), b.signature(BASE))
    assert not np.array_equal(a.signature(BASE), NearDuplicateIndex(seed=8).signature(BASE))
    texts = [BASE, NEAR, OTHER, SAME_TOPIC, BASE + OTHER]
    for index in (a, b):
        for i, t in enumerate(texts):
            index.add(str(i), t)
    assert a._keys == b._keys


def test_short_and_empty_texts():
    index = NearDuplicateIndex()
    assert index.add("x", "好") is None
    assert index.add("y", "好！") == "x"
    assert index.add("z", "嗯") is None


def test_bands_follow_threshold_and_bad_arguments_fail():
    strict, loose = NearDuplicateIndex(threshold=0.9), NearDuplicateIndex(threshold=0.5)
    assert strict.bands * strict.rows <= 128 and loose.bands * loose.rows <= 128
    assert strict.rows > loose.rows  # fewer, longer bands for a stricter threshold
    with pytest.raises(ValueError):
        NearDuplicateIndex(threshold=0)


def test_insert_rate_on_real_counselling_dialogues(shared_data):
    path = shared_data / "cpsycoun" / "CPsyCounD.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    dialogues = list(import_corpus(path))[:1500]
    index = NearDuplicateIndex()
    started = time.perf_counter()
    twins = {d.id: index.add(d.id, dialogue_text(d)) for d in dialogues}
    rate = len(dialogues) / (time.perf_counter() - started)
    print(f"dedup insert rate: {rate:.0f} dialogues/s ({len(dialogues)} CPsyCoun dialogues)")
    found = {k: v for k, v in twins.items() if v}
    # CPsyCoun repeats case 182 as case 241 (same client story, lightly reworded)
    assert found.get("case_241") == "case_182"
    assert len(found) < 0.05 * len(dialogues)


def test_dialogue_text_is_turn_texts_in_order():
    d = Dialogue(id="1", turns=[Turn("child", "我难过"), Turn("assistant", "我在听")])
    assert dialogue_text(d) == "我难过\n我在听"
