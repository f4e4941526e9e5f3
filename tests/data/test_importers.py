"""Importers: each format on small inline samples, then on the real public corpora when present."""

from __future__ import annotations

import json
import time

import pytest

from qiaoban.data import CorpusRecordError, detect_format, import_corpus
from qiaoban.dialogue import DialogueFormatError


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


QIAOBAN_SAMPLE = [
    {"dialog_id": 7, "emotion": "sad", "topic": "考试",
     "dialog": [{"text": "我考砸了。", "speaker": "孩子"}, {"text": "听起来你很难过。", "speaker": "智能助手"},
                {"text": "嗯。", "speaker": "孩子"}, {"text": "而且妈妈会骂我。", "speaker": "孩子"}]},
]


def test_qiaoban_json_array_is_imported_faithfully(tmp_path):
    path = write(tmp_path / "chat.json", json.dumps(QIAOBAN_SAMPLE, ensure_ascii=False))
    assert detect_format(path) == "qiaoban"
    [d] = list(import_corpus(path))
    assert (d.id, d.source, d.emotion, d.topic) == ("7", "qiaoban", "sad", "考试")
    assert [t.role for t in d.turns] == ["child", "assistant", "child", "child"]  # two child turns stay two
    assert d.turns[1].text == "听起来你很难过。"


