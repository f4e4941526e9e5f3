"""Metrics against values worked out by hand (the arithmetic is in the comments)."""

import math

import pytest

from qiaoban.eval.metrics import bleu, chrf, distinct, reply_stats, rouge_l, strategy_profile
from qiaoban.eval.report import bootstrap_ci, distinct_jackknife_ci

HYP, REF = "我很难过", "我有点难过"  # 4 and 5 characters
BP = math.exp(1 - 5 / 4)  # hypothesis shorter than the reference


def test_bleu_by_hand():
    # unigrams: 我 难 过 match -> 3/4 (never smoothed)
    assert bleu(HYP, REF, 1) == pytest.approx(BP * 0.75)
    # bigrams 我很 很难 难过: one match; add-one -> (1+1)/(3+1) = 1/2
    assert bleu(HYP, REF, 2) == pytest.approx(BP * math.sqrt(0.75 * 0.5))
    # trigrams: 0 of 2 -> 1/3; 4-grams: 0 of 1 -> 1/2; (3/4 * 1/2 * 1/3 * 1/2) ** (1/4) = 0.0625 ** 0.25 = 0.5
    assert bleu(HYP, REF, 4) == pytest.approx(BP * 0.5)
    assert bleu(HYP, REF, 4) == pytest.approx(0.38940039)


def test_bleu_edges():
    assert bleu("同样的话", "同样的话", 4) == pytest.approx(1.0)
    assert bleu("完全不同", "风马牛", 4) == 0.0  # no unigram in common: unsmoothed p1 = 0
    assert bleu("", "参考", 4) == 0.0
    # whitespace is ignored; a longer hypothesis has no brevity penalty: p1 = 2/3, p2 = (1+1)/(2+1)
    assert bleu("你 好 呀", "你好", 2) == pytest.approx(math.sqrt(2 / 3 * 2 / 3))


def test_rouge_l_by_hand():
    precision, recall = 3 / 4, 3 / 5  # the longest common subsequence: 我 难 过
    assert rouge_l(HYP, REF) == pytest.approx(2 * precision * recall / (precision + recall))
    assert rouge_l(HYP, REF) == pytest.approx(2 / 3)
    assert rouge_l("甲乙", "丙丁") == 0.0


def test_chrf_reads_characters():
    assert chrf("同样的话", "同样的话") == pytest.approx(1.0)
    assert chrf("完全不同", "风马牛") == 0.0
    assert 0 < chrf(HYP, REF) < 1


def test_distinct_by_hand():
    # unigrams 好 好 的 好 呀 -> 3 distinct of 5; bigrams 好好 好的 好呀 -> 3 of 3
    assert distinct(["好好的", "好呀"], 1) == pytest.approx(3 / 5)
    assert distinct(["好好的", "好呀"], 2) == pytest.approx(1.0)
    assert distinct(["哈哈哈"], 2) == pytest.approx(1 / 2)  # 哈哈 twice
    assert distinct([], 1) == 0.0


def test_reply_stats_by_hand():
    stats = reply_stats("听起来你很难过。想和我说说吗？")
    assert stats["reply_chars"] == 15
    assert stats["over_80"] == 0 and stats["question"] == 1 and stats["markdown"] == 0
    assert strategy_profile("听起来你很难过。想和我说说吗？") == {
        "awareness": 1, "validation": 0, "labelling": 1, "empathy": 0, "guidance": 0}
    assert reply_stats("啊" * 81)["over_80"] == 1 and reply_stats("啊" * 80)["over_80"] == 0
    assert reply_stats("1. 深呼吸\n2. 出去走走")["markdown"] == 1
    assert reply_stats("**加油**，你可以的")["markdown"] == 1
    assert reply_stats("你可以试试深呼吸。")["question"] == 0
    assert reply_stats("你可以试试深呼吸。")["strategy_guidance"] == 1
    assert reply_stats("这不是你的错，我陪着你。") | {} == reply_stats("这不是你的错，我陪着你。")
    assert reply_stats("这不是你的错，我陪着你。")["strategy_validation"] == 1
    assert reply_stats("这不是你的错，我陪着你。")["strategy_empathy"] == 1


def test_bootstrap_is_seeded_and_sane():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 2.0, 3.0]
    mean = sum(values) / len(values)
    first = bootstrap_ci(values, lambda xs: sum(xs) / len(xs))
    assert first == bootstrap_ci(values, lambda xs: sum(xs) / len(xs))
    assert first[0] < mean < first[1] and first[0] >= 1.0 and first[1] <= 5.0
    assert bootstrap_ci([2.0, 2.0, 2.0], lambda xs: sum(xs) / len(xs)) == [2.0, 2.0]
    assert bootstrap_ci([2.0], lambda xs: xs[0]) is None


def test_distinct_jackknife_matches_brute_force_and_covers_the_estimate():
    replies = ["好好的", "好呀", "你好呀", "真的好", "哈哈哈哈"]
    estimate = distinct(replies, 1)
    loo = [distinct(replies[:i] + replies[i + 1 :], 1) for i in range(len(replies))]
    mean = sum(loo) / len(loo)
    error = math.sqrt((len(loo) - 1) / len(loo) * sum((x - mean) ** 2 for x in loo))
    low, high = distinct_jackknife_ci(replies, 1)
    assert low == pytest.approx(estimate - 1.96 * error, abs=1e-4)
    assert high == pytest.approx(estimate + 1.96 * error, abs=1e-4)
    assert low < estimate < high
