"""Test doubles for the eval tests: a scripted backend that counts its calls, and small dialogues. Every
feature also has a test against a real model (the SmolLM2 fixture) or a real server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable

from qiaoban.backends import Backend, ChatStream, GenerationConfig, Message, Usage
from qiaoban.dialogue import Dialogue, Turn


class ScriptedBackend(Backend):
    """Answers with `respond(messages, gen)`; counts calls; raises `fail_with` on the call numbered `fail_at`."""

    def __init__(self, respond: Callable[[list[Message], GenerationConfig], str], name: str = "scripted",
                 fail_at: int | None = None, fail_with: Exception | None = None):
        self.respond = respond
        self.name = name
        self.context_length = 4096
        self.calls = 0
        self.fail_at = fail_at
        self.fail_with = fail_with or RuntimeError("interrupted")
        self._lock = threading.Lock()

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        return sum(len(m["content"]) for m in messages)

    def stream_chat(self, messages: list[Message], gen: GenerationConfig | None = None) -> ChatStream:
        with self._lock:
            self.calls += 1
            number = self.calls
        if self.fail_at is not None and number == self.fail_at:
            raise self.fail_with
        text = self.respond(messages, gen or GenerationConfig())
        return ChatStream(self.name, iter([text]), Usage(len(messages), len(text), "stop"))


def dialogues() -> list[Dialogue]:
    return [
        Dialogue("d1", [Turn("child", "我今天考试没考好。"), Turn("assistant", "听起来你有点难过。"),
                        Turn("child", "嗯，妈妈会生气。"), Turn("assistant", "你担心妈妈生气，对吗？")]),
        Dialogue("d2", [Turn("child", "没人跟我玩。"), Turn("assistant", "被冷落的感觉一定很孤单吧？"),
                        Turn("child", "是的。")]),
        # non-alternating: the second assistant turn answers no child message and is not scored
        Dialogue("d3", [Turn("child", "我养的小鱼死了。"), Turn("assistant", "你一定很伤心。"),
                        Turn("assistant", "想和我说说它吗？")]),
    ]

