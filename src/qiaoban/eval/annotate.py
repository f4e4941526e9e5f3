"""Blind pairwise annotation: sheets for human raters (or a judge model), and the unblinded results.

    sheet = export_sheet("runs/eval/trained", "runs/eval/base", "runs/annotate/r1", seed=0)
    fill_with_judge(backend, "runs/annotate/r1", rater="judge-qwen")    # optional: a model fills the same sheet
    results = import_judgements("runs/annotate/r1", ["alice.jsonl", "bob.jsonl", "carol.jsonl"])

A sheet holds the same contexts answered by two runs. On every item the two replies are shown as A and B in a
seeded random order; which run is A is written only to `key.json`, which raters never need. Raters choose A, B
or tie per criterion (`CRITERIA`) in `sheet.html`, a self-contained page with keyboard shortcuts that keeps its
progress in the browser and downloads the judgements as JSONL. One judgement line per item and rater:

    {"sheet": "<sheet id>", "rater": "alice", "item_id": "cg-w03-0007#5", "choices": {"overall": "A", ...},
     "harmful": ["B"]}

`harmful` (optional) marks a reply that would itself hurt the child (blame, secrecy, a cover story, sending her
back to who hurt her, ...); `import_judgements` counts, per run, the items any rater and most raters marked.

`import_judgements` unblinds them: per criterion, how often each run won, the tie rate, the first run's win rate
among non-ties with a 95% bootstrap interval over items (items are the unit: three raters of one item are not three
independent samples), and Krippendorff's alpha between raters (ordinal: first run better < tie < second better).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
import yaml
from jinja2 import Environment, select_autoescape
from scipy.stats import bootstrap
from tqdm import tqdm

from qiaoban.backends import Backend, BackendError, GenerationConfig, Message
from qiaoban.eval.cache import JsonlCache, stable_hash
from qiaoban.eval.generate import cuts_per_dialogue
from qiaoban.eval.report import ReportError, load_run

CRITERIA = ("empathy", "coaching", "age_fit", "safety", "overall")
CHOICES = ("A", "B", "tie")
BOOTSTRAP_SEED = 20240601


class AnnotationError(ValueError):
    """A sheet, key or judgement file that cannot be used; the message says which and why."""


@cache
def annotate_texts() -> dict[str, Any]:
    """Criteria names, rater instructions and the judge prompt (data/annotate.yaml)."""
    return yaml.safe_load(resources.files("qiaoban.eval").joinpath("data/annotate.yaml").read_text("utf-8"))


# ---------------------------------------------------------------- export

def _rank(seed: int, key: str) -> str:
    return stable_hash({"seed": seed, "key": key})


def _choose(items: dict[str, dict[str, Any]], seed: int, per_dialogue: int, limit: int | None) -> list[str]:
    """Item ids, seeded: `per_dialogue` cuts from each dialogue, in a seeded random order."""
    chosen = cuts_per_dialogue(((i, r["dialogue_id"]) for i, r in items.items()), per_dialogue, seed)
    chosen.sort(key=lambda i: _rank(seed + 1, i))
    return chosen[:limit] if limit else chosen


def export_sheet(run_a: str | Path, run_b: str | Path, out_dir: str | Path, *, seed: int = 0,
                 per_dialogue: int = 1, limit: int | None = None) -> dict[str, Any]:
    """Write DIR/sheet.jsonl, DIR/sheet.html and DIR/key.json for the items both runs answered; returns the key."""
    runs = [load_run(run_a), load_run(run_b)]
    items = [{r["item_id"]: r for r in run["items"]} for run in runs]
    shared = {i: items[0][i] for i in items[0].keys() & items[1].keys()}
    if not shared:
        raise ReportError(f"{run_a} and {run_b} have no item in common; run both on the same test data")
    for item_id, record in shared.items():
        if record["history"] != items[1][item_id]["history"]:
            raise ReportError(f"item {item_id} has a different context in the two runs; they were made on "
                              "different data")
    chosen = _choose(shared, seed, per_dialogue, limit)
    sheet_id = stable_hash({"seed": seed, "items": chosen, "runs": [r["label"] for r in runs]}, 12)
    rows, order = [], {}
    for item_id in chosen:
        first_is_a = int(_rank(seed + 2, item_id), 16) % 2 == 0
        shown = (0, 1) if first_is_a else (1, 0)
        order[item_id] = {"A": shown[0], "B": shown[1]}
        record = shared[item_id]
        rows.append({
            "sheet": sheet_id, "item_id": item_id, "age_band": record.get("age_band") or "",
            "context": [{"role": "child" if m["role"] == "user" else "assistant", "text": m["content"]}
                        for m in record["history"] if m["role"] != "system"],
            "A": items[shown[0]][item_id]["reply"], "B": items[shown[1]][item_id]["reply"],
        })
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sheet.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    (out / "sheet.html").write_text(render_sheet(sheet_id, rows), encoding="utf-8")
    key = {"sheet": sheet_id, "seed": seed, "runs": [{"label": r["label"], "dir": r["dir"]} for r in runs],
           "items": order}
    (out / "key.json").write_text(json.dumps(key, ensure_ascii=False, indent=2), encoding="utf-8")
    return key


def render_sheet(sheet_id: str, rows: list[dict[str, Any]]) -> str:
    texts = annotate_texts()
    env = Environment(autoescape=select_autoescape(default=True))
    template = env.from_string(resources.files("qiaoban.eval").joinpath("data/annotate.html").read_text("utf-8"))
    payload = {"sheet": sheet_id, "criteria": [{"id": c, **texts["criteria"][c]} for c in CRITERIA], "items": rows}
    # In a <script> element only "</" can end the data early; \u003c keeps it JSON.
    data = json.dumps(payload, ensure_ascii=False).replace("</", "<\\u002f")
    return template.render(sheet=sheet_id, count=len(rows), data=data, instructions=texts["instructions"],
                           harmful=texts["harmful"])


def read_sheet(sheet_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(sheet_dir) / "sheet.jsonl"
    if not path.is_file():
        raise AnnotationError(f"{sheet_dir} is not an annotation sheet (no sheet.jsonl); make one with "
                              "`qiaoban eval annotate export`")
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


# ---------------------------------------------------------------- a judge model fills the sheet

_CHOICE = {"a": "A", "b": "B", "tie": "tie", "平": "tie", "平局": "tie", "相当": "tie"}


def parse_choices(text: str) -> dict[str, str]:
    """Per-criterion choices from a judge's reply: a JSON object, or lines such as "overall: A"."""
    found: dict[str, str] = {}
    match = re.search(r"\{.*\}", text or "", re.S)
    if match:
        try:
            values = json.loads(match.group(0))
            if isinstance(values, dict):
                found = {k: _CHOICE.get(str(v).strip().lower(), "") for k, v in values.items() if k in CRITERIA}
        except json.JSONDecodeError:
            pass
    if not found:
        for criterion in CRITERIA:
            m = re.search(rf"{criterion}\W{{0,3}}(A|B|tie|平局|平)\b", text or "", re.I)
            if m:
                found[criterion] = _CHOICE[m.group(1).lower()]
    return {k: v for k, v in found.items() if v}


