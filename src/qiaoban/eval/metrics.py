"""Reference and intrinsic metrics for Chinese replies, computed on characters (no word segmenter needed).

- `bleu(hyp, ref, n)`: sentence BLEU-n on characters, uniform weights, the standard brevity penalty, and
  add-one smoothing of the 2..n-gram precisions (Lin & Och 2004) so that one missing 4-gram does not zero a
  reply; the unigram precision is never smoothed.
- `rouge_l(hyp, ref)`: the LCS F-measure with beta = 1 (precision and recall weighted equally).
- `distinct(replies, n)`: distinct n-grams over all n-grams of a set of replies (Li et al. 2016), corpus level.
- `reply_stats(text)`: length in characters, over-80 flag, question flag, markdown/list flag, and the
  emotion-coaching strategy profile from the lexicon in `data/strategies.yaml`.

Whitespace is ignored everywhere; punctuation counts as characters (it is part of how a reply reads).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from importlib import resources

import yaml

LONG_REPLY_CHARS = 80
STRATEGIES = ("awareness", "validation", "labelling", "empathy", "guidance")

_MARKDOWN = re.compile(
    r"(?m)^\s*(?:#{1,6}\s|[-*•]\s|\d{1,2}[.、)）]\s*\S|>\s)"  # headings, bullets, numbered items, quotes
    r"|\*\*[^*\n]+\*\*|__[^_\n]+__|`[^`\n]+`"  # bold, inline code
)
_QUESTION = re.compile(r"[?？]|吗[。！!…~]*$|呢[。！!…~]*$")


def chars(text: str) -> list[str]:
    return [ch for ch in text if not ch.isspace()]


def ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(hypothesis: str, reference: str, max_n: int = 4) -> float:
    hyp, ref = chars(hypothesis), chars(reference)
    if not hyp or not ref:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        hyp_grams, ref_grams = ngrams(hyp, n), ngrams(ref, n)
        matches = sum(min(count, ref_grams[gram]) for gram, count in hyp_grams.items())
        total = max(len(hyp) - n + 1, 0)
        if n > 1:
            matches, total = matches + 1, total + 1
        if matches == 0:
            return 0.0
        log_precision += math.log(matches / total) / max_n
    brevity = 1.0 if len(hyp) > len(ref) else math.exp(1 - len(ref) / len(hyp))
    return brevity * math.exp(log_precision)


def lcs_length(a: list[str], b: list[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(hypothesis: str, reference: str) -> float:
    hyp, ref = chars(hypothesis), chars(reference)
    if not hyp or not ref:
        return 0.0
    lcs = lcs_length(hyp, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hyp), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def distinct(replies: Iterable[str], n: int) -> float:
    grams: Counter[tuple[str, ...]] = Counter()
    for reply in replies:
        grams.update(ngrams(chars(reply), n))
    total = sum(grams.values())
    return len(grams) / total if total else 0.0


@cache
def strategy_lexicon() -> dict[str, list[str]]:
    data = yaml.safe_load(resources.files("qiaoban.eval").joinpath("data/strategies.yaml").read_text("utf-8"))
    lexicon = {name: [str(p) for p in data[name]["phrases"]] for name in STRATEGIES}
    return lexicon


def strategy_profile(text: str) -> dict[str, int]:
    """1 for each coaching strategy whose cue phrases appear in the reply, else 0."""
    compact = "".join(chars(text))
    return {name: int(any(p in compact for p in phrases)) for name, phrases in strategy_lexicon().items()}


def reply_stats(text: str) -> dict[str, float]:
    length = len(chars(text))
    stats: dict[str, float] = {
        "reply_chars": length,
        "over_80": int(length > LONG_REPLY_CHARS),
        "question": int(bool(_QUESTION.search(text.strip()))),
        "markdown": int(bool(_MARKDOWN.search(text))),
    }
    stats.update({f"strategy_{k}": v for k, v in strategy_profile(text).items()})
    return stats


def reference_scores(hypothesis: str, reference: str) -> dict[str, float]:
    return {
        "bleu1": bleu(hypothesis, reference, 1),
        "bleu2": bleu(hypothesis, reference, 2),
        "bleu4": bleu(hypothesis, reference, 4),
        "rouge_l": rouge_l(hypothesis, reference),
    }