def test_messages_jsonl_client_counselor(tmp_path):
    lines = [
        {"id": 3, "source_file": "data/3.json", "messages": [
            {"role": "client", "content": "我最近睡不好。"}, {"role": "counselor", "content": "能多说一点吗？"}]},
        {"id": "case_9", "messages": [
            {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好呀"}]},
    ]
    path = write(tmp_path / "smile_part.jsonl", "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n")
    assert detect_format(path) == "messages"
    first, second = import_corpus(path)
    assert (first.id, first.source, first.meta["source_file"]) == ("3", "smile", "data/3.json")
    assert [t.role for t in first.turns] == ["child", "assistant"]
    assert second.id == "case_9" and second.turns[1].text == "你好呀"


def test_chatml_jsonl_keeps_system_prompt_in_meta(tmp_path):
    record = {"messages": [{"role": "system", "content": "你是一个陪伴者。"}, {"role": "user", "content": "我好无聊"},
                           {"role": "assistant", "content": "想一起想想玩什么吗？"}]}
    path = write(tmp_path / "c.jsonl", json.dumps(record, ensure_ascii=False) + "\n")
    assert detect_format(path) == "chatml"
    [d] = import_corpus(path)
    assert d.source == "chatml" and d.meta["system"] == "你是一个陪伴者。"
    assert [(t.role, t.text) for t in d.turns] == [("child", "我好无聊"), ("assistant", "想一起想想玩什么吗？")]
    assert d.id  # a stable content id when the record has none
    assert d.id == next(iter(import_corpus(path))).id


def test_xtuner_conversation(tmp_path):
    data = [{"conversation": [{"system": "你是心理专家。", "input": "我很焦虑", "output": "愿意说说吗？"},
                              {"input": "考试快到了", "output": "考试前紧张很常见。"}]}]
    path = write(tmp_path / "emollm.json", json.dumps(data, ensure_ascii=False))
    assert detect_format(path) == "xtuner"
    [d] = import_corpus(path)
    assert d.source == "emollm" and d.meta["system"] == "你是心理专家。"
    assert [t.role for t in d.turns] == ["child", "assistant", "child", "assistant"]


def test_own_dialogue_jsonl_and_forced_format(tmp_path):
    record = {"id": "x1", "source": "synth", "turns": [{"role": "child", "text": "嗨"}]}
    path = write(tmp_path / "d.jsonl", json.dumps(record, ensure_ascii=False) + "\n")
    assert detect_format(path) == "dialogue"
    [d] = import_corpus(path, "dialogue")
    assert (d.id, d.source) == ("x1", "synth")
    with pytest.raises(DialogueFormatError, match="missing 'messages'"):
        list(import_corpus(path, "chatml"))


def test_malformed_jsonl_names_file_and_line(tmp_path):
    good = json.dumps({"id": 1, "messages": [{"role": "client", "content": "a"}]})
    path = write(tmp_path / "bad.jsonl", f"{good}\n\n{{not json\n{good}\n")
    with pytest.raises(DialogueFormatError, match=r"bad\.jsonl:3: invalid JSON") as info:
        list(import_corpus(path))
    assert info.value.line == 3


def test_bad_record_in_json_array_names_record_and_id(tmp_path):
    data = [QIAOBAN_SAMPLE[0], {"dialog_id": 42, "dialog": [{"text": "hi", "speaker": "老师"}]}]
    path = write(tmp_path / "chat.json", json.dumps(data, ensure_ascii=False))
    with pytest.raises(DialogueFormatError, match=r"record 2 \(dialog_id 42\): dialog\[0\]: unknown speaker '老师'"):
        list(import_corpus(path))


def test_skip_bad_counts_skipped_records(tmp_path):
    lines = [
        json.dumps({"id": 1, "messages": [{"role": "client", "content": "好"}]}),
        json.dumps({"id": 2, "messages": [{"role": "judge", "content": "?"}]}),
        json.dumps({"id": 3, "messages": "not a list"}),
        json.dumps({"id": 4, "messages": [{"role": "counselor", "content": "嗯"}]}),
    ]
    path = write(tmp_path / "m.jsonl", "\n".join(lines) + "\n")
    errors: list[CorpusRecordError] = []
    kept = list(import_corpus(path, "messages", skip_bad=True, errors=errors))
    assert [d.id for d in kept] == ["1", "4"]
    assert [e.line for e in errors] == [2, 3]
    assert "unknown role 'judge'" in str(errors[0])


def test_unreadable_inputs_give_clear_errors(tmp_path):
    with pytest.raises(DialogueFormatError, match="empty file"):
        detect_format(write(tmp_path / "empty.jsonl", "\n"))
    with pytest.raises(DialogueFormatError, match="unknown record layout"):
        detect_format(write(tmp_path / "odd.jsonl", '{"question": "x"}\n'))
    with pytest.raises(FileNotFoundError):
        list(import_corpus(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="unknown format"):
        list(import_corpus(write(tmp_path / "ok.jsonl", '{"turns": []}\n'), "csv"))


SHARED = [
    # path, format, source, records
    ("qiaoban/child_chat_dev.json", "qiaoban", "qiaoban", 70),
    ("smilechat/smilechat_00.jsonl", "messages", "smile", 14164),
    ("cpsycoun/CPsyCounD.jsonl", "messages", "cpsycoun", 3084),
    ("emollm/data.json", "xtuner", "emollm", 1596),
]


@pytest.mark.parametrize(("rel", "fmt", "source", "count"), SHARED, ids=[s[2] for s in SHARED])
def test_shared_corpora_import_completely(shared_data, rel, fmt, source, count):
    path = shared_data / rel
    if not path.is_file():
        pytest.skip(f"{path} not present")
    started = time.perf_counter()
    dialogues = list(import_corpus(path))
    elapsed = time.perf_counter() - started
    assert detect_format(path) == fmt
    assert len(dialogues) == count
    assert {d.source for d in dialogues} == {source}
    assert all(d.turns and all(t.role in ("child", "assistant") for t in d.turns) for d in dialogues)
    print(f"{rel}: {len(dialogues)} dialogues in {elapsed:.2f}s")


def test_qiaoban_sample_keeps_ids_labels_and_defects(shared_data):
    path = shared_data / "qiaoban/child_chat_dev.json"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    raw = json.loads(path.read_text(encoding="utf-8"))
    dialogues = list(import_corpus(path))
    assert [d.id for d in dialogues] == [str(r["dialog_id"]) for r in raw]
    # one record has "topic": NaN (a pandas export): it is imported as a missing topic, not the string "nan"
    expected = [(r["emotion"], r["topic"] if isinstance(r["topic"], str) else "") for r in raw]
    assert [(d.emotion, d.topic) for d in dialogues] == expected
    assert [d.id for d in dialogues if not d.topic] == ["100"]
    assert sum(len(d.turns) for d in dialogues) == sum(len(r["dialog"]) for r in raw)
    # consecutive same-speaker turns are kept as they are, not merged
    assert any(a.role == b.role for d in dialogues for a, b in zip(d.turns, d.turns[1:], strict=False))


def test_non_utf8_file_is_a_clear_error(tmp_path):
    path = tmp_path / "gbk.jsonl"
    path.write_bytes(b'{"turns": []}\n' + '{"id": "我很难过"}\n'.encode("gbk"))
    with pytest.raises(DialogueFormatError, match="not UTF-8 text"):
        list(import_corpus(path, "dialogue"))
