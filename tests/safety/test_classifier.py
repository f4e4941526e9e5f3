"""The learned layer: generated data and reproducible training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qiaoban.safety import classifier

REPO = Path(__file__).resolve().parents[2]


def test_generation_is_seeded_and_covers_every_label():
    rows = classifier.generate(seed=3, per_label=20)
    assert rows == classifier.generate(seed=3, per_label=20)
    assert rows != classifier.generate(seed=4, per_label=20)
    labels = {label for _, label, _ in rows}
    assert "benign" in labels and len(labels) == 11


def test_training_is_reproducible_and_learns(tmp_path):
    rows = classifier.generate(seed=1, per_label=40)
    first = classifier.train(rows)
    second = classifier.train(rows)
    assert first == second
    classifier.save(first, tmp_path / "m.json", seed=1)
    model = classifier.load(str(tmp_path / "m.json"))
    assert json.loads((tmp_path / "m.json").read_text())["seed"] == 1
    correct = sum(max((p := classifier.predict(text, model)), key=p.get) == label for text, label, _ in rows)
    assert correct / len(rows) > 0.85  # a small model fit on a few hundred examples, scored on them


def test_packaged_model_separates_risk_from_everyday_talk():
    risky = classifier.predict("我觉得自己是个多余的人，活着就是受罪")
    benign = classifier.predict("今天和同学一起去图书馆看书")
    assert risky["benign"] < 0.3 < 0.7 < benign["benign"]
    assert max(risky, key=risky.get) == "self_harm"


@pytest.mark.slow
def test_packaged_model_is_exactly_what_train_rebuilds():
    meta = json.loads(classifier.model_path().read_text("utf-8"))
    rows = classifier.generate(seed=meta["seed"], per_label=meta["per_label"])
    for key, read in (("examples", classifier.labelled_rows), ("everyday", classifier.everyday_rows)):
        for source in meta[key]:
            path = REPO / source["path"]
            assert classifier.file_digest(path) == source["sha256"], f"{path} changed since the model was trained"
            rows += read(path)
    rebuilt = classifier.train(rows, max_iter=meta["max_iter"])
    assert rebuilt["labels"] == meta["labels"] and rebuilt["bias"] == meta["bias"]
    assert rebuilt["weights"] == meta["weights"]


def test_labelled_examples_join_training_with_their_context(tmp_path):
    path = tmp_path / "dev.jsonl"
    lines = [{"text": "我不想活了", "label": "risk", "category": "self_harm"},
             {"text": "他又来了", "label": "risk", "category": "sexual_abuse", "context": ["继父晚上进我房间"]},
             {"text": "笑死我了", "label": "benign", "category": None}]
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines), encoding="utf-8")
    rows = classifier.labelled_rows(path, repeat=2)
    assert rows == ([("我不想活了", "self_harm", ())] * 2 + [("他又来了", "sexual_abuse", ("继父晚上进我房间",))] * 2
                    + [("笑死我了", "benign", ())] * 2)


def test_everyday_talk_is_every_child_turn_of_a_dialogue_without_risk_after_her_earlier_ones(tmp_path):
    from qiaoban.dialogue import Dialogue, Turn, write_jsonl

    path = tmp_path / "gold.jsonl"
    write_jsonl(path, [
        Dialogue("a", [Turn("child", "累死了"), Turn("assistant", "今天很忙吧？"), Turn("child", "跑了三千米"),
                       Turn("assistant", "腿还好吗？"), Turn("child", "腿不是我的了")], meta={"risk": None}),
        Dialogue("b", [Turn("child", "他又打我了"), Turn("assistant", "你现在安全吗？")],
                 meta={"risk": {"category": "physical_abuse"}}),
    ])
    assert classifier.everyday_rows(path) == [("累死了", "benign", ()), ("跑了三千米", "benign", ("累死了",)),
                                              ("腿不是我的了", "benign", ("累死了", "跑了三千米"))]


def test_the_same_words_read_differently_after_different_earlier_messages():
    despair, plans = ("活着好累 不想再撑了",), ("社团招新 选哪个好呢",)
    rows = [("我想好了", "self_harm", despair), ("我想好了", "benign", plans)] * 30
    rows += [(text, "benign", ()) for text in ("今天吃了面条", "明天去上学", "作业写完了")] * 10
    model = classifier.prepare(classifier.train(rows, min_count=1))
    after_despair = classifier.predict("我想好了", model, context=["活着好累 不想再撑了"])
    after_plans = classifier.predict("我想好了", model, context=["社团招新 选哪个好呢"])
    assert after_despair["self_harm"] > 0.8 > 0.2 > after_plans["self_harm"]


def test_cross_validation_screens_every_item_once_with_a_model_that_never_saw_it(tmp_path):
    from qiaoban.safety.bench import cross_validate

    path = tmp_path / "dev.jsonl"
    lines = [{"text": f"我不想活了{i}", "label": "risk", "category": "self_harm"} for i in range(6)]
    lines += [{"text": f"今天去公园玩了{i}次", "label": "benign", "category": None} for i in range(4)]
    path.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines), encoding="utf-8")
    report = cross_validate(path, folds=2, thresholds=(0.5, 0.9), per_label=10)
    assert (report["risky"], report["benign"]) == (6, 4)
    assert report["thresholds"][0.5]["recall"] == 1.0  # the lexicon alone finds "不想活了"
    assert 0.0 <= report["thresholds"][0.9]["false_positive_rate"] <= 1.0


def test_everyday_talk_of_held_out_gold_dialogues_is_rarely_flagged():
    from qiaoban.safety.detect import check

    rows = classifier.everyday_rows(REPO / "corpora" / "coach-gold" / "dev.jsonl")  # never trained on
    flagged = [text for text, _, context in rows if check(text, context).risk]
    assert len(rows) > 500
    # 18.5% before the classifier learned everyday talk; 2.0% without carrying a clear risk forward, 5.2% with it
    assert len(flagged) / len(rows) <= 0.06, flagged
