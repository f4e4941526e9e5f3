"""The weighted data mix: proportions, a held-out split that never overlaps training, determinism, errors."""

from __future__ import annotations

import pytest

from qiaoban.dialogue import Dialogue, Turn, write_jsonl
from qiaoban.train.mix import MixError, MixSpec, build_mix


def _write(path, prefix: str, n: int):
    dialogues = [Dialogue(f"{prefix}{i}", [Turn("child", f"{prefix} child {i}"), Turn("assistant", f"{prefix} reply {i}")],
                          source=prefix) for i in range(n)]
    write_jsonl(path, dialogues)
    return path


def test_weights_set_the_shares_and_eval_never_overlaps_train(tmp_path):
    child = _write(tmp_path / "child.jsonl", "c", 40)
    general = _write(tmp_path / "general.jsonl", "g", 500)
    spec = MixSpec.from_dict({"seed": 1, "eval_fraction": 0.2, "gates": False, "sources": [
        {"path": str(child), "weight": 0.6, "format": "dialogue"},
        {"path": str(general), "weight": 0.4, "format": "dialogue"},
    ]})
    train, held_out, report = build_mix(spec)
    by_source = {s: sum(d.source == s for d in train) for s in ("c", "g")}
    # total: null -> the scarce child data (32 after holding out 8) is used whole, the rest sized to 40%
    assert by_source["c"] == 32 and abs(by_source["g"] / len(train) - 0.4) < 0.02
    assert not {d.id for d in train} & {d.id for d in held_out}
    assert {d.source for d in held_out} == {"c", "g"}
    again, again_held_out, _ = build_mix(spec)
    assert [d.id for d in again] == [d.id for d in train] and [d.id for d in again_held_out] == [d.id for d in held_out]
    assert report.lines()[0].startswith("child: loaded 40, kept 40, train 32")


def test_total_larger_than_a_source_repeats_it_and_says_so(tmp_path):
    child = _write(tmp_path / "child.jsonl", "c", 10)
    spec = MixSpec.from_dict({"total": 30, "eval_fraction": 0, "gates": False,
                              "sources": [{"path": str(child), "weight": 1, "format": "dialogue"}]})
    train, held_out, report = build_mix(spec)
    assert len(train) == 30 and held_out == []
    assert report.per_source["child"] == {"loaded": 10, "kept": 10, "train": 30, "unique": 10, "eval": 0}


@pytest.mark.parametrize("raw, message", [
    ({"sources": []}, "at least one source"),
    ({"sources": [{"path": "x.jsonl", "weight": 0}]}, "weight must be positive"),
    ({"sources": [{"path": "x.jsonl"}], "ratio": 1}, "unknown mix keys"),
    ({"sources": [{"path": "x.jsonl", "wieght": 1}]}, "unknown keys"),
    ({"sources": [{"path": "x.jsonl"}], "eval_fraction": 1.5}, "eval_fraction"),
])
def test_bad_specs_are_named(raw, message):
    with pytest.raises(MixError, match=message):
        MixSpec.from_dict(raw)


def test_missing_source_file_is_a_clear_error(tmp_path):
    spec = MixSpec.from_dict({"gates": False, "sources": [{"path": str(tmp_path / "nope.jsonl"), "weight": 1}]})
    with pytest.raises(MixError, match="not found"):
        build_mix(spec)


def test_companion_mix_gates_out_the_victim_blaming_dialogue(shared_data):
    """QiaoBan dialogue 69 (the teacher hit the child; the 'assistant' defends the teacher) must not be learned."""
    from qiaoban.config import load_yaml

    raw = load_yaml("configs/mix_companion.yaml")
    raw["sources"] = [dict(raw["sources"][0], path=str(shared_data / "qiaoban" / "child_chat_dev.json"))]
    train, held_out, report = build_mix(MixSpec.from_dict(raw))
    ids = {d.id for d in train + held_out}
    assert "69" not in ids and len(ids) >= 30
    assert report.gate_problems.get("parent_roleplay", 0) > 0
