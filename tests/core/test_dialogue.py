import json

import pytest

from qiaoban.dialogue import (
    Dialogue,
    DialogueFormatError,
    Turn,
    content_id,
    read_jsonl,
    structure_problems,
    validate,
    write_jsonl,
)


def make(*texts: str, first: str = "child") -> Dialogue:
    roles = ["child", "assistant"] if first == "child" else ["assistant", "child"]
    return Dialogue(id="d1", turns=[Turn(roles[i % 2], t) for i, t in enumerate(texts)], topic="考试", emotion="sad")


def test_jsonl_round_trip_keeps_chinese_unescaped(tmp_path):
    path = tmp_path / "d.jsonl"
    dialogues = [make("我考砸了", "听起来你很失望。"), make("你好", "你好呀！", "我想哭")]
    dialogues[1].id = "d2"
    dialogues[1].meta = {"persona": {"age": 9}}
    assert write_jsonl(path, dialogues) == 2
    assert "我考砸了" in path.read_text(encoding="utf-8")
    back = read_jsonl(path)
    assert [d.to_dict() for d in back] == [d.to_dict() for d in dialogues]


def test_malformed_line_reports_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = make("a", "b").to_json()
    path.write_text(good + "\n\n" + good + "\n{not json\n", encoding="utf-8")
    with pytest.raises(DialogueFormatError, match=r"bad.jsonl:4: invalid JSON"):
        read_jsonl(path)


@pytest.mark.parametrize(
    "record, message",
    [
        ([], "expected a JSON object"),
        ({"id": "x"}, "missing 'turns'"),
        ({"turns": [{"role": "mother", "text": "hi"}]}, "role must be one of"),
        ({"turns": [{"role": "child"}]}, "expected"),
        ({"turns": [{"role": "child", "text": 3}]}, "text must be a string"),
        ({"turns": [], "meta": []}, "'meta' must be an object"),
    ],
)
def test_from_dict_rejects_bad_records(record, message):
    with pytest.raises(DialogueFormatError, match=message):
        Dialogue.from_dict(record)


def test_bad_record_in_file_names_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(make("a", "b").to_json() + "\n" + json.dumps({"turns": [{"role": "x", "text": "y"}]}) + "\n")
    with pytest.raises(DialogueFormatError, match=r"d.jsonl:2: turn 0: role"):
        read_jsonl(path)


def test_structure_problems():
    assert structure_problems([]) == ["empty_dialogue"]
    assert make("我难过", "怎么了？").structure_problems() == []
    assert "assistant_speaks_first" in make("你好", "嗯", first="assistant").structure_problems()
    d = make("a", "b")
    d.turns.append(Turn("assistant", "c"))
    assert d.structure_problems() == ["non_alternating"]
    assert make("a", "  ").structure_problems() == ["empty_turn"]
    with pytest.raises(DialogueFormatError, match="non_alternating"):
        validate(d)


def test_missing_id_gets_stable_content_id():
    record = {"turns": [{"role": "child", "text": "我好开心"}]}
    first, second = Dialogue.from_dict(record), Dialogue.from_dict(dict(record))
    assert first.id == second.id == content_id(first.turns)
    assert first.id != Dialogue.from_dict({"turns": [{"role": "child", "text": "我好难过"}]}).id


def test_chat_messages_map_roles():
    messages = make("我想妈妈了", "你很想她。").to_chat_messages("系统")
    assert [m["role"] for m in messages] == ["system", "user", "assistant"]
    assert messages[1]["content"] == "我想妈妈了"


def test_one_speakers_turns_in_a_row_are_one_turn_and_an_unanswered_one_joins_the_new_message():
    from qiaoban.dialogue import merged_turns, with_pending

    turns = merged_turns([Turn("child", "在吗"), Turn("child", "我好难过"), Turn("assistant", "我在。"),
                          Turn("child", "考砸了")])
    assert turns == [Turn("child", "在吗\n我好难过"), Turn("assistant", "我在。"), Turn("child", "考砸了")]
    assert with_pending(turns, "你还在吗") == (turns[:2], "考砸了\n你还在吗")
    assert with_pending(turns[:2], "嗯") == (turns[:2], "嗯")