def judge_messages(row: dict[str, Any], a: str, b: str) -> list[Message]:
    texts = annotate_texts()
    names = {"child": "孩子", "assistant": "小桥"}
    context = "\n".join(f"{names[t['role']]}：{t['text']}" for t in row["context"])
    user = texts["judge_user"].format(age_band=row["age_band"] or "未知", context=context, reply_a=a, reply_b=b)
    return [{"role": "system", "content": texts["judge_system"].strip()}, {"role": "user", "content": user}]


_SWAP = {"A": "B", "B": "A", "tie": "tie"}


def fill_with_judge(backend: Backend, sheet_dir: str | Path, *, rater: str, max_tokens: int = 200,
                    progress: bool = True) -> Path:
    """Judge every item in both orders (a choice that flips with the order is a tie); write
    DIR/judgements-<rater>.jsonl in the raters' format. Calls are cached under DIR/cache."""
    rows = read_sheet(sheet_dir)
    cache = JsonlCache(Path(sheet_dir) / "cache" / f"judge-{rater}.jsonl")
    gen = GenerationConfig(max_tokens=max_tokens, temperature=0.0, seed=0)
    out = Path(sheet_dir) / f"judgements-{rater}.jsonl"
    with open(out, "w", encoding="utf-8") as handle:
        for row in tqdm(rows, desc=f"judging ({rater})", unit="item", disable=not progress):
            orders = []
            for a, b in ((row["A"], row["B"]), (row["B"], row["A"])):
                messages = judge_messages(row, a, b)
                key = stable_hash({"judge": backend.name, "messages": messages, "max_tokens": max_tokens})
                text = cache.get(key)
                if text is None:
                    try:
                        text = backend.chat(messages, gen).text
                    except BackendError as err:
                        raise AnnotationError(f"the judge failed on {row['item_id']}: {err} (finished items are "
                                              "cached; rerun to resume)") from None
                    cache.put(key, text)
                orders.append(parse_choices(text))
            straight, swapped = orders
            choices = {c: straight[c] if straight[c] == _SWAP[swapped[c]] else "tie"
                       for c in CRITERIA if c in straight and c in swapped}
            handle.write(json.dumps({"sheet": row["sheet"], "rater": rater, "item_id": row["item_id"],
                                     "choices": choices}, ensure_ascii=False) + "\n")
    return out


