"""The teacher-reply parser on the shapes teachers really produce."""

from __future__ import annotations

import pytest

from qiaoban.synth.parse import classify_tag, parse_dialogue


def roles(result):
    return [t.role for t in result.turns]


def texts(result):
    return [t.text for t in result.turns]


def test_plain_fullwidth_tags():
    r = parse_dialogue("孩子：我今天考试没考好。\n小桥：听起来你有点难过，愿意和我说说吗？\n孩子：嗯。\n小桥：我在听。")
    assert r.ok and roles(r) == ["child", "assistant", "child", "assistant"]
    assert texts(r)[1] == "听起来你有点难过，愿意和我说说吗？"


def test_halfwidth_colon_and_spaces():
    r = parse_dialogue("孩子: 我不想上学了\n\n小桥 :  为什么呢？发生了什么事吗？")
    assert r.ok and texts(r) == ["我不想上学了", "为什么呢？发生了什么事吗？"]


def test_child_name_tag_from_persona():
    reply = "小明：我的小狗死了。\n小桥：哦，小明，这一定让你很伤心。\n小明：它陪了我五年。\n小桥：五年是很长的时间。"
    r = parse_dialogue(reply, child_names=["小明"])
    assert r.ok and roles(r) == ["child", "assistant"] * 2


def test_invented_child_name_is_inferred_from_the_other_speaker():
    reply = "阿豪：我被老师冤枉了！\n小桥：被冤枉真的很委屈。\n阿豪：对啊，我根本没拿。\n小桥：你想让老师知道真相，对吗？"
    r = parse_dialogue(reply)
    assert r.ok and roles(r) == ["child", "assistant"] * 2


def test_angle_bracket_letters():
    r = parse_dialogue("<A>: 我好紧张，明天要比赛。\n<B>: 比赛前紧张是很正常的。\n<A>:万一输了怎么办\n<B>:你最担心的是什么？")
    assert r.ok and roles(r) == ["child", "assistant"] * 2
    assert texts(r)[2] == "万一输了怎么办"


def test_bare_letters_fullwidth():
    r = parse_dialogue("A：妈妈又骂我了。\nB：发生什么事了？\nA：我把碗打碎了。\nB：你当时一定吓了一跳。")
    assert r.ok and roles(r) == ["child", "assistant"] * 2


def test_english_tags():
    r = parse_dialogue("Child: I lost my dog.\nAssistant: I'm so sorry. That must hurt.\nChild: yes\nAssistant: Tell me about him.")
    assert r.ok and roles(r) == ["child", "assistant"] * 2


def test_markdown_bold_tags_both_styles():
    reply = "**孩子**：我不想去上钢琴课。\n**小桥：** 听起来你有点烦了。\n**孩子：**嗯，每天都要练。\n**小桥**: 每天练确实很累。"
    r = parse_dialogue(reply)
    assert r.ok and roles(r) == ["child", "assistant"] * 2
    assert all("*" not in t for t in texts(r))
    assert texts(r)[1] == "听起来你有点烦了。"


def test_numbered_rounds_and_round_headers():
    reply = """第1轮
孩子：我被同学起外号了。
小桥：被起外号一定很不舒服吧。

第2轮：
孩子：他们叫我小胖。
小桥：听到这个外号你是什么感觉？"""
    r = parse_dialogue(reply)
    assert r.ok and roles(r) == ["child", "assistant"] * 2
    assert texts(r)[1] == "被起外号一定很不舒服吧。"


def test_numbered_lines():
    reply = "1. 孩子：我今天好开心！\n2. 小桥：哇，发生了什么好事？\n3、孩子：我考了一百分！\n(4) 小桥：你一定很骄傲吧！"
    r = parse_dialogue(reply)
    assert r.ok and roles(r) == ["child", "assistant"] * 2
    assert texts(r)[3] == "你一定很骄傲吧！"


def test_round_prefix_on_the_same_line():
    r = parse_dialogue("第1轮 孩子：我好累。\n第1轮 小桥：累了就先歇一歇。\n第二轮 孩子：作业还没写完。\n第二轮 小桥：还剩多少？")
    assert r.ok and roles(r) == ["child", "assistant"] * 2


def test_preamble_and_epilogue_are_dropped():
    reply = """好的，下面是一段符合要求的对话：

孩子：我的好朋友不理我了。
小桥：被好朋友冷落，心里一定空落落的。
孩子：我不知道我做错了什么。
小桥：你愿意和我一起想想发生了什么吗？

希望这段对话能帮助你理解情绪辅导的方法。"""
    r = parse_dialogue(reply)
    assert r.ok and roles(r) == ["child", "assistant"] * 2
    assert texts(r)[-1] == "你愿意和我一起想想发生了什么吗？"
    assert any("好的" in d for d in r.dropped) and any("希望" in d for d in r.dropped)


def test_epilogue_without_blank_line():
    reply = "孩子：我怕黑。\n小桥：很多小朋友都怕黑，这很正常。\n以上对话体现了接纳和命名情绪。"
    r = parse_dialogue(reply)
    assert r.ok and texts(r)[-1] == "很多小朋友都怕黑，这很正常。"


