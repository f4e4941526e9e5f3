"""The pattern layer, hyperbole/negation/fiction handling, context, and the fused verdict."""

from __future__ import annotations

import pytest

from qiaoban.safety import Verdict, categories, check
from qiaoban.safety.lexicon import scan
from qiaoban.safety.text import normalize


@pytest.mark.parametrize(("raw", "expected"), [
    ("zi sha", "自杀"),
    ("不想活le", "不想活了"),
    ("我想 sǐ 了", "我想死了"),
    ("ＺＩＳＨＡ！！", "自杀！！"),
    ("我想紫砂", "我想自杀"),
    ("i want to die", "我想死"),
    ("我在打boss", "我在打boss"),  # latin that is not pinyin stays as it is
])
def test_normalize_spells_pinyin_slang_and_width(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize(("text", "category", "severity"), [
    ("我不想活了", "self_harm", "urgent"),
    ("wo bu xiang huo le", "self_harm", "urgent"),
    ("我想割碗", "self_harm", "urgent"),
    ("我现在站在天台边上", "self_harm", "emergency"),
    ("我爸用皮带抽我", "physical_abuse", "urgent"),
    ("他正在打我 我躲在柜子里", "physical_abuse", "emergency"),
    ("网友让我发不穿衣服的照片", "sexual_abuse", "urgent"),
    ("好几天没吃饭了 家里没有大人", "neglect", "urgent"),
    ("他们天天向我要钱 不给就打我", "bullying", "urgent"),
    ("我要拿刀去捅那个人", "violence", "urgent"),
    ("我想离家出走", "running_away", "concern"),
    ("同学在玩憋气挑战", "dangerous_challenge", "urgent"),
    ("我偷偷抽电子烟", "substances", "concern"),
    ("吃完饭我就去抠喉咙", "eating", "concern"),
])
def test_lexicon_finds_each_category(text, category, severity):
    verdict = check(text)
    assert (verdict.risk, verdict.category, verdict.severity) == (True, category, severity), verdict.matched


def test_every_category_has_a_case_above():
    covered = {"self_harm", "physical_abuse", "sexual_abuse", "neglect", "bullying", "violence", "running_away",
               "dangerous_challenge", "substances", "eating"}
    assert set(categories()) == covered


@pytest.mark.parametrize("text", [
    "笑死我了哈哈哈",
    "这题要了我的命",
    "作业多到要死",
    "热死了",
    "想死你啦奶奶",
    "打死我也不吃香菜",
    "我在吃鸡里杀了十个人",
    "王者荣耀我拿了五杀，把对面都打死了",
    "历史课讲了秦始皇杀了很多人",
    "小说里的主角最后自杀了，我好难过",
    "我不会自杀的，放心",
    "我从来没想过伤害自己",
    "什么是校园霸凌？班会要讲",
    "考试没考好，有点难过",
    "我拍死了一只蚊子",
    "热到我不想活了 冰棍续命",
    "暑假我天天打篮球",
    "手工课用美工刀刻橡皮章",
    "为什么小孩不能玩火 我想知道原理",
])
def test_hyperbole_games_stories_negation_and_sadness_are_not_crises(text):
    verdict = check(text)
    assert not verdict.risk, verdict.matched


def test_the_risky_twins_of_those_still_match():
    for text in ("我不想活了 作业太多", "我天天被打", "我用美工刀划自己", "我想玩火 把作业本烧了"):
        assert scan(text), text


def test_negation_only_cancels_a_cue_right_before_the_match():
    assert not check("我没有想死").risk
    assert check("我没钱了，想死").risk  # 没 belongs to another clause


@pytest.mark.parametrize("text, category", [
    ("我有时候真的不想活了 哈哈哈开玩笑的", "self_harm"),
    ("我爸昨天用皮带抽我 开玩笑的啦", "physical_abuse"),
    ("那个叔叔让我脱衣服拍照 不过都过去了", "sexual_abuse"),
    ("我爸妈出差一个礼拜了 家里没吃的 不过没事没事 好多了", "neglect"),
])
def test_a_frame_never_clears_harm(text, category):
    verdict = check(text)
    assert verdict.risk and verdict.category == category and verdict.played_down
    assert verdict.followup.startswith("谢谢你愿意告诉我")  # thanks the child, never argues


def test_played_down_follow_ups_say_it_is_not_deserved_and_still_name_help():
    verdict = check("我爸打我 不过是我自己不听话")
    assert verdict.risk and verdict.played_down
    assert "不是你应该承受的" in verdict.followup and "12355" in verdict.followup
    assert "爸" not in verdict.followup.split("承受的", 1)[1]  # and not back to the one hurting her
    assert not check("我爸打我").played_down


def test_the_adult_the_child_would_tell_is_not_the_one_implicated():
    verdict = check("他说这是我们俩的秘密 不能告诉妈妈")
    assert verdict.risk and verdict.abuser is None and "爸爸妈妈" in verdict.followup


def test_real_cue_overrides_the_game_frame():
    assert not scan("游戏里我跳楼了")
    assert scan("不是游戏，我真的想跳楼")


def test_a_safe_frame_lowers_a_pattern_hit_by_one_step():
    handled = check("之前有人抢我的零花钱 我告诉了班主任 已经处理好了")
    assert handled.risk and handled.severity == "concern" and handled.played_down
    assert not check("游泳课比谁憋气久 救生员一直看着").risk  # a concern frames can clear: the learned layers judge
    # It starts again after the adults stepped in: the classifier still reads it.
    again = check("之前有人抢我的零花钱 老师处理了 可是他们今天又把我堵在厕所里打")
    assert again.risk and again.category == "bullying"
    # Secrecy voids the frame, and an emergency is never handed over.
    assert check("我爸又用皮带抽我 现在好多了 别告诉别人").risk
    assert check("我把攒的安眠药全吃了 现在好多了").severity == "emergency"


@pytest.mark.parametrize("text", [
    "班会课上我们画了反欺凌手抄报",  # a lesson
    "警察叔叔说了千万不要一个人去河边玩",
    "元旦排小品 我演一个被欺负的小孩",  # a stage play
    "跳水课第一次从跳台跳下去 腿都软了",  # a sport
    "八百米跑完我要死了 腿不是自己的",  # exertion
    "物理老师天天骂我们班 说我们上课太吵",  # the whole class, not the child
    "班主任说放学路上不能在铁轨边玩 会出事",
])
def test_lessons_plays_sports_and_warnings_are_not_crises(text):
    verdict = check(text)
    assert not verdict.risk, verdict.matched


def test_the_risky_twins_of_lessons_plays_and_warnings_still_match():
    assert check("我被霸凌了 他们天天堵我").risk
    assert check("刷到有人咬洗衣凝珠的视频 我也想拍一个").risk  # seen online, then the child's own plan
    assert scan("他们都说我是怪物 没人跟我玩")  # an insult, not a monster story
    assert scan("不敢回家 我爸喝醉了会打我")
    assert scan("她天天骂我 还把我的书扔了")
    assert check("我真蠢 真想划自己").risk  # "真蠢" about oneself is no safe frame


@pytest.mark.parametrize("text", [
    "游泳比赛游到第三趟的时候我觉得我要死了 最后还是游完了",  # exertion
    "第一次上台演讲紧张得要死 结果讲得还行",
    "我妈肚子里的宝宝会踢人了 好神奇",
    "我要杀了我弟 他又把我的模型弄坏了",  # a sibling, a broken toy
    "暑假没人管我几点睡 爽",  # freedom, not neglect
    "网友约我见面 我妈陪我一起去的 就在商场里",  # a parent went along
    "以前以为她们故意不跟我说话 原来是误会 现在我们是好朋友",
    "跟我妈吵架说要离家出走 走到楼下就回来了",
    "医生给奶奶开了安眠药 我每天提醒她吃",  # someone else's prescription
    "我同桌以前被欺负 老师知道以后那几个人被处分了",
    "过年我爸让我抿了一口啤酒 太难喝了",
    "看少年的你 看到被欺负那段我哭了",  # a film scene
    "我妈抽电子烟 我天天劝她戒",
])
def test_family_life_films_and_resolved_trouble_leave_the_pattern_layer_silent(text):
    verdict = check(text, threshold=1.01)  # the pattern layer alone: the classifier cannot reach this bar
    assert not verdict.risk, verdict.matched


def test_the_risky_twins_of_family_life_and_resolved_trouble_still_match():
    assert not scan("我爸喝醉了回来倒头就睡 打呼噜震天响")  # the benign side of the next one
    assert check("我爸喝醉了就打我").category == "physical_abuse"
    assert check("我弟说要杀了我 他天天拿刀比划").severity == "emergency"  # a threat to the child
    assert check("我要杀了我弟 我已经把刀藏好了").severity == "emergency"
    assert check("网友约我见面 让我别告诉我妈").category == "sexual_abuse"  # secrecy voids the frame
    assert check("医生给我妈开了安眠药 我偷偷拿了几片").category == "self_harm"
    assert check("过年叔叔让我尝了一口白酒 后来天天灌我").category == "substances"
    assert check("没人管我 两天没吃饭了").category == "neglect"
    assert check("我们去那段铁轨上躺着拍照").category == "dangerous_challenge"  # a stretch of track, not a film
    assert check("我跑到楼顶了 不想活了").category == "self_harm"
    assert check("我弟弟往我肚子里踢 好疼 他天天这样").risk  # a kick, not a baby


def test_recent_messages_can_explain_a_secret_or_a_fear_of_going_home():
    surprise = ["我和爸爸在给妈妈做蛋糕", "明天是妈妈生日"]
    scolding = ["月考考砸了", "我妈肯定要唠叨我一晚上"]
    assert not check("他说这是我们的秘密 不能告诉妈妈", surprise, threshold=1.01).risk
    assert not check("不敢回家了", scolding, threshold=1.01).risk
    # Harm named anywhere in the conversation voids the frame; a gift for the child is no surprise for mum.
    assert check("他说这是我们的秘密 不能告诉妈妈", [*surprise, "可是他还摸我"]).category == "sexual_abuse"
    assert check("他说这是我们的秘密 不能告诉妈妈", ["叔叔给我买了生日礼物"]).category == "sexual_abuse"
    assert check("不敢回家了", [*scolding, "上次她用衣架抽我"]).category == "physical_abuse"
    # The frame explains a concern only, and only in its own category.
    assert check("我不想活了", scolding).category == "self_harm"


@pytest.mark.parametrize("text", ["跳楼价!这个皮肤打五折 冲", "罗密欧与朱丽叶为什么最后都要死啊 好虐"])
def test_sales_talk_and_sad_endings_are_not_crises(text):
    assert not check(text, threshold=1.01).risk


def test_context_turns_a_plain_message_into_an_emergency():
    for alone in ("我已经决定了", "再见", "拜拜了"):
        assert not check(alone).risk
    after_despair = check("我已经决定了", ["我最近总觉得活着没意思", "没有人在乎我"])
    assert (after_despair.category, after_despair.severity) == ("self_harm", "emergency")
    assert after_despair.template_reply and "120" in after_despair.template_reply
    after_ordinary_sadness = check("我已经决定了，明天去跟她道歉", ["我和好朋友吵架了"])
    assert not after_ordinary_sadness.risk


def test_context_keeps_the_abuse_category_and_the_abuser():
    verdict = check("是不是因为我不听话他才打我的？", ["我爸爸喝醉了就用皮带抽我"])
    assert (verdict.category, verdict.abuser) == ("physical_abuse", "爸爸")
    assert "爸爸" not in verdict.followup


def test_a_clear_risk_carries_to_the_next_two_messages_as_a_concern():
    disclosure = "我爸爸昨天用皮带抽我"
    later = check("嗯 我先去写作业了", [disclosure])
    assert later.risk and (later.category, later.severity) == ("physical_abuse", "concern")
    assert later.matched == ["context:physical_abuse"] and later.template_reply is None
    assert later.abuser == "爸爸" and "爸爸" not in later.followup
    assert not check("嗯 我先去写作业了", [disclosure], carry=False).risk
    assert not check("嗯 我先去写作业了", [disclosure, "今天吃了面条", "明天去公园玩"]).risk  # two messages on
    assert not check("嗯 我先去写作业了", ["今天考试考砸了", "妈妈说没关系"]).risk


def test_abuse_by_a_parent_points_to_another_trusted_adult():
    verdict = check("我爸爸喝醉了就打我")
    assert verdict.abuser == "爸爸"
    assert "老师" in verdict.followup and "爸爸" not in verdict.followup
    assert "12355" in verdict.followup and "110" in verdict.followup
    assert "老师" in verdict.guidance and "不是他的错" in verdict.guidance


def test_abuse_by_a_teacher_points_to_parents_and_another_teacher():
    verdict = check("班主任用尺子打我的手")
    assert verdict.abuser == "班主任"
    assert "爸爸妈妈" in verdict.followup and "另一位" in verdict.followup


def test_emergency_has_a_template_and_other_risks_a_followup():
    emergency = check("我吃了一整瓶药，现在好晕")
    assert emergency.severity == "emergency" and emergency.template_reply
    urgent = check("我不想活了")
    assert urgent.template_reply is None and "12356" in urgent.followup
    benign = check("今天天气真好")
    assert benign == Verdict(risk=False, score=benign.score) and not benign.followup


def test_classifier_catches_phrasing_the_lexicon_lacks():
    verdict = check("感觉自己活成了一个笑话，大家都嫌弃我，好想彻底不见")
    assert verdict.risk and verdict.category == "self_harm"
    assert any(m.startswith("classifier:") for m in verdict.matched)


def test_json_dict_has_exactly_the_public_fields():
    assert set(check("我想离家出走").to_json_dict()) == {"risk", "category", "severity", "score"}


@pytest.mark.parametrize(("text", "implicated"), [
    ("我身上的青是摔的吗 爸爸说家里的事不能往外说 我要不要跟老师说是摔的", "爸爸"),
    ("妈妈两天没回家了 家里没吃的 我不敢让我妈知道我说了", "妈"),
])
def test_who_demands_silence_or_is_feared_is_implicated(text, implicated):
    verdict = check(text)
    assert verdict.risk and verdict.abuser == implicated, verdict
    assert "爸爸妈妈" not in verdict.followup and "班主任" in verdict.followup


def test_a_mother_kept_out_of_a_neighbours_secret_is_not_implicated():
    verdict = check("邻居叔叔让我坐他腿上 还说不能让我妈知道")
    assert verdict.category == "sexual_abuse" and verdict.abuser is None
    assert "爸爸妈妈" in verdict.followup
