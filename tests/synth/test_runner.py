"""The synthesis runner with an LLM test double: records, retries, timeouts, rejections, dedup, resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from qiaoban.backends import BackendError
from qiaoban.data import GateConfig
from qiaoban.dialogue import read_jsonl
from qiaoban.synth.runner import RateLimiter, SynthConfig, dry_run, item_id, repair_tail, run_synth
from tests.synth.fakes import FakeTeacher, always_failing, dialogue_for

NO_SAFETY = GateConfig(safety_screen=False)


def config(tmp_path: Path, **kw) -> SynthConfig:
    values = {"n": 4, "out": tmp_path / "synth.jsonl", "seed": 3, "gates": NO_SAFETY, "backoff_s": 0.01,
              "progress": False}
    return SynthConfig(**{**values, **kw})


def rejected(cfg: SynthConfig) -> list[dict]:
    if not cfg.rejected_path.is_file():
        return []
    return [json.loads(line) for line in cfg.rejected_path.read_text().splitlines()]


def test_accepted_records_have_stable_ids_and_their_own_request(tmp_path):
    cfg = config(tmp_path, n=8, workers=4)
    teacher = FakeTeacher(delay=0.002)
    report = run_synth(teacher, cfg)
    dialogues = read_jsonl(cfg.out)
    assert [d.id for d in dialogues] != [] and len(dialogues) == 8
    assert {d.id for d in dialogues} == {item_id(3, i) for i in range(8)}
    assert teacher.max_concurrent > 1  # the pool really ran several calls at once
    for d in dialogues:
        # Under threads each record must carry its own request's persona and scenario (PICA mixed them up).
        assert d.turns[0].text.startswith(f"我是{d.meta['persona']['name']}，{d.meta['scenario']}")
        assert d.source == "synth:fake-teacher" and d.topic == d.meta["topic"]
        assert [t.role for t in d.turns] == ["child", "assistant"] * 2
    assert report["run"]["accepted"] == 8 and report["done"] and report["run"]["acceptance_rate"] == 1.0
    assert report["tokens"]["prompt"] > 0 and report["tokens"]["completion"] > 0
    assert json.loads(cfg.report_path.read_text())["run"]["accepted"] == 8


def test_cost_accounting(tmp_path):
    cfg = config(tmp_path, n=2, price_in=1.0, price_out=2.0)
    report = run_synth(FakeTeacher(), cfg)
    tokens = report["tokens"]
    assert tokens["cost"] == pytest.approx(tokens["prompt"] / 1e6 + 2 * tokens["completion"] / 1e6)


def test_retry_cap_ends_a_run_against_a_dead_teacher(tmp_path):
    cfg = config(tmp_path, n=50, max_retries=2, max_consecutive_failures=3)
    teacher = FakeTeacher(always_failing)
    start = time.monotonic()
    report = run_synth(teacher, cfg)
    assert time.monotonic() - start < 10
    assert len(teacher.calls) == 3 * 3  # three items, each tried 1 + 2 times, then the run stops
    assert report["run"]["failed"] == {"backend_error": 3} and report["stopped"]
    assert "connection refused" in report["stopped"]
    # Failures are not recorded as done: a later resume tries them again.
    assert not cfg.out.read_text() and not rejected(cfg)


def test_transient_errors_are_retried_with_backoff(tmp_path):
    failures: dict[str, int] = {}

    def flaky(messages, number):
        key = messages[-1]["content"]
        failures[key] = failures.get(key, 0) + 1
        return BackendError("503") if failures[key] <= 2 else dialogue_for(messages)

    cfg = config(tmp_path, n=3, max_retries=2)
    report = run_synth(FakeTeacher(flaky), cfg)
    dialogues = read_jsonl(cfg.out)
    assert len(dialogues) == 3 and all(d.meta["attempts"] == 3 for d in dialogues)
    assert report["run"]["teacher_calls"] == 9 and not report["run"]["failed"]


def test_per_call_timeout_is_enforced_and_capped(tmp_path):
    cfg = config(tmp_path, n=1, max_retries=1, timeout_s=0.2, max_consecutive_failures=1)
    teacher = FakeTeacher(delay=0.05)  # the reply takes ~1 s to stream
    start = time.monotonic()
    report = run_synth(teacher, cfg)
    assert time.monotonic() - start < 3
    assert len(teacher.calls) == 2 and report["run"]["failed"] == {"timeout": 1}


def test_malformed_replies_are_recorded_counted_and_bounded(tmp_path):
    cfg = config(tmp_path, n=3, max_items=5)
    teacher = FakeTeacher(lambda m, n: "对不起，我无法完成这个请求。")
    report = run_synth(teacher, cfg)
    assert len(teacher.calls) == 5  # every item tried once: a bad reply is final, not retried forever
    assert report["run"]["rejected_by_reason"] == {"unparseable": 5} and not report["done"]
    records = rejected(cfg)
    assert [r["id"] for r in records] == [item_id(3, i) for i in range(5)]
    assert records[0]["raw"] == "对不起，我无法完成这个请求。"
    # A second run with the same command retries none of them.
    again = FakeTeacher(lambda m, n: "对不起")
    report = run_synth(again, cfg)
    assert again.calls == [] and report["run"]["skipped_already_done"] == 5 and report["file"]["rejected"] == 5


def test_gate_rejections_are_named(tmp_path):
    def bad(messages, number):
        return [
            "孩子：我好难过。\n小桥：（摸摸头）别难过了。\n孩子：嗯。\n小桥：我们一起想办法。",  # narration
            "孩子：我好难过。\n小桥：作为一个人工智能，我理解你。\n孩子：嗯。\n小桥：我们一起想办法。",  # AI talk
            "孩子：我好难过。\n小桥：怎么了？",  # too few turns
            "Child: I am sad.\nAssistant: Why?\nChild: My dog.\nAssistant: I see.",  # not Chinese
        ][(number - 1) % 4]

    cfg = config(tmp_path, n=4, max_items=4)
    report = run_synth(FakeTeacher(bad), cfg)
    reasons = report["run"]["all_reasons"]
    assert {"narration", "ai_disclosure", "too_few_turns", "not_chinese"} <= set(reasons)
    assert report["run"]["accepted"] == 0 and sum(report["run"]["rejected_by_reason"].values()) == 4


def test_a_trailing_child_turn_is_trimmed_not_the_dialogue(tmp_path):
    def child_last(messages, number):
        return dialogue_for(messages) + "\n孩子：好的，谢谢你！"

    cfg = config(tmp_path, n=1)
    run_synth(FakeTeacher(child_last), cfg)
    (d,) = read_jsonl(cfg.out)
    assert [t.role for t in d.turns] == ["child", "assistant"] * 2
    assert d.meta["trimmed_trailing_child"] == "好的，谢谢你！"
    cfg = config(tmp_path / "strict", n=1, max_items=1, trim_trailing_child=False)
    report = run_synth(FakeTeacher(child_last), cfg)
    assert report["run"]["rejected_by_reason"] == {"ends_with_child": 1}


def test_a_looping_reply_is_cut_before_the_first_repeat(tmp_path):
    def looping(messages, number):
        once = dialogue_for(messages).split("\n\n", 1)[1]  # without the teacher's preface
        return once + "\n孩子：我还是有点难过。\n小桥：难过的时候有人陪着会好一点，我在这儿。\n" + once

    cfg = config(tmp_path, n=1)
    report = run_synth(FakeTeacher(looping), cfg)
    (d,) = read_jsonl(cfg.out)
    assert len(d.turns) == 6 and d.turns[-1].text == "难过的时候有人陪着会好一点，我在这儿。"
    assert d.meta["cut_at_repeat"] == 4
    assert report["run"]["accepted_after_repair"] == {"cut_at_repeat": 1}
    cfg = config(tmp_path / "at_the_limit", n=1)  # the loop ran into the token limit: the cut drops the cut-off end
    run_synth(FakeTeacher(lambda m, n: looping(m, n) + "\n孩子：我还是", finish_reason="length"), cfg)
    assert len(read_jsonl(cfg.out)[0].turns) == 6
    cfg = config(tmp_path / "strict", n=1, max_items=1, cut_at_repeat=False)
    report = run_synth(FakeTeacher(looping), cfg)
    assert report["run"]["rejected_by_reason"] == {"repeated_turn": 1}


def test_truncated_replies_are_rejected(tmp_path):
    cfg = config(tmp_path, n=1, max_items=1)
    report = run_synth(FakeTeacher(finish_reason="length"), cfg)
    assert report["run"]["rejected_by_reason"] == {"truncated": 1}


def test_near_duplicates_are_removed_across_the_corpus(tmp_path):
    same = "孩子：今天我的同桌把我的橡皮弄坏了还不承认。\n小桥：东西被弄坏了还不被承认，你一定又委屈又生气。\n" \
           "孩子：对啊，那是我最喜欢的橡皮。\n小桥：最喜欢的东西坏了真让人心疼，你想怎么和他说呢？"
    cfg = config(tmp_path, n=3, max_items=3)
    report = run_synth(FakeTeacher(lambda m, n: same), cfg)
    assert report["run"]["accepted"] == 1 and report["run"]["rejected_by_reason"] == {"near_duplicate": 2}
    # The dedup index also covers what was already in the file: another seed's identical reply is rejected.
    other = config(tmp_path, n=4, seed=9, max_items=1)
    report = run_synth(FakeTeacher(lambda m, n: same.replace("。", "！", 1)), other)
    assert report["run"]["rejected_by_reason"] == {"near_duplicate": 1}
    assert rejected(other)[-1]["twin"] == item_id(3, 0)


@pytest.mark.skipif(not __import__("importlib").util.find_spec("qiaoban.safety"), reason="qiaoban.safety missing")
def test_safety_screen_rejects_victim_blaming(tmp_path):
    blaming = "孩子：老师打了我的手心。\n小桥：老师打你一定是你先做错了事，你应该反省自己。\n" \
              "孩子：可是我没做错。\n小桥：你要听老师的话，不要顶嘴。"
    cfg = config(tmp_path, n=1, max_items=1, gates=GateConfig())
    report = run_synth(FakeTeacher(lambda m, n: blaming), cfg)
    assert "unsafe_assistant" in report["run"]["all_reasons"]


def test_resume_skips_done_items_and_extends(tmp_path):
    cfg = config(tmp_path, n=3)
    run_synth(FakeTeacher(), cfg)
    teacher = FakeTeacher()
    report = run_synth(teacher, config(tmp_path, n=6))
    ids = [d.id for d in read_jsonl(cfg.out)]
    assert ids == [item_id(3, i) for i in range(6)] and len(teacher.calls) == 3
    assert report["run"]["skipped_already_done"] == 3 and report["file"]["accepted"] == 6


def test_partial_last_line_is_cut_on_resume(tmp_path):
    cfg = config(tmp_path, n=2)
    run_synth(FakeTeacher(), cfg)
    whole = cfg.out.read_bytes()
    cfg.out.write_bytes(whole + whole.splitlines(keepends=True)[0][:37])  # a kill in the middle of a write
    report = run_synth(FakeTeacher(), config(tmp_path, n=3))
    assert report["run"]["partial_bytes_cut"] == 37
    assert [d.id for d in read_jsonl(cfg.out)] == [item_id(3, i) for i in range(3)]


def test_repair_tail(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": 3')
    assert repair_tail(path) == 7 and path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert repair_tail(path) == 0
    path.write_bytes(b'{"only": "part')
    assert repair_tail(path) == 14 and path.read_bytes() == b""
    path.write_bytes(b'{"a": 1}\n{"complete": true}')  # written by hand without the last newline: kept
    assert repair_tail(path) == 0 and path.read_bytes() == b'{"a": 1}\n{"complete": true}\n'


def test_rate_limit_spaces_request_starts(tmp_path):
    cfg = config(tmp_path, n=4, workers=4, rpm=600)  # one start every 0.1 s
    teacher = FakeTeacher()
    run_synth(teacher, cfg)
    gaps = [b - a for a, b in zip(teacher.call_times, teacher.call_times[1:], strict=False)]
    assert len(gaps) == 3 and min(gaps) >= 0.09
    limiter = RateLimiter(0)
    assert limiter.interval == 0


def test_dry_run_prints_prompts_without_a_model(tmp_path):
    lines: list[str] = []
    dry_run(config(tmp_path, n=2), echo=lines.append)
    text = "\n".join(lines)
    assert item_id(3, 0) in text and item_id(3, 1) in text and "--- system" in text and "【情境】" in text
    assert not (tmp_path / "synth.jsonl").exists()


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    from qiaoban.synth.runner import RunLock, SynthError

    cfg = config(tmp_path, n=1)
    lock = RunLock(cfg.out)  # as if another process were running
    with pytest.raises(SynthError, match="another run"):
        run_synth(FakeTeacher(), cfg)
    lock.release()
    assert run_synth(FakeTeacher(), cfg)["run"]["accepted"] == 1
    assert not (tmp_path / "synth.jsonl.lock").exists()
