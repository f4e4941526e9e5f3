import pytest

from qiaoban.chat.history import ContextOverflowError, trim_history
from qiaoban.dialogue import Turn, chat_messages


def chars(messages):
    return sum(len(m["content"]) for m in messages)


def turns(*texts):
    return [Turn("child" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]


def test_everything_kept_when_it_fits():
    history = turns("aaaa", "bbbb", "cccc")
    assert trim_history("SYS", history, chars, budget=100) == history


def test_oldest_exchange_dropped_first_and_system_prompt_kept():
    history = turns("a" * 10, "b" * 10, "c" * 10, "d" * 10, "e" * 10)
    kept = trim_history("S" * 5, history, chars, budget=5 + 30)
    assert [t.text[0] for t in kept] == ["c", "d", "e"]
    messages = chat_messages("S" * 5, kept)
    assert messages[0] == {"role": "system", "content": "SSSSS"}


def test_kept_history_starts_with_a_child_turn():
    history = turns("a" * 10, "b" * 10, "c" * 10, "d" * 30, "e" * 10)
    kept = trim_history("", history, chars, budget=45)  # "d"+"e" fits, but "d" is an assistant turn
    assert kept[0].role == "child"
    assert [t.text[0] for t in kept] == ["e"]


def test_newest_message_alone_too_long():
    with pytest.raises(ContextOverflowError, match="shorter"):
        trim_history("S" * 10, turns("x" * 100), chars, budget=50)
