"""Compare evaluation runs: a JSON summary and one self-contained HTML page (inline CSS and SVG, no network).

Every mean comes with a seeded percentile-bootstrap 95% interval over items (replies, or simulated dialogues);
perplexity (exp(total NLL / total tokens)) is recomputed on each resample of the items. Distinct-n is not a
mean, and a bootstrap resample repeats replies, which repeats their n-grams and biases it down; its interval is
the jackknife's (leave one reply out), estimate ± 1.96 standard errors.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup
from scipy import stats

from qiaoban.eval.judge import REPLY_DIMENSIONS, rubrics
from qiaoban.eval.metrics import LONG_REPLY_CHARS, STRATEGIES, chars, distinct, ngrams
from qiaoban.eval.perplexity import perplexity

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 20240601
# per-item field -> summary key
MEAN_FIELDS = {
    "bleu1": "bleu1", "bleu2": "bleu2", "bleu4": "bleu4", "chrf": "chrf", "rouge_l": "rouge_l",
    "reply_chars": "mean_reply_chars", "over_80": "over_80_rate", "question": "question_rate",
    "markdown": "markdown_rate", **{f"strategy_{s}": f"strategy_{s}" for s in STRATEGIES},
}
LABELS = {
    "ppl": "困惑度 perplexity of references ↓", "bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu4": "BLEU-4",
    "chrf": "chrF", "rouge_l": "ROUGE-L", "distinct1": "Distinct-1", "distinct2": "Distinct-2",
    "mean_reply_chars": "reply length (chars)", "over_80_rate": f"share over {LONG_REPLY_CHARS} chars ↓",
    "question_rate": "question rate", "markdown_rate": "markdown/list rate ↓",
    **{f"strategy_{s}": f"strategy: {s}" for s in STRATEGIES},
}


class ReportError(ValueError):
    """A directory that is not an evaluation run."""


def bootstrap_ci(values: Sequence[Any], statistic: Callable[[list[Any]], float], *,
                 resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """95% percentile interval of `statistic` over resamples of `values` (with replacement), by
    `scipy.stats.bootstrap`; tuples in `values` are resampled whole."""
    values = list(values)
    if len(values) < 2:
        return None
    index = np.arange(len(values))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate resample distribution (all equal) is fine here
        result = stats.bootstrap((index,), lambda idx: statistic([values[i] for i in idx]), vectorized=False,
                                 n_resamples=resamples, method="percentile", random_state=seed)
    low, high = result.confidence_interval
    if math.isnan(low) or math.isnan(high):
        return None
    return [round(float(low), 4), round(float(high), 4)]


def paired_differences(baseline: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Mean per-item difference other - baseline for each metric, over the items both runs answered (same
    dialogue and turn), with a paired bootstrap 95% interval: the right test for two systems on one test set."""
    def keyed(loaded: dict[str, Any]) -> dict[tuple[str, Any], dict[str, Any]]:
        return {(r["dialogue_id"], r.get("turn")): r for r in loaded["items"]}

    base, mine = keyed(baseline), keyed(other)
    shared = sorted(set(base) & set(mine), key=str)
    out: dict[str, Any] = {"model": other["label"], "baseline": baseline["label"], "n_shared": len(shared)}
    for field, key in MEAN_FIELDS.items():
        diffs = [float(mine[k][field]) - float(base[k][field]) for k in shared
                 if field in mine[k] and field in base[k]]
        out[key] = round(_mean(diffs), 4) if diffs else None
        out[f"{key}_ci"] = bootstrap_ci(diffs, _mean) if diffs else None
    return out


