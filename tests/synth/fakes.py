"""An LLM test double for the synthesis runner's unit tests (the real-model tests are in test_e2e_server.py)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from qiaoban.backends.base import Backend, BackendError, ChatStream, GenerationConfig, Message, Usage


def dialogue_for(messages: list[Message]) -> str:
    """A well-formed Chinese dialogue about the request's own scenario, spoken by the request's own child: lets a
    test see that a record was paired with the right request."""
    user = messages[-1]["content"]
    scenario = re.search(r"【情境】(.+)", user).group(1).strip()
    name = re.search(r"【孩子】名字叫(.+?)，", user).group(1)
    return (f"好的，下面是对话：\n\n孩子：我是{name}，{scenario}。\n小桥：{name}，听起来这件事让你心里很不好受，愿意多说一点吗？\n"
            f"孩子：嗯，我一直在想{scenario}这件事。\n小桥：一直想着它，说明它对你很重要，我们一起想想可以怎么做。")


class FakeTeacher(Backend):
    """Replies from `reply(messages, call_number)`: a string, or an exception instance to raise. Thread-safe;
    `delay` seconds between streamed pieces simulate a slow teacher."""

    name = "fake-teacher"

    def __init__(self, reply: Callable[[list[Message], int], str | Exception] | None = None, *, delay: float = 0.0,
                 finish_reason: str = "stop"):
        self.reply = reply or (lambda messages, n: dialogue_for(messages))
        self.delay = delay
        self.finish_reason = finish_reason
        self.calls: list[list[Message]] = []
        self.call_times: list[float] = []
        self._lock = threading.Lock()
        self.max_concurrent = 0
        self._active = 0

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        return sum(len(m["content"]) for m in messages)

    def stream_chat(self, messages: list[Message], gen: GenerationConfig | None = None) -> ChatStream:
        with self._lock:
            self.calls.append(messages)
            self.call_times.append(time.monotonic())
            number = len(self.calls)
        answer = self.reply(messages, number)
        usage = Usage(prompt_tokens=self.count_prompt_tokens(messages))

        def deltas():
            with self._lock:
                self._active += 1
                self.max_concurrent = max(self.max_concurrent, self._active)
            try:
                if isinstance(answer, Exception):
                    raise answer
                for i in range(0, len(answer), 8):
                    if self.delay:
                        time.sleep(self.delay)
                    yield answer[i : i + 8]
                usage.completion_tokens = len(answer)
                usage.finish_reason = self.finish_reason
            finally:
                with self._lock:
                    self._active -= 1

        return ChatStream(self.name, deltas(), usage)


def always_failing(messages: list[Message], number: int) -> Exception:
    return BackendError("connection refused")
