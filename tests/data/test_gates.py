"""Each quality gate: a dialogue that trips it, and a close one that does not."""

from __future__ import annotations

import pytest

from qiaoban.data import REASONS, GateConfig, check_dialogue, chinese_ratio, explain_dialogue
from qiaoban.dialogue import Dialogue, Turn

CHILD = ["今天我在学校被同学笑话了。", "他们说我的画很丑。", "我想让他们别再笑我了。"]
HELPER = ["听起来你很难过，愿意和我说说发生了什么吗？", "被笑话的时候心里一定很委屈。", "我们一起想想可以怎么跟他们说，好吗？"]

# No safety screen here: these tests are about our own gates; test_safety_gate covers the screen.
NO_SAFETY = GateConfig(safety_screen=False)


def dialogue(*texts: str, first: str = "child") -> Dialogue:
    other = {"child": "assistant", "assistant": "child"}
    turns, role = [], first
    for text in texts:
        turns.append(Turn(role, text))
        role = other[role]
    return Dialogue(id="t", turns=turns)


def clean() -> list[str]:
    return [x for pair in zip(CHILD, HELPER, strict=True) for x in pair]


def with_turn(index: int, text: str) -> Dialogue:
    texts = clean()
    texts[index] = text
    return dialogue(*texts)


def test_clean_dialogue_passes_every_gate():
    assert check_dialogue(dialogue(*clean())) == []  # the safety screen included


@pytest.mark.parametrize(("turns", "reason"), [
    ([], "empty_dialogue"),
    ([Turn("assistant", HELPER[0]), Turn("child", CHILD[0])] * 2, "assistant_speaks_first"),
    ([Turn("child", CHILD[0]), Turn("child", CHILD[1]), Turn("assistant", HELPER[0]), Turn("child", CHILD[2]),
      Turn("assistant", HELPER[1])], "non_alternating"),
    ([Turn("child", CHILD[0]), Turn("assistant", "  "), Turn("child", CHILD[1]), Turn("assistant", HELPER[1])],
     "empty_turn"),
])
def test_structure_gates(turns, reason):
    assert reason in check_dialogue(Dialogue(id="s", turns=turns), NO_SAFETY)


def test_turn_count_bounds():
    config = GateConfig(min_turns=4, max_turns=6, safety_screen=False)
    assert "too_few_turns" in check_dialogue(dialogue(CHILD[0], HELPER[0]), config)
    assert "too_many_turns" in check_dialogue(dialogue(*(clean() + clean()[:2])), config)
    assert check_dialogue(dialogue(*clean()), config) == []


def test_turn_length_bounds():
    assert "turn_too_short" in check_dialogue(with_turn(2, "嗯"), NO_SAFETY)
    assert "turn_too_short" not in check_dialogue(with_turn(2, "嗯嗯"), NO_SAFETY)
    assert "turn_too_long" in check_dialogue(with_turn(1, "我明白。" * 51), NO_SAFETY)
    assert "turn_too_long" not in check_dialogue(with_turn(1, "我明白。" * 50), NO_SAFETY)


def test_chinese_ratio_counts_latin_words_not_letters():
    assert chinese_ratio("我喜欢玩Minecraft") > 0.75
    assert chinese_ratio("I feel sad today") == 0.0
    assert "not_chinese" in check_dialogue(with_turn(1, "That sounds really hard, tell me more."), NO_SAFETY)
    assert "not_chinese" not in check_dialogue(with_turn(2, "我们在玩Minecraft的时候吵架了。"), NO_SAFETY)
    assert "not_chinese" not in check_dialogue(with_turn(1, "That sounds hard."),
                                               GateConfig(require_chinese=False, safety_screen=False))


@pytest.mark.parametrize("text", ["（微笑）没关系，慢慢说。", "*叹气* 我好累。", "【旁白】孩子低下了头。",
                                  "好的，我试试看。（拿起了画笔，开始画画）", "(轻声地)我在听。", "旁白：他们走进教室。"])
def test_narration_found(text):
    assert "narration" in check_dialogue(with_turn(1, text), NO_SAFETY)


@pytest.mark.parametrize("text", ["你可以试试深呼吸（比如数到十），再说出来。", "我住在奶奶家（异地）。",
                                  "你觉得这样**很重要**吗？", "我们可以一起想办法（一、二、三都行）。"])