def distinct_jackknife_ci(replies: Sequence[str], n: int) -> list[float] | None:
    """95% interval of corpus Distinct-n from the leave-one-reply-out jackknife, in O(total n-grams)."""
    if len(replies) < 2:
        return None
    per_reply = [ngrams(chars(r), n) for r in replies]
    grams: Counter[tuple[str, ...]] = Counter()
    for counts in per_reply:
        grams.update(counts)
    unique, total = len(grams), sum(grams.values())
    if not total:
        return None
    estimate = unique / total
    leave_one_out = []
    for counts in per_reply:
        rest_total = total - sum(counts.values())
        vanished = sum(1 for gram, c in counts.items() if grams[gram] == c)
        leave_one_out.append((unique - vanished) / rest_total if rest_total else estimate)
    k = len(leave_one_out)
    mean = sum(leave_one_out) / k
    error = math.sqrt((k - 1) / k * sum((x - mean) ** 2 for x in leave_one_out))
    return [round(estimate - 1.96 * error, 4), round(estimate + 1.96 * error, 4)]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def _with_ci(summary: dict[str, Any], key: str, values: list[Any], statistic: Callable[[list[Any]], float]) -> None:
    value = statistic(values) if values else float("nan")
    summary[key] = None if math.isnan(value) else round(value, 4)
    summary[f"{key}_ci"] = bootstrap_ci(values, statistic) if values else None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def load_run(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run_file, sims_file = run_dir / "run.json", run_dir / "simulations.jsonl"
    if not run_file.is_file() and not sims_file.is_file():
        raise ReportError(f"{run_dir} is not an evaluation run (no run.json or simulations.jsonl); "
                          "make one with `qiaoban eval run` or `qiaoban eval simulate`")
    run = json.loads(run_file.read_text("utf-8")) if run_file.is_file() else {}
    sim_meta_file = run_dir / "simulate.json"
    sim_meta = json.loads(sim_meta_file.read_text("utf-8")) if sim_meta_file.is_file() else {}
    safety_file = run_dir / "safety.json"
    return {
        "dir": str(run_dir), "run": run, "items": _read_jsonl(run_dir / "items.jsonl"),
        "simulations": _read_jsonl(sims_file), "simulate": sim_meta,
        "safety": json.loads(safety_file.read_text("utf-8")) if safety_file.is_file() else None,
        "label": run.get("label") or sim_meta.get("label") or run_dir.name,
    }


def summarize(loaded: dict[str, Any]) -> dict[str, Any]:
    """One flat object per model: every metric, with `<key>_ci: [lo, hi]` next to it."""
    items, run = loaded["items"], loaded["run"]
    summary: dict[str, Any] = {"model": loaded["label"], "dir": loaded["dir"], "n_items": len(items),
                               "n_dialogues": len({r["dialogue_id"] for r in items}), "style": run.get("style")}
    scored = [(r["ref_nll"], r["ref_tokens"]) for r in items if r.get("ref_tokens")]
    if scored:
        _with_ci(summary, "ppl", scored, lambda xs: perplexity(sum(x[0] for x in xs), sum(x[1] for x in xs)))
    else:
        summary["ppl"], summary["ppl_ci"] = None, None
    for field, key in MEAN_FIELDS.items():
        _with_ci(summary, key, [float(r[field]) for r in items if field in r], _mean)
    replies = [r["reply"] for r in items]
    for n in (1, 2):
        summary[f"distinct{n}"] = round(distinct(replies, n), 4) if replies else None
        summary[f"distinct{n}_ci"] = distinct_jackknife_ci(replies, n)
    judge = run.get("judge")
    if judge:
        summary.update(judge_model=judge["judge_model"], judge_samples=judge["samples"],
                       judge_temperature=judge["temperature"], judge_rubrics_hash=judge["rubrics_hash"])
        outcomes: dict[str, dict[str, int]] = {}
        for dim in judge["dimensions"]:
            _with_ci(summary, dim, [r[f"judge_{dim}"] for r in items if r.get(f"judge_{dim}") is not None], _mean)
            totals: dict[str, int] = {}
            for r in items:
                for status, count in (r.get(f"judge_{dim}_outcomes") or {}).items():
                    totals[status] = totals.get(status, 0) + count
            outcomes[dim] = totals
            summary[f"{dim}_items_without_valid_score"] = sum(
                1 for r in items if f"judge_{dim}" in r and r[f"judge_{dim}"] is None)
        summary["judge_outcomes"] = outcomes
    sims = loaded["simulations"]
    if sims:
        summary["simulation"] = _simulation_summary(sims, loaded["simulate"])
    if loaded["safety"] is not None:
        summary["safety_bench"] = loaded["safety"]
    return summary


def _simulation_summary(sims: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_dialogues": len(sims), "turns": meta.get("turns"),
                           "simulator": meta.get("simulator"), "guard": meta.get("guard")}
    checks = [s["risk_check"] for s in sims if s.get("risk_check")]
    for key in ("handled", "trusted_adult", "help_line", "not_your_fault", "no_blame", "no_unsafe_referral"):
        _with_ci(out, f"risk_{key}_rate", [float(c[key]) for c in checks], _mean)
    dims = sorted({d for s in sims for d in (s.get("judge") or {})})
    for dim in dims:
        _with_ci(out, dim, [s["judge"][dim] for s in sims if (s.get("judge") or {}).get(dim) is not None], _mean)
    return out


def build_report(run_dirs: Sequence[str | Path]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    loaded = [load_run(d) for d in run_dirs]
    summary = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "intervals": {"level": 0.95, "means_and_ppl": f"percentile bootstrap over items (scipy), "
                      f"{BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}",
                      "paired": "differences to the first run over shared items, paired bootstrap", "distinct": "jackknife (leave one reply out), ±1.96 SE"},
        "models": [summarize(x) for x in loaded],
        "paired": [paired_differences(loaded[0], x) for x in loaded[1:]],
    }
    return summary, loaded


def load_annotations(sheet_dir: str | Path) -> dict[str, Any]:
    """DIR/results.json of a blind pairwise sheet (`qiaoban eval annotate import`)."""
    path = Path(sheet_dir) / "results.json"
    if not path.is_file():
        raise ReportError(f"{sheet_dir} has no results.json; run `qiaoban eval annotate import` on it first")
    return json.loads(path.read_text("utf-8"))


def write_report(run_dirs: Sequence[str | Path], out_html: str | Path,
                 annotations: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Write OUT.html and report.json next to it; returns the JSON summary. `annotations`: sheet directories
    whose blind pairwise judgements were imported."""
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    summary, loaded = build_report(run_dirs)
    summary["annotations"] = [load_annotations(d) for d in annotations]
    (out_html.parent / "report.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), "utf-8")
    out_html.write_text(render_html(summary, loaded), "utf-8")
    return summary


# ---------------------------------------------------------------- HTML

EXAMPLES = 12  # example rows in the report
COLORS = ("#2f6fdd", "#e0662b", "#2a9d5b", "#b23ab5", "#c9a227", "#1aa3a3", "#8a5a44", "#555555")


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(autoescape=True, trim_blocks=False, undefined=jinja2.StrictUndefined)
    env.policies["json.dumps_kwargs"] = {"ensure_ascii": False}
    env.filters["has_value"] = lambda rows, key: any(row.get(key) is not None for row in rows)
    return env.from_string(resources.files("qiaoban.eval").joinpath("data/report.html.j2").read_text("utf-8"))


def _e(value: Any) -> str:
    return html.escape(str(value))


def radar_svg(axes: list[str], series: list[list[float | None]], low: float, high: float, size: int = 360) -> str:
    """A radar chart: one polygon per series, values scaled from [low, high] to the radius."""
    center, radius = size / 2, size / 2 - 70
    n = len(axes)

    def point(i: int, fraction: float) -> tuple[float, float]:
        angle = -math.pi / 2 + 2 * math.pi * i / n
        return center + radius * fraction * math.cos(angle), center + radius * fraction * math.sin(angle)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" viewBox="0 0 {size} {size}" '
             f'role="img">']
    for level in (0.25, 0.5, 0.75, 1.0):
        ring = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, level) for i in range(n)))
        parts.append(f'<polygon points="{ring}" fill="none" stroke="#ddd"/>')
    for i, axis in enumerate(axes):
        x, y = point(i, 1.0)
        lx, ly = point(i, 1.18)
        parts.append(f'<line x1="{center}" y1="{center}" x2="{x:.1f}" y2="{y:.1f}" stroke="#ccc"/>')
        parts.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="11" text-anchor="middle" '
                     f'dominant-baseline="middle">{_e(axis)}</text>')
    for s, values in enumerate(series):
        color = COLORS[s % len(COLORS)]
        fractions = [0.0 if v is None else min(max((v - low) / (high - low), 0.0), 1.0) for v in values]
        poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(i, f) for i, f in enumerate(fractions)))
        parts.append(f'<polygon points="{poly}" fill="{color}" fill-opacity="0.15" stroke="{color}" '
                     'stroke-width="2"/>')
    parts.append(f'<text x="4" y="{size - 6}" font-size="10" fill="#777">scale {low:g}–{high:g}</text></svg>')
    return "".join(parts)


def histogram_svg(lengths: list[float], color: str, title: str, bin_width: int = 10, max_chars: int = 200,
                  width: int = 360, height: int = 180) -> str:
    """Reply lengths in bins of `bin_width` characters; the last bin collects everything longer."""
    bins = [0] * (max_chars // bin_width + 1)
    for length in lengths:
        bins[min(int(length) // bin_width, len(bins) - 1)] += 1
    top = max(bins) or 1
    left, bottom, plot_h = 30, height - 30, height - 55
    bar_w = (width - left - 10) / len(bins)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">',
             f'<text x="{left}" y="14" font-size="12">{_e(title)}</text>']
    for i, count in enumerate(bins):
        h = plot_h * count / top
        parts.append(f'<rect x="{left + i * bar_w:.1f}" y="{bottom - h:.1f}" width="{bar_w - 1:.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{i * bin_width}–{(i + 1) * bin_width - 1}: '
                     f'{count}</title></rect>')
    limit_x = left + LONG_REPLY_CHARS / bin_width * bar_w
    parts.append(f'<line x1="{limit_x:.1f}" y1="{bottom - plot_h}" x2="{limit_x:.1f}" y2="{bottom}" '
                 'stroke="#c00" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{limit_x + 3:.1f}" y="{bottom - plot_h + 10}" font-size="10" fill="#c00">'
                 f'{LONG_REPLY_CHARS}</text>')
    for tick in range(0, max_chars + 1, 50):
        x = left + tick / bin_width * bar_w
        parts.append(f'<text x="{x:.1f}" y="{bottom + 14}" font-size="10" text-anchor="middle">{tick}</text>')
    parts.append(f'<text x="4" y="{bottom - plot_h + 4}" font-size="10">{top}</text>'
                 f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#999"/></svg>')
    return "".join(parts)


def render_html(summary: dict[str, Any], loaded: list[dict[str, Any]]) -> str:
    models = summary["models"]
    dim_names = {d: v["name"] for d, v in rubrics()["dimensions"].items()}
    judge_dims = [d for d in REPLY_DIMENSIONS if any(m.get(d) is not None for m in models)]
    strategy_keys = [f"strategy_{s}" for s in STRATEGIES]
    histograms = [histogram_svg([r["reply_chars"] for r in x["items"]], COLORS[i % len(COLORS)],
                                f"{x['label']} (n={len(x['items'])})") for i, x in enumerate(loaded)]
    references = [len("".join(r["reference"].split())) for r in (loaded[0]["items"] if loaded else [])]
    if references:
        histograms.append(histogram_svg(references, "#999", f"reference replies (n={len(references)})"))
    examples = []
    if loaded and loaded[0]["items"]:
        by_model = [{r["item_id"]: r for r in x["items"]} for x in loaded]
        examples = [{"child": item["history"][-1]["content"] if item.get("history") else "",
                     "reference": item["reference"],
                     "replies": [m.get(item["item_id"], {}).get("reply", "—") for m in by_model]}
                    for item in loaded[0]["items"][:EXAMPLES]]
    return _template().render(
        summary=summary, models=models, runs=list(zip(models, loaded, strict=True)), labels=LABELS, colors=COLORS,
        resamples=BOOTSTRAP_RESAMPLES, seed=BOOTSTRAP_SEED,
        judged=[m for m in models if m.get("judge_model")], judge_dims=judge_dims,
        judge_labels={d: f"{dim_names[d]} ({d})" for d in judge_dims},
        judge_radar=Markup(radar_svg([dim_names[d] for d in judge_dims], [[m.get(d) for d in judge_dims] for m in models],
                                     1, 5)),
        strategy_keys=strategy_keys,
        strategy_radar=Markup(radar_svg(list(STRATEGIES), [[m.get(k) for k in strategy_keys] for m in models], 0, 1)),
        histograms=[Markup(h) for h in histograms],
        simulated=[(m, x) for m, x in zip(models, loaded, strict=True) if x["simulations"]],
        examples=examples,
    )
