"""The LLM layer: the logistic head on the default model's hidden states, and how it joins the verdict."""

from __future__ import annotations

import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from qiaoban.safety import classifier, head
from qiaoban.safety.detect import check

REPO = Path(__file__).resolve().parents[2]


def test_fit_separates_two_clusters_and_survives_saving(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1, 0.5, (40, 8)), rng.normal(1, 0.5, (40, 8))])
    risky = np.array([False] * 40 + [True] * 40)
    params = head.fit(x, risky)
    assert ((head.probability(params, x) >= 0.5) == risky).mean() > 0.95
    head.save(params, tmp_path / "head.json", model="m")
    loaded = json.loads((tmp_path / "head.json").read_text("utf-8"))
    assert loaded["model"] == "m"
    assert np.allclose(head.probability(loaded, x), head.probability(params, x), atol=1e-4)


def test_fit_reaches_the_regularized_optimum():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    risky = (x[:, 0] + 0.5 * rng.normal(size=200)) > 0  # overlapping classes: the optimum is finite
    params = head.fit(x, risky, l2=0.05)
    z = (x - np.asarray(params["mean"])) / np.asarray(params["std"])
    residual = head.probability(params, x) - risky
    w = np.asarray(params["weights"])
    assert np.abs(z.T @ residual / len(x) + 0.05 * w).max() < 1e-5  # the gradient vanishes
    assert abs(residual.mean()) < 1e-5  # the unshrunk bias matches the base rate


def test_embeddings_are_cached_by_text_and_the_model_is_loaded_only_for_new_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("QIAOBAN_HOME", str(tmp_path))
    loads, embedded = [], []

    class FakeEmbedder:
        def __init__(self, path):
            loads.append(path)

        def __call__(self, text):
            embedded.append(text)
            return np.array([len(text), 1.0], dtype=np.float32)

    monkeypatch.setattr(head, "Embedder", FakeEmbedder)
    monkeypatch.setattr(head, "model_file", lambda name, layers: Path(f"/models/{name}.first{layers}.gguf"))
    monkeypatch.setattr(head, "embedder", cache(head.embedder.__wrapped__))  # loads stay within this test
    first = head.embed_all(["一", "二二"], "m")
    again = head.embed_all(["二二", "一", "三三三"], "m")
    assert embedded == ["一", "二二", "三三三"] and len(loads) == 1  # one load, shared by later calls
    assert np.array_equal(again[:2], first[::-1]) and again[2][0] == 3
    head.embedder.cache_clear()
    head.embed_all(["一"], "m")
    assert len(loads) == 1  # all cached: the model is not even loaded
    head.embed_all(["一"], "m", layers=8)  # another depth has its own cache
    assert loads[-1] == Path("/models/m.first8.gguf") and embedded[-1] == "一"

def _fake_head(probability: float, calls: list[str]) -> head.Head:
    params = {"mean": [0.0], "std": [1.0], "weights": [0.0], "bias": math.log(probability / (1 - probability))}
    return head.Head(params, lambda text: (calls.append(text), np.array([1.0]))[1])


def _flat_classifier(risk: float) -> dict:
    """A classifier that gives every message the same probability of self-harm."""
    bias = [math.log(1 - risk), math.log(risk)]
    return classifier.prepare({"labels": ["benign", "self_harm"], "bias": bias, "weights": {}})


def test_the_head_joins_the_classifier_as_a_mean_and_is_asked_only_where_it_can_matter():
    calls: list[str] = []
    message = "今天的晚霞很好看"
    flagged = check(message, model=_flat_classifier(0.5), head=_fake_head(0.9, calls), fused_threshold=0.6)
    assert flagged.risk and flagged.category == "self_harm" and flagged.score == pytest.approx(0.7)
    assert "head:0.90" in flagged.matched and flagged.head_score == pytest.approx(0.9) and calls == [message]
    # The classifier alone would flag 0.65; a head that reads it as benign vetoes it.
    vetoed = check(message, model=_flat_classifier(0.65), head=_fake_head(0.2, calls), fused_threshold=0.6)
    assert not vetoed.risk and vetoed.score == pytest.approx(0.425)
    assert check(message, model=_flat_classifier(0.65), threshold=0.6).risk
    # Below 2t-1 the mean cannot reach t: the head is not asked.
    calls.clear()
    assert not check(message, model=_flat_classifier(0.15), head=_fake_head(0.99, calls), fused_threshold=0.6).risk
    assert calls == []


def test_hyperbole_raises_the_bar_for_the_learned_layers_without_silencing_them():
    calls: list[str] = []
    joke = "这题要了我的命"  # the pattern layer reads hyperbole
    assert not check(joke, model=_flat_classifier(0.7), threshold=0.6).risk
    assert check(joke, model=_flat_classifier(0.9), threshold=0.6).risk
    # With the head the mean must reach the same higher bar, and the head is asked only where it can.
    assert not check(joke, model=_flat_classifier(0.55), head=_fake_head(0.99, calls), fused_threshold=0.6).risk
    assert calls == []
    assert not check(joke, model=_flat_classifier(0.7), head=_fake_head(0.8, calls)).risk
    assert check(joke, model=_flat_classifier(0.8), head=_fake_head(0.9, calls)).risk and len(calls) == 2


def test_a_lexicon_hit_does_not_wait_for_the_head():
    calls: list[str] = []
    verdict = check("我不想活了", head=_fake_head(0.01, calls))
    assert verdict.risk and verdict.category == "self_harm" and calls == []


def test_packaged_head_records_its_model_and_training_files():
    meta = json.loads(head.head_path().read_text("utf-8"))
    assert meta["model"] == "qwen2.5-coder-1.5b-instruct-q4_k_m" and meta["layers"] == head.LAYERS
    assert len(meta["weights"]) == len(meta["mean"]) == 1536
    for source in meta["examples"]:
        assert classifier.file_digest(REPO / source["path"]) == source["sha256"], f"{source['path']} changed"


@pytest.mark.slow
def test_real_head_reads_veiled_risk_the_fast_layers_alone_call_borderline(default_model_path):
    llm_head = head.available()
    assert llm_head is not None
    # Written for this test, in none of the red-team sets: each pair shares its surface with a benign twin.
    risky = ["这周末之后 大家就不用再烦我了", "我把想说的话都录在手机里了 明天就会有人看到",
             "游戏里的叔叔说我跟他视频的事不能让我爸妈知道"]
    benign = ["这周末之后就放假啦 大家终于不用早起了", "我把生日祝福都录在手机里了 明天放给奶奶听",
              "游戏里的同学说下次带我上分 我妈也认识他妈妈"]
    # The first one sits near the bar (the classifier alone 0.66; fused 0.58 with the last-layer head, 0.83 with the
    # layer-16 one): a message at the bar is a trade-off of the head, which wins on dev cross-validation as a whole.
    assert sum(check(text, head=llm_head).risk for text in risky) >= 2
    for text in benign:
        assert not check(text, head=llm_head).risk, text
    # The head itself, on the model's hidden states, ranks each risky message above its benign twin.
    for bad, good in zip(risky, benign, strict=True):
        assert llm_head.score(bad) > llm_head.score(good)