def test_narration_not_found_in_asides(text):
    assert "narration" not in check_dialogue(with_turn(1, text), GateConfig(safety_screen=False,
                                                                             disabled={"markdown"}))


@pytest.mark.parametrize("text", ["孩子：我也不知道。", "好的。\n助手：那我们一起想想。", "<B>: 我明白了", "[助手] 你好",
                                  "A: 我很难过", "第3轮 孩子说他很难过", "Assistant: I see.", "**孩子**：嗯嗯",
                                  "好的。\n孩子（8岁）：我知道了", "AI助手：别担心", "我懂了\n小明：谢谢你"])
def test_leaked_role_tag_found(text):
    assert "leaked_role_tag" in check_dialogue(with_turn(1, text), NO_SAFETY)


@pytest.mark.parametrize("text", ["你可以跟老师说：我需要帮助。", "妈妈说：早点睡觉。", "A班的同学很友好。",
                                  "我的好朋友小明：他总是帮我。", "小时候的我也这样。"])
def test_role_tag_not_found_in_ordinary_speech(text):
    assert "leaked_role_tag" not in check_dialogue(with_turn(1, text), NO_SAFETY)


@pytest.mark.parametrize("text", ["作为一个AI，我没有真实的感受。", "我只是一个人工智能，但我愿意听你说。",
                                  "As an AI language model, I cannot feel.", "我没有真正的感情，不过我理解你。"])
def test_ai_disclosure_found(text):
    assert "ai_disclosure" in check_dialogue(with_turn(1, text), GateConfig(require_chinese=False,
                                                                            safety_screen=False))


def test_ai_disclosure_not_found():
    for text in ["对不起，我没有意识到你这么难过。", "人工智能课很有意思吗？"]:
        assert "ai_disclosure" not in check_dialogue(with_turn(1, text), NO_SAFETY)
    # a child asking is fine: only the companion's turns are checked
    assert "ai_disclosure" not in check_dialogue(with_turn(2, "你是人工智能吗？我是一个AI吗？"), NO_SAFETY)


@pytest.mark.parametrize("text", ["妈妈理解你的感受，我们慢慢说。", "不用谢，我是你的妈妈。", "宝贝，妈妈也很开心。",
                                  "我会和你爸爸商量一下。"])
def test_parent_roleplay_found(text):
    assert "parent_roleplay" in check_dialogue(with_turn(1, text), NO_SAFETY)


@pytest.mark.parametrize("text", ["你可以告诉妈妈你的想法，妈妈会理解的。", "你觉得爸爸为什么会这样说呢？",
                                  "你可以跟妈妈说：“妈妈我爱你，妈妈理解你吗？”", "你的妈妈很爱你。"])
def test_talking_about_parents_is_not_roleplay(text):
    assert "parent_roleplay" not in check_dialogue(with_turn(1, text), NO_SAFETY)


def test_child_calls_parent():
    assert "child_calls_parent" in check_dialogue(with_turn(0, "妈妈，我今天被同学笑话了。"), NO_SAFETY)
    assert "child_calls_parent" in check_dialogue(with_turn(4, "好的，谢谢妈妈！"), NO_SAFETY)
    assert "child_calls_parent" not in check_dialogue(with_turn(0, "我妈妈说我的画很好看。"), NO_SAFETY)


def test_markdown_and_repeated_turns():
    listing = "你可以这样做：\n1. 深呼吸\n2. 告诉老师"
    assert "markdown" in check_dialogue(with_turn(1, listing), NO_SAFETY)
    assert "markdown" in check_dialogue(with_turn(1, "## 建议\n先休息一下。"), NO_SAFETY)
    assert "markdown" not in check_dialogue(with_turn(1, "第一步是深呼吸，然后再说。"), NO_SAFETY)
    assert "repeated_turn" in check_dialogue(with_turn(3, HELPER[0]), NO_SAFETY)


def test_ends_with_child_is_optional():
    texts = clean()[:-1]
    assert "ends_with_child" in check_dialogue(dialogue(*texts), NO_SAFETY)
    relaxed = GateConfig(require_ends_with_assistant=False, safety_screen=False)
    assert "ends_with_child" not in check_dialogue(dialogue(*texts), relaxed)


