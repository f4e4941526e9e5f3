from qiaoban.chat.style import ClauseStream, spoken


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
