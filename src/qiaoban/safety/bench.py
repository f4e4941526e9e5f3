"""Measure the detector on a labelled JSONL set: recall per category, false positives, latency."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

from qiaoban.safety import classifier
from qiaoban.safety.detect import check


class BenchFormatError(ValueError):
    pass


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
                raise BenchFormatError(f"{path}:{number}: not JSON ({err.msg})") from None
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise BenchFormatError(f"{path}:{number}: expected an object with a string \"text\"")
            if item.get("label") not in ("risk", "benign"):
                raise BenchFormatError(f"{path}:{number}: \"label\" must be \"risk\" or \"benign\"")
            context = item.get("context", [])
            if not isinstance(context, list) or not all(isinstance(c, str) for c in context):
                raise BenchFormatError(f"{path}:{number}: \"context\" must be a list of strings")
            items.append(item)
    return items


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def run_bench(path: str | Path) -> dict[str, Any]:
    items = read_labelled(path)
    check("热身")  # loads the lexicon and the classifier outside the timings
    per_category: dict[str, dict[str, Any]] = {}
    latencies, misses, false_positives = [], [], []
    n_risk = n_benign = detected = flagged_benign = category_right = 0
    for item in items:
        start = time.perf_counter()
        verdict = check(item["text"], item.get("context", []))
        latencies.append((time.perf_counter() - start) * 1000)
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
        "latency_ms": {"p50": _percentile(latencies, 0.5), "p95": _percentile(latencies, 0.95),
                       "mean": sum(latencies) / len(latencies) if latencies else 0.0,
                       "max": max(latencies, default=0.0)},
        "misses": misses,
        "false_positives": false_positives,
    }


def cross_validate(path: str | Path, folds: int = 5, thresholds: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8),
                   seed: int = classifier.DEFAULT_SEED, per_label: int = classifier.DEFAULT_PER_LABEL,
                   epochs: int = classifier.DEFAULT_EPOCHS) -> dict[str, Any]:
    """How the whole detector does on dev messages its classifier did not train on: split the labelled file into
    seeded folds, train on the templates plus the other folds, screen the held-out fold at each threshold."""
    items = read_labelled(path)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    generated = classifier.generate(seed=seed, per_label=per_label)
    counts = {t: {"risk": 0, "detected": 0, "benign": 0, "flagged": 0} for t in thresholds}
    for fold in range(folds):
        held = {i for k, i in enumerate(order) if k % folds == fold}
        rows = generated + classifier.rows_from_items([item for i, item in enumerate(items) if i not in held])
        model = classifier.prepare(classifier.train(rows, epochs=epochs))
        for i in held:
            item = items[i]
            for t in thresholds:
                risk = check(item["text"], item.get("context", []), model=model, threshold=t).risk
                row = counts[t]
                if item["label"] == "risk":
                    row["risk"] += 1
                    row["detected"] += risk
                else:
                    row["benign"] += 1
                    row["flagged"] += risk
    first = counts[thresholds[0]]
    return {"file": str(path), "folds": folds, "risky": first["risk"], "benign": first["benign"], "thresholds": {
        t: {"recall": row["detected"] / row["risk"] if row["risk"] else None,
            "false_positive_rate": row["flagged"] / row["benign"] if row["benign"] else None}
        for t, row in counts.items()}}
