"""Reference and intrinsic metrics for Chinese replies, computed on characters (no word segmenter needed), with
maintained libraries so that others can compare:

- `bleu(hyp, ref, n)`: sacrebleu's sentence BLEU-n with its Chinese tokenizer (`tokenize="zh"`: one token per
  character), uniform weights, the standard brevity penalty, and add-one smoothing of the 2..n-gram precisions
  (Lin & Och 2004; sacrebleu's `add-k`, k = 1) so that one missing 4-gram does not zero a reply.
- `chrf(hyp, ref)`: sacrebleu's sentence chrF (character 6-grams, beta = 2).
- `rouge_l(hyp, ref)`: rouge-score's ROUGE-L F-measure on characters (beta = 1).
- `distinct(replies, n)`: distinct n-grams over all n-grams of a set of replies (Li et al. 2016), corpus level.
- `reply_stats(text)`: length in characters, over-80 flag, question flag, markdown/list flag, and the
  emotion-coaching strategy profile from the lexicon in `data/strategies.yaml`.

Whitespace is ignored everywhere; punctuation counts as characters (it is part of how a reply reads).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from functools import cache
from importlib import resources

import yaml
from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from qiaoban.chat.style import find_markdown

LONG_REPLY_CHARS = 80
STRATEGIES = ("awareness", "validation", "labelling", "empathy", "guidance")

_QUESTION = re.compile(r"[?？]|吗[。！!…~]*$|呢[。！!…~]*$")


def chars(text: str) -> list[str]:
    return [ch for ch in text if not ch.isspace()]


def ngrams(tokens: list[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


@cache
def _bleu_metric(max_n: int) -> BLEU:
    return BLEU(max_ngram_order=max_n, tokenize="zh", smooth_method="add-k", smooth_value=1, effective_order=True)


def bleu(hypothesis: str, reference: str, max_n: int = 4) -> float:
    hyp, ref = "".join(chars(hypothesis)), "".join(chars(reference))
    if not hyp or not ref:
        return 0.0
    return _bleu_metric(max_n).sentence_score(hyp, [ref]).score / 100


def chrf(hypothesis: str, reference: str) -> float:
    hyp, ref = "".join(chars(hypothesis)), "".join(chars(reference))
    if not hyp or not ref:
        return 0.0
    return _CHRF.sentence_score(hyp, [ref]).score / 100


class _Characters:
    """rouge-score's tokenizer interface: its default one drops every Chinese character."""

    def tokenize(self, text: str) -> list[str]:
        return chars(text)


_CHRF = CHRF()
_ROUGE = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Characters())


def rouge_l(hypothesis: str, reference: str) -> float:
    return _ROUGE.score(reference, hypothesis)["rougeL"].fmeasure


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
        "markdown": int(find_markdown(text) is not None),
    }
    stats.update({f"strategy_{k}": v for k, v in strategy_profile(text).items()})
    return stats


def reference_scores(hypothesis: str, reference: str) -> dict[str, float]:
    return {
        "bleu1": bleu(hypothesis, reference, 1),
        "bleu2": bleu(hypothesis, reference, 2),
        "bleu4": bleu(hypothesis, reference, 4),
        "chrf": chrf(hypothesis, reference),
        "rouge_l": rouge_l(hypothesis, reference),
    }
