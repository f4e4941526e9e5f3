"""Near-duplicate removal on Chinese dialogues: speed and recall of qiaoban's MinHash-LSH index.

Corpus: the public counselling corpora (../shared/data) cut into disjoint 4-turn pieces, up to --n texts, plus
--planted near-duplicates of random pieces (punctuation changed, a few characters swapped or dropped: what a
teacher model's re-run looks like). Compared in one run:

- ours:        NearDuplicateIndex (character 3-gram MinHash, LSH bands), one insert per text;
- brute force: exact character 3-gram Jaccard against every stored text (the baseline without LSH), timed on
               the first --brute texts, for the speed ratio and as ground truth for precision;
- word shingles: exact Jaccard over whitespace-separated words, the English habit that never fires on
               Chinese, for recall on the planted pairs.

    .venv/bin/python bench/dedup_throughput.py [--n 50000] [--planted 1000] [--brute 2000]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from qiaoban.data import NearDuplicateIndex, import_corpus, normalize_text

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPORA = ["smilechat/smilechat_00.jsonl", "cpsycoun/CPsyCounD.jsonl", "emollm/data.json",
           "qiaoban/child_chat_dev.json"]


def pieces(limit: int) -> list[tuple[str, str]]:
    out = []
    for rel in CORPORA:
        for d in import_corpus(SHARED / rel):
            for start in range(0, len(d.turns) - 3, 4):
                out.append((f"{d.source}:{d.id}:{start}", "\n".join(t.text for t in d.turns[start:start + 4])))
                if len(out) >= limit:
                    return out
    return out


def perturb(text: str, rng: random.Random) -> str:
    chars = list(text.replace("，", ",").replace("。", "！"))
    for _ in range(max(1, len(chars) // 60)):  # about 1.5% of the characters changed
        i = rng.randrange(len(chars))
        if rng.random() < 0.5:
            del chars[i]
        else:
            chars[i] = rng.choice("的了是我你他很也都")
    return "".join(chars)


def shingles(text: str, n: int = 3) -> set[str]:
    norm = normalize_text(text)
    return {norm[i:i + n] for i in range(max(1, len(norm) - n + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--planted", type=int, default=1000)
    parser.add_argument("--brute", type=int, default=2000)
    parser.add_argument("--threshold", type=float, default=0.85)
    args = parser.parse_args()

    rng = random.Random(0)
    base = pieces(args.n - args.planted)
    originals = rng.sample(range(len(base)), args.planted)
    planted = {f"planted:{i}": base[i][0] for i in originals}
    texts = base + [(f"planted:{i}", perturb(base[i][1], rng)) for i in originals]
    rng.shuffle(texts)
    print(f"{len(texts)} texts ({len(base)} corpus pieces, {args.planted} planted near-duplicates), "
          f"mean {sum(len(t) for _, t in texts) / len(texts):.0f} characters")

    index = NearDuplicateIndex(threshold=args.threshold)
    started, cpu_started = time.perf_counter(), time.process_time()
    found = {key: twin for key, text in texts if (twin := index.add(key, text)) is not None}
    ours_s, ours_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print(f"ours: {len(texts) / ours_s:,.0f} inserts/s wall ({ours_s:.1f} s for {len(texts)}; "
          f"{len(texts) / ours_cpu:,.0f}/s of CPU time), {len(found)} duplicates, "
          f"{index.bands} bands x {index.rows} rows")

    # A planted copy may be inserted before its original; then the original is the one reported.
    hits = sum(1 for key, orig in planted.items() if found.get(key) == orig or found.get(orig) == key)
    text_of = dict(texts)
    true_sims = [jaccard(shingles(text_of[k]), shingles(text_of[v])) for k, v in planted.items()]
    eligible = sum(s >= args.threshold for s in true_sims)
    print(f"recall on planted pairs: {hits}/{args.planted} ({hits / args.planted:.1%}); "
          f"{eligible} of them have exact 3-gram Jaccard >= {args.threshold}")
    flagged_sims = [jaccard(shingles(text_of[k]), shingles(text_of[v])) for k, v in found.items()]
    above = sum(s >= args.threshold for s in flagged_sims)
    near = sum(s >= args.threshold - 0.1 for s in flagged_sims)
    print(f"precision: of {len(found)} flagged pairs, {above} have exact Jaccard >= {args.threshold} and {near} "
          f">= {args.threshold - 0.1:.2f} (min {min(flagged_sims, default=1):.3f})")

    words = sum(jaccard(set(text_of[k].split()), set(text_of[v].split())) >= args.threshold
                for k, v in planted.items())
    print(f"word-shingle baseline recall on planted pairs: {words}/{args.planted} ({words / args.planted:.1%})")

    subset = texts[: args.brute]
    started = time.perf_counter()
    stored: list[set[str]] = []
    brute_found = 0
    for _, text in subset:
        s = shingles(text)
        if any(jaccard(s, other) >= args.threshold for other in stored):
            brute_found += 1
        else:
            stored.append(s)
    brute_s = time.perf_counter() - started
    small = NearDuplicateIndex(threshold=args.threshold)
    started = time.perf_counter()
    small_found = sum(small.add(k, t) is not None for k, t in subset)
    small_s = time.perf_counter() - started
    print(f"first {len(subset)}: brute force {len(subset) / brute_s:,.0f} inserts/s ({brute_found} duplicates), "
          f"ours {len(subset) / small_s:,.0f} inserts/s ({small_found} duplicates); "
          f"speed ratio {brute_s / small_s:.1f}x (brute force is O(n) per insert, so the gap grows with n)")


if __name__ == "__main__":
    main()
