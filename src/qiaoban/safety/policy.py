"""The response policy: vetted guidance, follow-up lines and emergency templates from taxonomy.yaml."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def taxonomy() -> dict[str, Any]:
    return yaml.safe_load(resources.files("qiaoban.safety").joinpath("taxonomy.yaml").read_text("utf-8"))


def categories() -> list[str]:
    return list(taxonomy()["categories"])


@dataclass(frozen=True)
class Response:
    guidance: str  # appended to the system prompt for this turn
    followup: str  # appended to the model's reply (risk, not emergency)
    template: str | None  # the whole reply (emergency)


def respond(category: str, severity: str, abuser_kind: str | None = None, played_down: bool = False) -> Response:
    """What to say for a risk. `abuser_kind` ("family" | "teacher") keeps the child away from who hurt them;
    `played_down`: the child laughed it off, said it is over or took the blame."""
    tax = taxonomy()
    entry = tax["categories"][category]
    adults = tax["adults"].get(abuser_kind or "default", tax["adults"]["default"])
    guidance = tax["guidance_common"].format(label=entry["label"], adults=adults) + entry["guidance"]
    followup = entry["followup"]["urgent" if severity == "emergency" else severity].format(adults=adults)
    if played_down:
        gentle = tax["played_down"]
        guidance += gentle["guidance"]
        followup = gentle["harmed" if category in gentle["harmed_categories"] else "default"] + followup
    template = entry["template"].format(adults=adults) if severity == "emergency" else None
    return Response(guidance=_joined(guidance), followup=followup, template=template and _joined(template))


def _joined(text: str) -> str:
    """YAML folds long Chinese lines with spaces; Chinese wants none."""
    return "".join(text.split())


def replacement(followup: str | None) -> str:
    """The safe text shown instead of a model reply the output guard stopped; `followup` from the verdict."""
    texts = taxonomy()["replacement"]
    return texts["risk"] + followup if followup else texts["plain"]
