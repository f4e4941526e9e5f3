"""Fit a conversation into the model's context: drop the oldest exchanges first, never the system prompt."""

from __future__ import annotations

from collections.abc import Callable

from qiaoban.backends.base import Message
from qiaoban.dialogue import Turn, chat_messages


class ContextOverflowError(ValueError):
    """Even the system prompt and the newest message alone do not fit."""


def trim_history(
    system_prompt: str,
    turns: list[Turn],
    count_tokens: Callable[[list[Message]], int],
    budget: int,
) -> list[Turn]:
    """The longest suffix of `turns` that fits in `budget` prompt tokens together with the system prompt.

    Turns are dropped from the front, and the kept suffix always starts on a child turn so that the model
    never sees an assistant reply without the message it answered. The newest turn is never dropped.
    """
    start = 0
    while True:
        kept = turns[start:]
        if count_tokens(chat_messages(system_prompt, kept)) <= budget:
            return kept
        if len(kept) <= 1:
            raise ContextOverflowError(
                f"the message does not fit the context ({budget} prompt tokens); please send a shorter one"
            )
        start += 1
        while start < len(turns) - 1 and turns[start].role != "child":
            start += 1
