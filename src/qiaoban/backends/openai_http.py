"""Any OpenAI-compatible chat endpoint: vLLM, hosted APIs, llama-cpp-python's server or our own `qiaoban serve`.

The key comes from the environment (`QIAOBAN_API_KEY`, then `OPENAI_API_KEY`); servers without auth accept
any placeholder. The client is thread-safe, so synthesis and evaluation can share one backend across workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from qiaoban.backends.base import (
    Backend,
    BackendError,
    ChatStream,
    GenerationConfig,
    Message,
    Usage,
    estimate_tokens,
)

# Per-message overhead of chat templates such as ChatML (role markers and separators), for estimates.
MESSAGE_OVERHEAD_TOKENS = 4


def api_key_from_env() -> str:
    return os.environ.get("QIAOBAN_API_KEY") or os.environ.get("OPENAI_API_KEY") or "not-needed"


class OpenAIBackend(Backend):
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        context_length: int = 8192,
        max_retries: int = 2,
        timeout_s: float = 120.0,
    ):
        import openai

        self._openai = openai
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key or api_key_from_env(), max_retries=max_retries, timeout=timeout_s
        )
        self.base_url = base_url
        self.name = model
        self.context_length = context_length

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        return sum(estimate_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages) + 3

    def stream_chat(self, messages: list[Message], gen: GenerationConfig | None = None) -> ChatStream:
        gen = gen or GenerationConfig()
        usage = Usage()
        return ChatStream(self.name, self._generate(messages, gen, usage), usage)

    def _generate(self, messages: list[Message], gen: GenerationConfig, usage: Usage) -> Iterator[str]:
        extra = {"top_k": gen.top_k, "repeat_penalty": gen.repeat_penalty}
        pieces: list[str] = []
        try:
            stream = self.client.chat.completions.create(
                model=self.name,
                messages=messages,
                max_tokens=gen.max_tokens,
                temperature=gen.temperature,
                top_p=gen.top_p,
                seed=gen.seed,
                stop=gen.stop or None,
                stream=True,
                stream_options={"include_usage": True},
                timeout=gen.timeout_s,
                extra_body=extra,
            )
            for chunk in stream:
                if chunk.usage is not None:
                    usage.prompt_tokens = chunk.usage.prompt_tokens
                    usage.completion_tokens = chunk.usage.completion_tokens
                for choice in chunk.choices:
                    if choice.finish_reason:
                        usage.finish_reason = choice.finish_reason
                    text = choice.delta.content if choice.delta else None
                    if text:
                        pieces.append(text)
                        yield text
        except self._openai.APITimeoutError as err:
            raise BackendError(f"{self.base_url}: no reply within {gen.timeout_s:.0f} s") from err
        except self._openai.APIConnectionError as err:
            raise BackendError(f"cannot reach {self.base_url}: {err}") from err
        except self._openai.APIStatusError as err:
            raise BackendError(f"{self.base_url} answered {err.status_code}: {err.message}") from err
        if not usage.prompt_tokens:  # the server sent no usage: estimate rather than report zero
            usage.prompt_tokens = self.count_prompt_tokens(messages)
            usage.completion_tokens = estimate_tokens("".join(pieces))
