"""The chat engine with a scripted backend: persona, history, safety hooks, failure handling."""

import pytest

from qiaoban.backends.base import BackendError
from qiaoban.chat import ChatEngine, Persona
from qiaoban.models import UNTUNED, ChatProfile
from tests.chat.fakes import FakeGuard, FakeVerdict, ScriptedBackend


def test_persona_system_prompt_names_companion_and_age_band():
    prompt = Persona(name="小星", age_band="6-8").system_prompt()
    assert "小星" in prompt and "六到八岁" in prompt
    with pytest.raises(ValueError, match="age band"):
        Persona(age_band="3-5")


def test_reply_is_streamed_cleaned_and_remembered():
    backend = ScriptedBackend(["听起来你很难过。\n1. 深呼吸\n2. 说出来", "嗯嗯。"])
    engine = ChatEngine(backend)
    pieces = list(engine.stream("我被笑话了"))
    assert "".join(pieces) == "听起来你很难过。深呼吸，说出来"
    engine.reply("谢谢")
    assert [t.role for t in engine.turns] == ["child", "assistant", "child", "assistant"]
    second_call = backend.calls[1]
    assert second_call[0]["role"] == "system" and "小桥" in second_call[0]["content"]
    assert [m["content"] for m in second_call[1:]] == ["我被笑话了", "听起来你很难过。深呼吸，说出来", "谢谢"]


def test_emergency_template_answers_without_the_model():
    backend = ScriptedBackend([])
    guard = FakeGuard(FakeVerdict(risk=True, category="self_harm", severity="emergency",
                                  template_reply="你现在安全吗？请马上告诉身边的大人，或者拨打120。"))
    reply = ChatEngine(backend, guard=guard).reply("我要跳楼")
    assert backend.calls == [] and reply.result is None
    assert "120" in reply.text and reply.verdict.severity == "emergency"


def test_risk_adds_guidance_and_followup():
    backend = ScriptedBackend(["我听到了，你一定很害怕。"])
    guard = FakeGuard(FakeVerdict(risk=True, category="physical_abuse", severity="urgent",
                                  guidance="孩子可能正在遭受伤害。", followup="请告诉老师，也可以打12355。"))
    reply = ChatEngine(backend, guard=guard).reply("爸爸又打我了")
    assert "孩子可能正在遭受伤害。" in backend.calls[0][0]["content"]
    assert reply.text == "我听到了，你一定很害怕。请告诉老师，也可以打12355。"


def test_output_guard_stops_the_model_before_harmful_clause_is_shown():
    backend = ScriptedBackend(["我明白。你是不是做错了什么，老师才打你？后面还有很多很多话。"], piece=2)
    engine = ChatEngine(backend, guard=FakeGuard(banned="做错了什么"))
    stream = engine.stream("老师打我")
    shown = "".join(stream)
    assert "做错了什么" not in shown and shown == "我明白。这不是你的错。"
    assert stream.reply.replaced
    assert backend.pieces_sent < 12  # generation was stopped, not run to the end
    assert engine.turns[-1].text == shown


def test_safety_sees_recent_child_messages_as_context():
    backend = ScriptedBackend(["嗯。", "嗯。", "嗯。"])
    guard = FakeGuard()
    engine = ChatEngine(backend, guard=guard)
    for text in ("我好累", "什么都没意思", "我已经决定了"):
        engine.reply(text)
    assert guard.seen_context[-1] == ["我好累", "什么都没意思"]


def test_failed_generation_leaves_history_unchanged():
    class Broken(ScriptedBackend):
        def stream_chat(self, messages, gen=None):
            raise BackendError("server down")

    engine = ChatEngine(Broken([]))
    with pytest.raises(BackendError):
        engine.reply("你好")
    assert engine.turns == []


@pytest.mark.parametrize("text", ["", "   ", "好" * 2001])
def test_empty_and_oversized_messages_rejected(text):
    with pytest.raises(ValueError):
        ChatEngine(ScriptedBackend([])).stream(text)


def test_history_is_trimmed_to_the_context_budget():
    backend = ScriptedBackend(["好" * 50] * 6, context_length=1500)
    engine = ChatEngine(backend)
    engine.gen.max_tokens = 200
    for i in range(6):
        engine.reply(f"第{i}次" + "很长的话" * 40)
    last = backend.calls[-1]
    assert last[0]["role"] == "system"
    assert backend.count_prompt_tokens(last) <= 1500 - 200
    assert last[1]["role"] == "user" and last[-1]["content"].startswith("第5次")
    assert len(last) < 1 + 11  # older exchanges were dropped


def test_to_dialogue_is_valid():
    engine = ChatEngine(ScriptedBackend(["我在听。"]))
    engine.reply("我有点难过")
    dialogue = engine.to_dialogue()
    assert dialogue.structure_problems() == []
    assert dialogue.meta["model"] == "scripted"


def test_long_reply_stops_at_the_first_sentence_end_past_the_limit():
    reply = "我听到了，你很生气。" + "你可以先深呼吸，再想想发生了什么。" * 3 + "最后一句。"
    backend = ScriptedBackend([reply], piece=2)
    engine = ChatEngine(backend, profile=ChatProfile(stop_after_chars=20))
    text = engine.reply("我被起外号了").text
    assert text == "我听到了，你很生气。你可以先深呼吸，再想想发生了什么。"
    assert backend.pieces_sent < len(reply) // 2  # generation stopped early
    assert ChatEngine(ScriptedBackend([reply])).reply("嗯").text == reply  # a model that needs no cut


def test_reply_stopped_inside_a_quotation_closes_it():
    backend = ScriptedBackend(["你可以对自己说：“我很勇敢。我可以的。”然后深呼吸。"], piece=2)
    assert ChatEngine(backend, profile=ChatProfile(stop_after_chars=10)).reply("我害怕").text == "你可以对自己说：“我很勇敢。”"


def test_a_sentence_restating_the_childs_message_is_not_shown():
    # What the 1.5B once answered a child's disclosure: her own words back, as if they were its own.
    backend = ScriptedBackend(["“爸爸，我爸爸昨天又用皮带打我了。听起来你很委屈。”"], piece=2)
    guard = FakeGuard(FakeVerdict(risk=True, category="physical_abuse", severity="urgent", followup="这不是你的错。"))
    engine = ChatEngine(backend, guard=guard, profile=UNTUNED)
    stream = engine.stream("我爸爸昨天又用皮带打我了")
    pieces = list(stream)
    assert "".join(pieces) == stream.reply.text == "听起来你很委屈。这不是你的错。"
    assert pieces[0] == "听起来你很委屈。"  # released a sentence at a time, after the check
    assert ChatEngine(ScriptedBackend(["我我我我我。"]), profile=UNTUNED).reply("我我我我我").text  # the fallback
    # A model whose profile does not ask for it keeps every sentence.
    kept = ChatEngine(ScriptedBackend(["我爸爸昨天又用皮带打我了。听起来你很委屈。"])).reply("我爸爸昨天又用皮带打我了")
    assert kept.text.startswith("我爸爸昨天")
