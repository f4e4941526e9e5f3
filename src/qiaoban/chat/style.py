"""Keep replies spoken-style: a streaming filter that removes markdown and releases text clause by clause.

Base models (a coder model by default) like markdown: headings, numbered lists, bold. A child hears none of
that, so list markers and emphasis are stripped and line breaks become commas. Text is released at clause
boundaries so that the output guard can check each clause before anyone sees it.
"""

from __future__ import annotations

import re

CLAUSE_END = "，。！？；…~,.!?;\n"
SENTENCE_END = "。！？…~!?"
_LINE_MARKER = re.compile(r"^\s*(?:#{1,6}|>+|[-*•·]|\d{1,2}[.、)）]|[（(]\d{1,2}[)）]|[一二三四五六七八九十][、.])\s*")
_EMPHASIS = re.compile(r"[*`#]+|_{2,}")
_EMOJI_CODE = re.compile(r":[a-z_]{2,30}:")
_SPACES = re.compile(r"[ \t]{2,}")


def _clean(text: str, at_line_start: bool) -> str:
    if at_line_start:
        text = _LINE_MARKER.sub("", text).lstrip()
    text = _EMOJI_CODE.sub("", _EMPHASIS.sub("", text))
    return _SPACES.sub(" ", text)


def spoken(text: str) -> str:
    """The whole-text version of the filter."""
    stream = ClauseStream()
    return stream.feed(text) + stream.finish()


class ClauseStream:
    """Feed raw deltas; get back cleaned text, released only up to a clause boundary.

    `finish()` releases the rest; `finish(truncated=True)` drops an unfinished last clause (generation was cut
    off by the length limit).
    """

    def __init__(self) -> None:
        self._raw = ""
        self.text = ""  # everything released so far
        self._at_line_start = True
        self._line_break = False  # a newline was seen since the last released text

    def feed(self, delta: str) -> str:
        self._raw += delta
        cut = max(self._raw.rfind(ch) for ch in CLAUSE_END)
        if cut < 0:
            return ""
        ready, self._raw = self._raw[: cut + 1], self._raw[cut + 1 :]
        return self._release(ready)

    def finish(self, truncated: bool = False) -> str:
        rest, self._raw = self._raw, ""
        return "" if truncated else self._release(rest)

    def _release(self, raw: str) -> str:
        out = ""
        for i, line in enumerate(raw.split("\n")):
            if i > 0:
                self._at_line_start, self._line_break = True, True
            if i < raw.count("\n"):
                line = line.rstrip()
            piece = _clean(line, self._at_line_start)
            if not piece:
                continue
            self._at_line_start = False
            before = (self.text + out)[-1:]
            if self._line_break and before and before not in CLAUSE_END + "：:":
                piece = "，" + piece
            self._line_break = False
            out += piece
        self.text += out
        return out
