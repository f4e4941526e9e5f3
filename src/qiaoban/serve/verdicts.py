"""The safety verdict as the server shows it: a short JSON summary, and the help-line card for the child."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import cache
from importlib import resources
from typing import Any

import yaml

from qiaoban.chat import Guard, Verdict


@cache
def helplines() -> dict[str, dict[str, str]]:
    text = resources.files("qiaoban.serve").joinpath("helplines.yaml").read_text("utf-8")
    return {str(number): entry for number, entry in yaml.safe_load(text).items()}


class RecordingGuard:
    """Delegates to the safety guard, and hands each input verdict to `on_verdict` as soon as it is known
    (before the model runs), so an event is recorded even if generation then fails."""

    def __init__(self, guard: Guard, on_verdict: Callable[[Verdict], None]):
        self.guard = guard
        self.on_verdict = on_verdict

    def check_input(self, text: str, context: list[str]) -> Verdict:
        verdict = self.guard.check_input(text, context)
        self.on_verdict(verdict)
        return verdict

    def check_output(self, reply: str, verdict: Verdict | None, said: Sequence[str] = ()) -> str | None:
        return self.guard.check_output(reply, verdict, said)


def safety_view(verdict: Verdict | None) -> dict[str, Any] | None:
    """{"risk", "category", "severity", "score"} (None when no guard ran)."""
    return verdict.to_json_dict() if verdict is not None else None  # type: ignore[attr-defined]


def helpline_card(verdict: Verdict | None) -> dict[str, Any] | None:
    """The numbers the vetted reply tells the child to call, with labels; None when nothing was flagged."""
    if verdict is None or not verdict.risk:
        return None
    said = verdict.template_reply or verdict.followup or ""
    numbers = [n for n in dict.fromkeys(re.findall(r"\d+", said)) if n in helplines()] or ["12355"]
    return {"severity": verdict.severity, "category": verdict.category,
            "lines": [{"number": n, **helplines()[n]} for n in numbers]}
