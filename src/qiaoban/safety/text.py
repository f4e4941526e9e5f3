"""Normalize how children type before any matching: full-width folded, lower case, tone marks dropped, English
phrases, pinyin and slang spelled in characters, spaces and decorations removed.

    normalize("我 不想活le 😢")  ->  "我不想活了"
    normalize("zi sha")          ->  "自杀"
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib import resources
from typing import Any

import yaml

# Kept after normalization: CJK, latin letters, digits, and the punctuation that separates clauses.
_DROP = re.compile(r"[^\u3400-\u9fff\uf900-\ufaffa-z0-9，。！？；…,.!?;\n]+")
_LATIN_RUN = re.compile(r"[a-z]+(?:\s+[a-z]+)*")
_CLAUSE_PUNCT = str.maketrans({",": "，", "!": "！", "?": "？", ";": "；", "\n": "。"})


@cache
def lexicon() -> dict[str, Any]:
    return yaml.safe_load(resources.files("qiaoban.safety").joinpath("lexicon.yaml").read_text("utf-8"))


@cache
def _tables() -> tuple[re.Pattern, dict[str, str], dict[str, str], re.Pattern, dict[str, str]]:
    lex = lexicon()
    english = {k.lower(): v for k, v in lex["english"].items()}
    english_re = re.compile(r"(?<![a-z])(" + "|".join(map(re.escape, sorted(english, key=len, reverse=True)))
                            + r")(?![a-z])")
    slang = dict(lex["slang"])
    slang_re = re.compile("|".join(map(re.escape, sorted(slang, key=len, reverse=True))))
    return english_re, english, dict(lex["pinyin"]), slang_re, slang


def _strip_tones(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def _segment(run: str, words: dict[str, str]) -> str | None:
    """Spell a latin run in characters when it splits completely into known pinyin words (longest first)."""
    best: list[str | None] = [None] * (len(run) + 1)
    best[0] = ""
    longest = max(map(len, words))
    for end in range(1, len(run) + 1):
        for start in range(max(0, end - longest), end):
            if best[start] is not None and run[start:end] in words:
                candidate = best[start] + words[run[start:end]]
                if best[end] is None or len(candidate) < len(best[end]):
                    best[end] = candidate
    return best[-1]


def normalize(text: str) -> str:
    english_re, english, pinyin, slang_re, slang = _tables()
    text = _strip_tones(unicodedata.normalize("NFKC", text)).lower()
    text = english_re.sub(lambda m: english[m.group(1)], text)

    def spell(match: re.Match) -> str:
        run = re.sub(r"\s+", "", match.group(0))
        return _segment(run, pinyin) or run

    text = _LATIN_RUN.sub(spell, text)
    text = slang_re.sub(lambda m: slang[m.group(0)], text)
    return _DROP.sub("", text).translate(_CLAUSE_PUNCT).replace(".", "。")
