"""Keep replies spoken-style: a streaming filter that removes markdown and releases text clause by clause.

Base models (a coder model by default) like markdown: headings, numbered lists, bold. A child hears none of
that, so list markers and emphasis are stripped and line breaks become commas. Text is released at clause
boundaries so that the output guard can check each clause before anyone sees it; the sentence helpers below let
the engine leave out a sentence that parrots the child.
"""

from __future__ import annotations

import math
import re
from difflib import SequenceMatcher

CLAUSE_END = "，。！？；…~,.!?;\n"
SENTENCE_END = "。！？…~!?"
# Markdown in a reply (headings, bullets, two numbered lines, quotes, bold, inline code): what `spoken` strips and
# what the data gates and the eval metrics count.
MARKDOWN = re.compile(
    r"(?m)^\s*(?:#{1,6}\s|[-*•]\s+\S|>\s)|^\s*\d{1,2}[.、)）]\s*\S.*\n\s*\d{1,2}[.、)）]"
    r"|\*\*[^*\n]+\*\*|__[^_\n]+__|`[^`\n]+`"
)
_LINE_MARKER = re.compile(r"^\s*(?:#{1,6}|>+|[-*•·]|\d{1,2}[.、)）]|[（(]\d{1,2}[)）]|[一二三四五六七八九十][、.])\s*")
_EMPHASIS = re.compile(r"[*`#]+|_{2,}")
_EMOJI_CODE = re.compile(r":[a-z_]{2,30}:")
_SPACES = re.compile(r"[ \t]{2,}")
# A sentence ends at SENTENCE_END (with any closing quotation marks) or at an English full stop, not a decimal point.
_SENTENCE = re.compile(f"[{re.escape(SENTENCE_END)}]+[”’」』]*|\\.(?=\\s|$)")
# A reply restates the child's message when it copies at least this much of it (letters and digits only):
# 60% of the message, at least 5 and at most 10 characters.
ECHO_SHARE, MIN_ECHO_CHARS, LONG_ECHO_CHARS = 0.6, 5, 10
_ATTRIBUTION = re.compile(r"你(?:刚才|刚刚)?(?:说|提到|告诉我|写)[了过道]?\s*[：:，,]?\s*[“\"「『]?\s*$")


def find_markdown(text: str) -> str | None:
    """The first markdown in `text`, or None."""
    m = MARKDOWN.search(text)
    return m.group(0).strip() if m else None


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


def split_sentences(text: str) -> tuple[list[str], str]:
    """The finished sentences at the start of `text` and the unfinished rest; a closing quotation mark right after
    a sentence end stays with its sentence ("我很勇敢。”")."""
    finished, start = [], 0
    for match in _SENTENCE.finditer(text):
        finished.append(text[start : match.end()])
        start = match.end()
    return finished, text[start:]


def restates(sentence: str, message: str) -> bool:
    """True when `sentence` repeats the child's `message` back in the child's own first person, word for word
    ("我爸爸昨天又用皮带打我了。" said back to the child who wrote it). A small model does this when it continues
    the child's turn instead of answering it. Quoting the child with attribution ("你说“…”") is fine."""
    said = [(i, ch.lower()) for i, ch in enumerate(sentence) if ch.isalnum()]
    heard = "".join(ch.lower() for ch in message if ch.isalnum())
    said_text = "".join(ch for _, ch in said)
    match = SequenceMatcher(None, said_text, heard, autojunk=False).find_longest_match()
    needed = max(MIN_ECHO_CHARS, min(LONG_ECHO_CHARS, math.ceil(ECHO_SHARE * len(heard))))
    if match.size < needed or "我" not in said_text[match.a : match.a + match.size]:
        return False
    return not _ATTRIBUTION.search(sentence[: said[match.a][0]])


def unmatched_closers_removed(text: str, open_quotes: int) -> tuple[str, int]:
    """`text` without closing quotation marks that close nothing (their opener was in a dropped sentence), and the
    number of quotations still open after it."""
    kept = []
    for ch in text:
        if ch == "”" and open_quotes == 0:
            continue
        open_quotes += (ch == "“") - (ch == "”")
        kept.append(ch)
    return "".join(kept), open_quotes
