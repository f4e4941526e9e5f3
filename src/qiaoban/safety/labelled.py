"""The labelled-message format of the red-team sets: one JSON object per line,
{"text", "label": "risk"|"benign", "category"?, "context"?}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class LabelledFormatError(ValueError):
    """A labelled file with a line that is not a labelled message."""


def read_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Lines of {"text", "label": "risk"|"benign", "category"?, "context"?}; a bad line names file:line."""
    items = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise LabelledFormatError(f"{path}:{number}: not JSON ({err.msg})") from None
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise LabelledFormatError(f"{path}:{number}: expected an object with a string \"text\"")
            if item.get("label") not in ("risk", "benign"):
                raise LabelledFormatError(f"{path}:{number}: \"label\" must be \"risk\" or \"benign\"")
            context = item.get("context", [])
            if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
                raise LabelledFormatError(f"{path}:{number}: \"context\" must be a list of strings")
            items.append(item)
    return items