def test_multiline_turn_is_joined():
    reply = "孩子：我今天在学校\n被老师批评了。\n小桥：被批评了呀，\n当时你心里是什么感觉？"
    r = parse_dialogue(reply)
    assert r.ok and texts(r) == ["我今天在学校\n被老师批评了。", "被批评了呀，\n当时你心里是什么感觉？"]


def test_tag_alone_on_its_line_then_text():
    r = parse_dialogue("孩子：\n我不想说话。\n小桥：\n好的，我就在这里陪着你。")
    assert r.ok and texts(r) == ["我不想说话。", "好的，我就在这里陪着你。"]


def test_code_fence_and_bracket_tags():
    reply = "```\n【孩子】我被锁在门外了。\n【小桥】你现在安全吗？身边有大人吗？\n```"
    r = parse_dialogue(reply)
    assert r.ok and roles(r) == ["child", "assistant"]


def test_tag_with_age_annotation_and_quoted_text():
    r = parse_dialogue("孩子（8岁）：“我不想吃青菜！”\n小桥：“青菜的味道你不喜欢，是吗？”")
    assert r.ok and texts(r) == ["我不想吃青菜！", "青菜的味道你不喜欢，是吗？"]


def test_two_speakers_on_one_line_are_split():
    r = parse_dialogue("孩子：我好难过。 小桥：发生了什么事？\n孩子：我的猫丢了。小桥：猫丢了，你一定很着急。")
    assert r.ok and roles(r) == ["child", "assistant"] * 2


def test_colon_inside_a_turn_is_not_a_speaker():
    reply = "孩子：老师说了一句话：你再这样就别来了。\n小桥：听到这样的话，你一定很受伤。"
    r = parse_dialogue(reply)
    assert r.ok and texts(r)[0] == "老师说了一句话：你再这样就别来了。"


def test_content_line_with_colon_inside_a_turn_stays_in_the_turn():
    reply = "孩子：我想了几个办法\n比如：先跟他道歉\n小桥：这个办法听起来很勇敢。"
    r = parse_dialogue(reply)
    assert r.ok and texts(r)[0] == "我想了几个办法\n比如：先跟他道歉"


def test_json_list():
    reply = '```json\n[{"role": "child", "content": "我不想去学校"}, {"role": "assistant", "content": "怎么了？"}]\n```'
    r = parse_dialogue(reply)
    assert r.ok and roles(r) == ["child", "assistant"] and texts(r)[1] == "怎么了？"


def test_non_alternation_is_kept_for_the_gates():
    r = parse_dialogue("孩子：我好烦。\n孩子：真的好烦。\n小桥：烦的时候可以和我说说。")
    assert r.ok and roles(r) == ["child", "child", "assistant"]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty_reply"),
        ("   \n\n ", "empty_reply"),
        ("对不起，我不能完成这个请求。", "unparseable"),
        ("I'm sorry, but I can't help with that.", "unparseable"),
        ("妈妈：宝贝怎么了？\n孩子：我考砸了。\n妈妈：没关系。", "parent_roleplay"),
        ("孩子：你好\n小桥：你好呀\n老师：上课了\n老师：坐好\n爸爸：回家吃饭", "parent_roleplay"),
        ("孩子：你好\n小桥：你好呀\n老师：上课了\n老师：大家坐好", "too_many_speakers"),
        ("甲方：你好\n乙方：你好\n甲方：再见\n乙方：再见", "unknown_speakers"),
    ],
)
def test_rejections_are_named(reply, reason):
    r = parse_dialogue(reply)
    assert not r.ok and r.reason == reason and r.turns == []


def test_classify_tag():
    assert classify_tag("Child") == "child"
    assert classify_tag("<A>".strip("<>")) == "child"
    assert classify_tag("机器人小桥") == "assistant"
    assert classify_tag("AI伙伴") == "assistant"
    assert classify_tag("妈妈") == "parent"
    assert classify_tag("乐乐", child_names=["乐乐"]) == "child"
    assert classify_tag("比如") is None


def test_the_prompts_own_tags_are_recognised():
    reply = "Sam: I lost my cat.\nBuddy: That sounds really sad.\nSam: yes\nBuddy: Tell me about her."
    assert parse_dialogue(reply).reason == "unknown_speakers"
    r = parse_dialogue(reply, child_names=["Sam"], companion_names=["Buddy"])
    assert r.ok and [t.role for t in r.turns] == ["child", "assistant"] * 2


def test_doubled_speaker_tags_make_one_turn():
    # seen from the 1.5B teacher: the persona name on its own line, then a bracketed tag with a colon inside
    reply = "小明：\n【孩子：】我被摄像头监视了。\n小桥：\n【小桥：】你是不是觉得不被信任？\n小明：\n【孩子：】对。\n小桥：\n【小桥：】这种感觉很难受。"
    r = parse_dialogue(reply, child_names=["小明"])
    assert r.ok and roles(r) == ["child", "assistant"] * 2
    assert texts(r) == ["我被摄像头监视了。", "你是不是觉得不被信任？", "对。", "这种感觉很难受。"]


def test_empty_turns_are_kept_for_the_gates():
    r = parse_dialogue("孩子：\n小桥：\n孩子：\n小桥：")  # a degenerate reply seen from the 1.5B teacher
    assert r.ok and [t.text for t in r.turns] == ["", "", "", ""]
