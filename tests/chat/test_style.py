import pytest

from qiaoban.chat.style import ClauseStream, restates, split_sentences, spoken, unmatched_closers_removed


def stream_all(text: str, step: int = 2, truncated: bool = False) -> tuple[str, list[str]]:
    stream = ClauseStream()
    released = [stream.feed(text[i : i + step]) for i in range(0, len(text), step)]
    released.append(stream.finish(truncated=truncated))
    return "".join(released), [r for r in released if r]


def test_markdown_lists_become_speech():
    raw = "别难过。你可以试试：\n1. **深呼吸**\n2. 找好朋友聊聊\n- 画一幅画\n### 最后\n你愿意试试吗？"
    assert spoken(raw) == "别难过。你可以试试：深呼吸，找好朋友聊聊，画一幅画，最后，你愿意试试吗？"


def test_streaming_equals_whole_text_filter_for_any_chunking():
    raw = "听起来你很委屈。\n\n1. 先告诉老师\n2. 再和妈妈说说，好吗？"
    for step in (1, 2, 3, 7, 100):
        assert stream_all(raw, step)[0] == spoken(raw)


def test_text_released_only_at_clause_boundaries():
    _, pieces = stream_all("我知道你很难过，这很正常。我们一起想想办法", step=1)
    assert pieces[0] == "我知道你很难过，"
    assert all(p[-1] in "，。" for p in pieces[:-1])


def test_truncated_reply_drops_unfinished_clause():
    text, _ = stream_all("你很勇敢。我们可以一起", step=3, truncated=True)
    assert text == "你很勇敢。"


def test_plain_english_keeps_spaces():
    assert spoken("I hear you. That sounds hard, doesn't it?") == "I hear you. That sounds hard, doesn't it?"


def test_sentences_keep_their_closing_quotation_mark():
    assert split_sentences("你可以说：“我很勇敢。”然后深呼吸。好吗") == (["你可以说：“我很勇敢。”", "然后深呼吸。"], "好吗")


@pytest.mark.parametrize(("sentence", "message", "expected"), [
    ("“爸爸，我爸爸昨天又用皮带打我了。", "我爸爸昨天又用皮带打我了", True),  # the 1.5B, seed-free `make chat`
    ("我爸爸昨天又用皮带打你了？", "我爸爸昨天 又用皮带打我了", True),  # a mixed voice is still the child's words
    ("我被同学锁在厕所里，", "我被同学锁在厕所里一下午", True),
    ("听起来你爸爸昨天又用皮带打你了。", "我爸爸昨天又用皮带打我了", False),  # reflected back in the second person
    ("你说“我爸爸昨天又用皮带打我了”，", "我爸爸昨天又用皮带打我了", False),  # quoted with attribution
    ("数学考试没考好，确实会难过。", "我今天数学考试没考好", False),  # the topic, not the child's voice
    ("我在这里陪着你。", "我好难过，你在吗", False),
])
def test_restating_the_childs_own_words(sentence, message, expected):
    assert restates(sentence, message) is expected


def test_closing_quotation_marks_without_an_opener_are_dropped():
    assert unmatched_closers_removed("听起来你很委屈。”", 0) == ("听起来你很委屈。", 0)
    assert unmatched_closers_removed("我很勇敢。”然后“深呼吸", 1) == ("我很勇敢。”然后“深呼吸", 1)
