"""The labelled-message format of the red-team sets: one JSON object per line,
{"text", "label": "risk"|"benign", "category"?, "context"?}."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class LabelledFormatError(ValueError):
    """A labelled file with a line that is not a labelled message."""


def json_objects(path: str | Path, error: type[ValueError], fields: tuple[str, ...] = ("text",)
                 ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file of a child's messages: an object with the
    string `fields` and an optional "context", a list of strings; otherwise `error`, naming file:line."""
    wanted = " and ".join(f'"{field}"' for field in fields)
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as err:
                raise error(f"{path}:{number}: not JSON ({err.msg})") from None
            if not isinstance(item, dict) or not all(isinstance(item.get(field), str) for field in fields):
                raise error(f"{path}:{number}: expected an object with string {wanted}")
            context = item.get("context", [])
            if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
                raise error(f"{path}:{number}: \"context\" must be a list of strings")
            yield number, item


def read_labelled(path: str | Path) -> list[dict[str, Any]]:
    """Lines of {"text", "label": "risk"|"benign", "category"?, "context"?}; a bad line names file:line."""
    items = []
    for number, item in json_objects(path, LabelledFormatError):
        if item.get("label") not in ("risk", "benign"):
            raise LabelledFormatError(f"{path}:{number}: \"label\" must be \"risk\" or \"benign\"")
        items.append(item)
    return items
