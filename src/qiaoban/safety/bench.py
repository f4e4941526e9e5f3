"""Measure the detector on a labelled JSONL set (recall per category, false positives, latency), and the reply
guard on rated replies."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from qiaoban.safety import classifier
from qiaoban.safety.detect import check
from qiaoban.safety.guard import SafetyGuard
from qiaoban.safety.head import Head, embedding_input, fit
from qiaoban.safety.labelled import read_labelled


def _latency(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "mean": 0.0, "max": 0.0}
    p50, p95 = np.percentile(values, [50, 95], method="nearest")
    return {"p50": float(p50), "p95": float(p95), "mean": float(np.mean(values)), "max": float(max(values))}


def run_bench(path: str | Path, head: Head | None = None) -> dict[str, Any]:
    """Screen every item; with `head`, verdicts come from the full detector, and `latency_ms` still times the
    fast layers alone (the ≤ 5 ms budget) next to `latency_with_head_ms`."""
    items = read_labelled(path)
    check("热身")  # loads the lexicon and the classifier outside the timings
    per_category: dict[str, dict[str, Any]] = {}
    latencies, head_latencies, misses, false_positives = [], [], [], []
    head_asked = 0
    n_risk = n_benign = detected = flagged_benign = category_right = 0
    for item in items:
        start = time.perf_counter()
        verdict = check(item["text"], item.get("context", []))
        latencies.append((time.perf_counter() - start) * 1000)
        if head is not None:
            start = time.perf_counter()
            verdict = check(item["text"], item.get("context", []), head=head)
            head_latencies.append((time.perf_counter() - start) * 1000)
            head_asked += verdict.head_score is not None
        if item["label"] == "risk":
            n_risk += 1
            row = per_category.setdefault(item.get("category") or "unknown", {"n": 0, "detected": 0, "same_category": 0})
            row["n"] += 1
            if verdict.risk:
                detected += 1
                row["detected"] += 1
                if verdict.category == item.get("category"):
                    row["same_category"] += 1
                    category_right += 1
            else:
                misses.append(item["text"])
        else:
            n_benign += 1
            if verdict.risk:
                flagged_benign += 1
                false_positives.append(f"{item['text']} -> {verdict.category}/{verdict.severity}")
    for row in per_category.values():
        row["recall"] = row["detected"] / row["n"]
    return {
        "file": str(path),
        "n": len(items),
        "n_risk": n_risk,
        "n_benign": n_benign,
        "recall": detected / n_risk if n_risk else None,
        "false_positive_rate": flagged_benign / n_benign if n_benign else None,
        "category_accuracy": category_right / detected if detected else None,
        "per_category": dict(sorted(per_category.items())),
        "head": head is not None,
        "latency_ms": _latency(latencies),
        **({"head_asked": head_asked, "latency_with_head_ms": _latency(head_latencies)} if head is not None else {}),
        "misses": misses,
        "false_positives": false_positives,
    }


def cross_validate(path: str | Path, folds: int = 5, thresholds: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8),
                   seed: int = classifier.DEFAULT_SEED, per_label: int = classifier.DEFAULT_PER_LABEL,
                   max_iter: int = classifier.DEFAULT_MAX_ITER,
                   embed: Callable[[str], np.ndarray] | None = None) -> dict[str, Any]:
    """How the whole detector does on dev messages its learned layers did not train on: split the labelled file
    into seeded folds, train the classifier on the templates plus the other folds (and, given `embed`, the head
    on the other folds' vectors), screen the held-out fold at each threshold (the fused one, with the head)."""
    items = read_labelled(path)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    generated = classifier.generate(seed=seed, per_label=per_label)
    vectors = None
    if embed is not None:
        vectors = np.stack([embed(embedding_input(item["text"], item.get("context", []))) for item in items])
    counts = {t: {"risk": 0, "detected": 0, "benign": 0, "flagged": 0} for t in thresholds}
    for fold in range(folds):
        held = {i for k, i in enumerate(order) if k % folds == fold}
        train_ids = [i for i in range(len(items)) if i not in held]
        rows = generated + classifier.rows_from_items([items[i] for i in train_ids])
        model = classifier.prepare(classifier.train(rows, max_iter=max_iter))
        fold_head = None
        if embed is not None and vectors is not None:
            risky = np.array([items[i]["label"] == "risk" for i in train_ids])
            fold_head = Head(fit(vectors[train_ids], risky), embed)
        for i in held:
            item = items[i]
            for t in thresholds:
                risk = check(item["text"], item.get("context", []), model=model, threshold=t, head=fold_head,
                             fused_threshold=t).risk
                row = counts[t]
                if item["label"] == "risk":
                    row["risk"] += 1
                    row["detected"] += risk
                else:
                    row["benign"] += 1
                    row["flagged"] += risk
    first = counts[thresholds[0]]
    return {"file": str(path), "folds": folds, "head": embed is not None, "risky": first["risk"],
            "benign": first["benign"], "thresholds": {
                t: {"recall": row["detected"] / row["risk"] if row["risk"] else None,
                    "false_positive_rate": row["flagged"] / row["benign"] if row["benign"] else None}
                for t, row in counts.items()}}


def run_reply_bench(items: list[dict[str, Any]], guard: SafetyGuard) -> dict[str, Any]:
    """Screen each rated reply as the chat engine does (the input verdict of the child's message, then the
    output guard on the whole reply): recall on harmful replies per harm kind, stop rate on harmless ones, and
    how often each layer fired."""
    caught = stopped = n_harmful = 0
    per_kind: dict[str, dict[str, int]] = {}
    layers: dict[str, int] = {}
    misses, false_stops, latencies = [], [], []
    for item in tqdm(items, desc="screening replies", disable=len(items) < 200):
        said = [*item.get("context", []), item["text"]]
        verdict = guard.check_input(item["text"], item.get("context", []))
        start = time.perf_counter()
        harms = guard.harms(item["reply"], verdict, said)
        latencies.append((time.perf_counter() - start) * 1000)
        for harm in harms:
            layers[harm] = layers.get(harm, 0) + 1
        if item["harmful"]:
            n_harmful += 1
            caught += bool(harms)
            for kind in item.get("kinds") or ["unspecified"]:
                row = per_kind.setdefault(kind, {"n": 0, "caught": 0})
                row["n"] += 1
                row["caught"] += bool(harms)
            if not harms:
                misses.append(f"{item['text']} -> {item['reply']}")
        elif harms:
            stopped += 1
            false_stops.append(f"{item['text']} -> {item['reply']} [{', '.join(harms)}]")
    n_harmless = len(items) - n_harmful
    return {
        "n": len(items), "n_harmful": n_harmful, "n_harmless": n_harmless,
        "recall": caught / n_harmful if n_harmful else None,
        "false_stop_rate": stopped / n_harmless if n_harmless else None,
        "per_kind": {k: {**v, "recall": v["caught"] / v["n"]} for k, v in sorted(per_kind.items())},
        "layers": layers, "reply_head": guard.reply_head is not None, "latency_ms": _latency(latencies),
        "misses": misses, "false_stops": false_stops,
    }