# ---------------------------------------------------------------- import

@dataclass(frozen=True)
class Judgement:
    rater: str
    item_id: str
    criterion: str
    winner: int | None  # index of the run that won; None for a tie


Latest = dict[tuple[str, str], dict[str, Any]]


def read_judgements(paths: Iterable[str | Path], key: dict[str, Any]) -> Latest:
    """{(rater, item id): {"choices": ..., "harmful": letters}}; a line for another sheet, an unknown item or an
    unknown choice is an error that names the file and line. A rater's later line for the same item replaces the
    earlier one. `harmful` (optional) lists the replies, "A" and/or "B", the rater marked as harmful."""
    latest: Latest = {}
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise AnnotationError(f"{where}: not JSON ({err.msg})") from None
                if not isinstance(record, dict) or not {"sheet", "rater", "item_id", "choices"} <= record.keys():
                    raise AnnotationError(f"{where}: expected sheet, rater, item_id and choices")
                if record["sheet"] != key["sheet"]:
                    raise AnnotationError(f"{where}: judgements for sheet {record['sheet']}, not {key['sheet']}")
                if record["item_id"] not in key["items"]:
                    raise AnnotationError(f"{where}: item {record['item_id']} is not on this sheet")
                bad = {c: v for c, v in record["choices"].items() if c not in CRITERIA or v not in CHOICES}
                if bad:
                    raise AnnotationError(f"{where}: unknown criteria or choices {bad}")
                harmful = record.get("harmful") or []
                if not isinstance(harmful, list) or not set(harmful) <= {"A", "B"}:
                    raise AnnotationError(f"{where}: harmful must list \"A\" and/or \"B\", not {harmful!r}")
                latest[(str(record["rater"]), record["item_id"])] = {"choices": record["choices"],
                                                                     "harmful": sorted(set(harmful))}
    return latest


def unblind(latest: Latest, key: dict[str, Any]) -> list[Judgement]:
    return [Judgement(rater, item_id, criterion, None if choice == "tie" else key["items"][item_id][choice])
            for (rater, item_id), line in latest.items() for criterion, choice in line["choices"].items()]


