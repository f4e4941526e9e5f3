"""The LLM backend interface: one streaming chat call, the same for llama.cpp, OpenAI-compatible HTTP and
transformers.

A backend turns OpenAI-style messages (`[{"role": "system"|"user"|"assistant", "content": str}]`) into a
`ChatStream`: iterate it for text deltas; when it is exhausted, `.result` holds the whole reply, token counts
and timings. Timing is measured here, once, for every backend.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

from qiaoban.models.registry import ChatProfile

Message = dict[str, str]


class BackendError(RuntimeError):
    """A backend could not produce a reply (model missing, server unreachable, timeout...)."""


class EngineUnavailable(BackendError):
    """The model's engine process is not running (it crashed, or could not start); try again shortly."""


@dataclass
class GenerationConfig:
    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    repeat_penalty: float = 1.1
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    timeout_s: float = 120.0


@dataclass
class Usage:
    """Filled in by a backend's generator while it streams."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""


@dataclass
class ChatResult:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    total_s: float
    finish_reason: str

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first over the time after the first."""
        decode_s = self.total_s - self.ttft_s
        if self.completion_tokens <= 1 or decode_s <= 0:
            return 0.0
        return (self.completion_tokens - 1) / decode_s


class ChatStream:
    """Text deltas of one reply; `.result` once the stream is exhausted."""

    def __init__(self, model: str, deltas: Iterator[str], usage: Usage):
        self.model = model
        self._deltas = deltas
        self._usage = usage
        self._result: ChatResult | None = None

    def __iter__(self) -> Iterator[str]:
        start = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        try:
            for delta in self._deltas:
                if not delta:
                    continue
                if first is None:
                    first = time.perf_counter() - start
                parts.append(delta)
                yield delta
        finally:
            # Also on early exit (the consumer stopped reading): close the backend's generator now, so that it
            # releases the model, and keep what was produced.
            close = getattr(self._deltas, "close", None)
            if close:
                close()
            total = time.perf_counter() - start
            self._result = ChatResult(
                text="".join(parts),
                model=self.model,
                prompt_tokens=self._usage.prompt_tokens,
                completion_tokens=self._usage.completion_tokens or len(parts),
                ttft_s=first if first is not None else total,
                total_s=total,
                finish_reason=self._usage.finish_reason or ("stop" if self._usage.completion_tokens else "cancelled"),
            )

    @property
    def result(self) -> ChatResult:
        if self._result is None:
            raise RuntimeError("the stream has not been consumed yet")
        return self._result

    def collect(self) -> ChatResult:
        for _ in self:
            pass
        return self.result


class Backend(ABC):
    """What every part of qiaoban needs from a language model."""

    #: a short label for reports and the `model` field of replies
    name: str = "model"
    #: the context window in tokens
    context_length: int = 4096
    #: how the chat engine runs this model (its prompt and reply filters), from the registry
    profile: ChatProfile = ChatProfile()

    @abstractmethod
    def stream_chat(self, messages: list[Message], gen: GenerationConfig | None = None) -> ChatStream: ...

    @abstractmethod
    def count_prompt_tokens(self, messages: list[Message]) -> int:
        """Tokens the rendered prompt takes, generation prompt included."""

    def chat(self, messages: list[Message], gen: GenerationConfig | None = None) -> ChatResult:
        return self.stream_chat(messages, gen).collect()

    def warm(self, system_prompt: str) -> str:
        """Prepare the start of every conversation under `system_prompt` (llama.cpp: its KV state, cached on
        disk); says what was done. Other backends leave it to their server."""
        return "not needed"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the model or connection."""


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate for backends that expose none: one token per CJK character, ~4 chars otherwise."""
    cjk = sum(1 for ch in text if "\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef")
    return cjk + (len(text) - cjk + 3) // 4
