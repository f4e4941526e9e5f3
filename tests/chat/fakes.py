"""An LLM test double for unit tests of the chat engine (every feature also has a real-model test)."""

from __future__ import annotations

from dataclasses import dataclass, field

from qiaoban.backends.base import Backend, ChatStream, GenerationConfig, Message, Usage


class ScriptedBackend(Backend):
    """Replies with scripted texts, streamed in small pieces; counts tokens as characters."""

    name = "scripted"

    def __init__(self, replies: list[str], context_length: int = 4096, piece: int = 3):
        self.replies = list(replies)
        self.context_length = context_length
        self.piece = piece
        self.calls: list[list[Message]] = []
        self.pieces_sent = 0

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        return sum(len(m["content"]) + 2 for m in messages)

    def stream_chat(self, messages, gen: GenerationConfig | None = None) -> ChatStream:
        self.calls.append(messages)
        text = self.replies.pop(0)
        usage = Usage(prompt_tokens=self.count_prompt_tokens(messages))

        def deltas():
            for i in range(0, len(text), self.piece):
                self.pieces_sent += 1
                yield text[i : i + self.piece]
            usage.completion_tokens = len(text)
            usage.finish_reason = "stop"

        return ChatStream(self.name, deltas(), usage)


@dataclass
class FakeVerdict:
    risk: bool = False
    category: str | None = None
    severity: str | None = None
    score: float = 0.0
    template_reply: str | None = None
    guidance: str = ""
    followup: str = ""


@dataclass
class FakeGuard:
    verdict: FakeVerdict = field(default_factory=FakeVerdict)
    banned: str | None = None
    seen_context: list[list[str]] = field(default_factory=list)

    def check_input(self, text, context):
        self.seen_context.append(list(context))
        return self.verdict

    def check_output(self, reply, verdict, said=()):
        if self.banned and self.banned in reply:
            return "这不是你的错。"
        return None