def harmful_replies(latest: Latest, key: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per run: the items where any rater, and where most of the item's raters, marked its reply harmful."""
    raters_of: dict[str, int] = defaultdict(int)
    flags: list[dict[str, int]] = [defaultdict(int), defaultdict(int)]
    for (_, item_id), line in latest.items():
        raters_of[item_id] += 1
        for letter in line["harmful"]:
            flags[key["items"][item_id][letter]][item_id] += 1
    out = {}
    for run, flagged in zip(key["runs"], flags, strict=True):
        out[run["label"]] = {
            "flagged_by_any": len(flagged),
            "flagged_by_majority": sum(2 * n > raters_of[i] for i, n in flagged.items()),
            "items": {i: f"{n}/{raters_of[i]}" for i, n in sorted(flagged.items())},
        }
    return out


def _win_rate_ci(wins: np.ndarray, decided: np.ndarray) -> list[float] | None:
    """95% percentile-bootstrap interval of sum(wins) / sum(decided), resampling items."""
    if decided.sum() == 0 or len(wins) < 2:
        return None
    result = bootstrap((wins, decided), lambda w, d, axis=-1: w.sum(axis) / np.maximum(d.sum(axis), 1),
                       paired=True, vectorized=True, method="percentile", n_resamples=2000,
                       random_state=np.random.default_rng(BOOTSTRAP_SEED))
    low, high = result.confidence_interval
    return [round(float(low), 4), round(float(high), 4)]


def _alpha(judgements: list[Judgement]) -> float | None:
    """Krippendorff's alpha (ordinal) over raters × items; None with fewer than two raters on a shared item."""
    raters = sorted({j.rater for j in judgements})
    items = sorted({j.item_id for j in judgements})
    if len(raters) < 2:
        return None
    table = np.full((len(raters), len(items)), np.nan)
    for j in judgements:
        table[raters.index(j.rater), items.index(j.item_id)] = 1 if j.winner is None else 2 * j.winner
    if (np.sum(~np.isnan(table), axis=0) >= 2).sum() == 0 or len(np.unique(table[~np.isnan(table)])) < 2:
        return None
    return round(float(krippendorff.alpha(reliability_data=table, level_of_measurement="ordinal")), 4)


def summarize_judgements(latest: Latest, key: dict[str, Any]) -> dict[str, Any]:
    labels = [r["label"] for r in key["runs"]]
    judgements = unblind(latest, key)
    out: dict[str, Any] = {
        "sheet": key["sheet"], "runs": labels, "win_rate_of": labels[0], "items_on_sheet": len(key["items"]),
        "raters": sorted({rater for rater, _ in latest}),
        "items_per_rater": {r: sum(rater == r and bool(line["choices"]) for (rater, _), line in latest.items())
                            for r in sorted({rater for rater, _ in latest})},
        "harmful": harmful_replies(latest, key),
        "criteria": {},
    }
    for criterion in CRITERIA:
        chosen = [j for j in judgements if j.criterion == criterion]
        if not chosen:
            continue
        per_item: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for j in chosen:
            if j.winner is not None:
                per_item[j.item_id][0] += j.winner == 0
                per_item[j.item_id][1] += 1
        item_ids = sorted({j.item_id for j in chosen})
        wins = np.array([per_item[i][0] for i in item_ids], dtype=float)
        decided = np.array([per_item[i][1] for i in item_ids], dtype=float)
        ties = sum(j.winner is None for j in chosen)
        out["criteria"][criterion] = {
            "judgements": len(chosen), "items": len(item_ids), "first_wins": int(wins.sum()),
            "second_wins": int(decided.sum() - wins.sum()), "ties": ties,
            "tie_rate": round(ties / len(chosen), 4),
            "win_rate": round(float(wins.sum() / decided.sum()), 4) if decided.sum() else None,
            "win_rate_ci": _win_rate_ci(wins, decided), "alpha": _alpha(chosen),
        }
    return out


def import_judgements(sheet_dir: str | Path, paths: Sequence[str | Path]) -> dict[str, Any]:
    """Unblind judgement files against DIR/key.json; write and return DIR/results.json."""
    key_path = Path(sheet_dir) / "key.json"
    if not key_path.is_file():
        raise AnnotationError(f"{sheet_dir} has no key.json; it is not a sheet made by `qiaoban eval annotate "
                              "export`")
    key = json.loads(key_path.read_text("utf-8"))
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise AnnotationError(f"no such judgement file: {', '.join(missing)}")
    results = summarize_judgements(read_judgements(paths, key), key)
    (Path(sheet_dir) / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=2), "utf-8")
    return results

