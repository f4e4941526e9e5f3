"""Child-safety screening: recall, false positives and latency of qiaoban's detector against a keyword filter.

Data: every labelled red-team split under tests/safety/data (or the files given). Compared in one run, on the
same messages with the same context:

- ours:     `qiaoban.safety.check`, the fast layers (normalization, lexicon with negation/hyperbole/fiction/
            context handling, character n-gram classifier);
- +head:    the same with the LLM layer (the head on the default model's hidden states, asked only where it
            can change the verdict), when that model is installed; timed once per message (--repeat does not
            apply: it is the model's cost, not noise);
- lexicon:  our pattern layer alone (no classifier), to show what the learned layer adds;
- keywords: a plain substring filter over a list of alarming words (死, 自杀, 打我, 杀, ...), the kind of filter
            a chatbot without a safety part would bolt on; it sees the raw text only.

Reports recall on risky messages, false-positive rate on benign ones, latency per message (p50/p95), and the
ratios ours/keywords.

    .venv/bin/python bench/safety_latency.py [FILE ...] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from qiaoban.safety import check, read_labelled
from qiaoban.safety.head import available
from qiaoban.safety.lexicon import scan

DATA = Path(__file__).resolve().parents[1] / "tests" / "safety" / "data"
KEYWORDS = ("死", "自杀", "杀", "打我", "跳楼", "割腕", "欺负", "摸我", "离家出走", "抽烟", "喝酒", "毒", "减肥",
            "吐", "刀", "血", "伤害", "不想活", "饿", "挑战")


def keywords(text: str, context: list[str]) -> bool:
    return any(word in text for word in KEYWORDS)


def ours(text: str, context: list[str]) -> bool:
    return check(text, context).risk


def lexicon_only(text: str, context: list[str]) -> bool:
    return any(not hit.negated for hit in scan(text))


def measure(detector, items: list[dict], repeat: int) -> dict:
    times, flags = [], []
    for item in items:
        best = float("inf")
        for _ in range(repeat):  # best of N: the machine is shared, and we want the detector's own cost
            start = time.perf_counter()
            flagged = detector(item["text"], item.get("context", []))
            best = min(best, time.perf_counter() - start)
        times.append(best * 1000)
        flags.append(flagged)
    risky = [f for f, item in zip(flags, items, strict=True) if item["label"] == "risk"]
    benign = [f for f, item in zip(flags, items, strict=True) if item["label"] == "benign"]
    times.sort()
    return {"recall": sum(risky) / len(risky), "fpr": sum(benign) / len(benign),
            "p50": statistics.median(times), "p95": times[int(0.95 * (len(times) - 1))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, default=sorted(DATA.glob("redteam_*.jsonl")))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    items = [item for path in args.files for item in read_labelled(path)]
    check("热身")  # load lexicon and classifier outside the timings
    print(f"{len(items)} messages from {', '.join(p.name for p in args.files)}")
    results = {name: measure(fn, items, args.repeat)
               for name, fn in (("keywords", keywords), ("lexicon", lexicon_only), ("ours", ours))}
    if (head := available()) is not None:
        results["+head"] = measure(lambda text, context: check(text, context, head=head).risk, items, 1)
    print(f"{'detector':<10} {'recall':>7} {'FPR':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for name, r in results.items():
        print(f"{name:<10} {r['recall']:7.3f} {r['fpr']:7.3f} {r['p50']:8.3f} {r['p95']:8.3f}")
    base = results["keywords"]
    for name in ("ours", "+head")[: len(results) - 2]:
        mine = results[name]
        print(f"{name}/keywords: recall x{mine['recall'] / base['recall']:.2f}, "
              f"FPR x{mine['fpr'] / base['fpr']:.2f}, p50 latency x{mine['p50'] / base['p50']:.1f}")


if __name__ == "__main__":
    main()