def test_safety_gate_screens_companion_turns_only():
    blaming = "老师打你肯定是因为你做错了什么，你要先反省自己。"
    assert "unsafe_assistant" in check_dialogue(with_turn(3, blaming))
    assert "unsafe_assistant" not in check_dialogue(with_turn(3, blaming), NO_SAFETY)
    # the same words from the child are the child's own worry, not a harmful reply
    assert "unsafe_assistant" not in check_dialogue(with_turn(2, blaming))


def test_safety_gate_passes_reassurance():
    # the best reply to a hurt child must pass the gate (negation is the safety screen's job)
    assert "unsafe_assistant" not in check_dialogue(with_turn(3, "这不是你的错，你一点也没有做错什么。"))


def test_findings_name_turn_and_evidence():
    [finding] = explain_dialogue(with_turn(3, "（摸摸你的头）别难过。"), NO_SAFETY)
    assert (finding.reason, finding.turn) == ("narration", 3)
    assert "摸摸你的头" in finding.detail


def test_disabled_gates_and_config_validation():
    assert check_dialogue(with_turn(3, "（摸摸你的头）别难过。"),
                          GateConfig(disabled={"narration"}, safety_screen=False)) == []
    with pytest.raises(ValueError, match="unknown gate names"):
        GateConfig(disabled={"no_such_gate"})
    with pytest.raises(ValueError, match="min_turns"):
        GateConfig(min_turns=10, max_turns=4)
    assert GateConfig.from_dict({"max_turns": 20}).max_turns == 20
    with pytest.raises(ValueError, match="unknown GateConfig keys"):
        GateConfig.from_dict({"max_turn": 20})


def test_every_reason_is_snake_case_and_reported_in_order():
    assert all(name.replace("_", "").isalpha() and name.islower() for name in REASONS)
    d = Dialogue(id="x", turns=[Turn("assistant", "作为AI，我认为（微笑）")])
    reasons = check_dialogue(d, NO_SAFETY)
    assert reasons == sorted(reasons, key=list(REASONS).index)


def test_parroting_catches_echo_loops_but_not_reflection():
    looped = dialogue("我有点害怕。", "你有点害怕。你有点害怕？你有点害怕？", "嗯。", "我在这里陪着你，慢慢说。")
    assert check_dialogue(looped) == ["parroting"]
    echo = dialogue("依依，你房间乱了。", "哦？依依，你房间乱了？", "是的，全乱了。", "乱糟糟的房间让人心烦，对吗？")
    assert check_dialogue(echo) == ["parroting"]
    # Naming the child's feeling in new words is the coaching move, not parroting.
    reflection = dialogue("同学说我是胆小鬼，我好生气。", "被叫胆小鬼，你觉得很委屈又生气，对吗？",
                          "对，他们还笑我。", "被大家笑的时候，心里一定很难受。你想怎么办呢？")
    assert check_dialogue(reflection) == []


def test_a_child_calling_someone_by_their_own_name_is_speaker_confusion():
    confused = dialogue("航航，我答应妹妹的事没做到。", "没做到答应的事，你心里有点过意不去吧？", "嗯。", "我们一起想想怎么和她说。")
    confused.meta["persona"] = {"name": "航航"}
    assert check_dialogue(confused) == ["speaker_confusion"]
    confused.meta["persona"] = {"name": "依依"}
    assert check_dialogue(confused) == []


def test_slips_seen_in_the_1_5b_synth_corpus_are_caught():
    def reasons(reply: str) -> list[str]:
        return check_dialogue(dialogue("我在学校吐了，同学都躲着我。", reply, "嗯。", "我在这里陪着你。"))

    assert reasons("这 sounds很不舒服，你一定很难为情吧？") == ["english_slip"]
    assert reasons("被大家躲着，一定很难受。我们玩会儿Minecraft放松一下？") == []  # a loanword children use
    assert reasons("（耐心、温和）被大家躲着，一定很难受。") == ["narration"]
    assert reasons("（有些生气，声音不高）你是不是很难受？") == ["narration"]
    assert reasons("可以试试放松的方法（如呼吸、数数），好吗？") == []  # a gloss, not a stage direction
    assert reasons("【小桥】被大家躲着，一定很难受。") == []  # the companion's name is not a generic role label
    assert check_dialogue(dialogue("【孩子】我在学校吐了。", "被大家躲着，一定很难受。", "嗯。", "我陪着你。")) == [
        "leaked_role_tag"]
