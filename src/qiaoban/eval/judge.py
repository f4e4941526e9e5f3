"""An LLM judge: PICA's pointwise protocol (1-5 per dimension, n samples at a set temperature, mean of the valid
scores) with rubrics of our own, plus pairwise A-vs-B judged in both orders.

Every call is cached on disk under (judge model, prompt hash, temperature, sample index); outputs that carry no
usable score are counted as invalid, never dropped; transport errors are retried a bounded number of times and
then recorded as errors. Results are keyed by item id, never by position, so concurrent workers cannot write a
score next to the wrong item.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml
from tqdm import tqdm

from qiaoban.backends import Backend, BackendError, GenerationConfig, Message
from qiaoban.eval.cache import JsonlCache, stable_hash

PICA_DIMENSIONS = ("fluency", "consistency", "empathy")
OUR_DIMENSIONS = ("coaching", "child_appropriateness", "safety")
REPLY_DIMENSIONS = PICA_DIMENSIONS + OUR_DIMENSIONS
SCALE = (1, 5)


@cache
def rubrics() -> dict[str, Any]:
    return yaml.safe_load(resources.files("qiaoban.eval").joinpath("data/rubrics.yaml").read_text("utf-8"))


# ---------------------------------------------------------------- parsing

@dataclass(frozen=True)
class Parsed:
    score: float | None
    status: str  # ok | no_score | out_of_range | ambiguous


_CN_DIGITS = {"零": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10}
_NUM = r"(\d+(?:\.\d+)?)"
_LABEL = r"(?:评分|打分|得分|分数|总分|最终评分|score|rating|grade)"
_LABELLED = re.compile(_LABEL + r"\s*(?:是|为|[:=])?\s*" + _NUM + r"(?:\s*(?:-|~|到|至|或|or)\s*" + _NUM + r")?",
                       re.IGNORECASE)
_FRACTION = re.compile(_NUM + r"\s*(?:/|out of)\s*(\d+)", re.IGNORECASE)
_POINTS = re.compile(r"(?<![\d.])" + _NUM + r"\s*分(?!之)")
_CN_POINTS = re.compile(r"([一二两三四五六七八九十])\s*分(?!之)")
_BARE = re.compile(r"^\s*" + _NUM + r"\s*[.。!！]?\s*$")
_JSON_SCORE = re.compile(r'"(?:score|评分|分数)"\s*:\s*"?' + _NUM, re.IGNORECASE)


def _normalise(text: str) -> str:
    # NFKC folds full-width digits, colons and slashes to ASCII; markdown emphasis carries no meaning here.
    return re.sub(r"[*_`#]", "", unicodedata.normalize("NFKC", text))


def parse_score(text: str, scale: tuple[int, int] = SCALE) -> Parsed:
    """The one score a judge's output states, or why there is none.

    Looks for, in order: a JSON "score" field; a labelled score ("评分：4", "Score: 4."); a fraction ("4/5");
    "4分" / "四分"; a reply that is only a number. The first kind found decides: two different values of that
    kind, or a range ("3-4"), is ambiguous; a value off the scale or not a whole number is out of range.
    """
    text = _normalise(text or "")
    low, high = scale
    candidates: list[list[float]] = [
        [float(m) for m in _JSON_SCORE.findall(text)],
        [],
        [float(a) for a, b in _FRACTION.findall(text) if float(b) == high],
        [float(m) for m in _POINTS.findall(text)] + [float(_CN_DIGITS[m]) for m in _CN_POINTS.findall(text)],
        [float(m) for m in _BARE.findall(text)],
    ]
    for first, second in _LABELLED.findall(text):
        if second and float(second) != float(first):
            return Parsed(None, "ambiguous")
        candidates[1].append(float(first))
    off_scale = [float(a) for a, b in _FRACTION.findall(text) if float(b) != high]
    for values in candidates:
        if not values:
            continue
        if len(set(values)) > 1:
            return Parsed(None, "ambiguous")
        value = values[0]
        if value != int(value) or not low <= value <= high:
            return Parsed(None, "out_of_range")
        return Parsed(value, "ok")
    return Parsed(None, "out_of_range" if off_scale else "no_score")


_VERDICT = re.compile(r"(?:结论|判断|胜者|verdict|winner|better)\s*(?:是|为|[:=])?\s*(A|B|平|tie|平局)", re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from a pairwise judgement; None when absent or contradictory."""
    found = {m.upper() if m in "abAB" else "tie" for m in _VERDICT.findall(_normalise(text or ""))}
    if len(found) != 1:
        bare = _normalise(text or "").strip().upper()
        return {"A": "A", "B": "B", "平": "tie", "TIE": "tie"}.get(bare)
    return found.pop()


# ---------------------------------------------------------------- calling

@dataclass
class JudgeSettings:
    samples: int = 3
    temperature: float = 1.0
    max_tokens: int = 256
    seed: int = 0
    workers: int = 1


def render_context(history: list[Message]) -> str:
    names = {"user": "孩子", "assistant": "助手"}
    return "\n".join(f"{names.get(m['role'], m['role'])}：{m['content']}" for m in history if m["role"] != "system")


def pointwise_messages(dimension: str, context: str, reply: str) -> list[Message]:
    data = rubrics()
    user = data["pointwise_user"].format(rubric=data["dimensions"][dimension]["rubric"].strip(), context=context,
                                         reply=reply)
    return [{"role": "system", "content": data["pointwise_system"].strip()}, {"role": "user", "content": user}]


def dialogue_messages(dimension: str, card: str, dialogue: str) -> list[Message]:
    data = rubrics()
    user = data["dialogue_user"].format(rubric=data["dimensions"][dimension]["rubric"].strip(), card=card,
                                        dialogue=dialogue)
    return [{"role": "system", "content": data["pointwise_system"].strip()}, {"role": "user", "content": user}]


def pairwise_messages(context: str, reply_a: str, reply_b: str) -> list[Message]:
    data = rubrics()
    user = data["pairwise_user"].format(context=context, reply_a=reply_a, reply_b=reply_b)
    return [{"role": "system", "content": data["pairwise_system"].strip()}, {"role": "user", "content": user}]


class Judge:
    def __init__(self, backend: Backend, cache: JsonlCache, settings: JudgeSettings | None = None,
                 model_name: str | None = None):
        self.backend = backend
        self.cache = cache
        self.settings = settings or JudgeSettings()
        self.model = model_name or backend.name
        self.calls = 0  # real backend calls made (cache misses), errors included

    def sample(self, messages: list[Message], index: int) -> dict[str, Any]:
        """One judge output for (prompt, sample index): from the cache, or one call. Transport errors are retried by
        the backend's client alone (the OpenAI client: backoff, Retry-After), never again on top of it."""
        s = self.settings
        prompt_hash = stable_hash(messages)
        key = stable_hash({"judge": self.model, "prompt": prompt_hash, "temperature": s.temperature,
                           "max_tokens": s.max_tokens, "sample": index})
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        gen = GenerationConfig(max_tokens=s.max_tokens, temperature=s.temperature, seed=s.seed + index)
        self.calls += 1
        try:
            text = self.backend.chat(messages, gen).text
        except BackendError as err:
            # Not cached: a later run tries again. Counted as an error in this run's results.
            return {"text": None, "error": str(err), "prompt_hash": prompt_hash, "judge": self.model, "sample": index}
        record = {"text": text, "prompt_hash": prompt_hash, "judge": self.model, "sample": index}
        self.cache.put(key, record)
        return record

    def score(self, messages: list[Message]) -> dict[str, Any]:
        """n samples of one prompt -> mean of the valid scores, with every outcome counted."""
        outcomes = {"ok": 0, "no_score": 0, "out_of_range": 0, "ambiguous": 0, "error": 0}
        scores: list[float] = []
        prompt_hash = stable_hash(messages)
        for index in range(self.settings.samples):
            record = self.sample(messages, index)
            if record.get("text") is None:
                outcomes["error"] += 1
                continue
            parsed = parse_score(record["text"])
            outcomes[parsed.status] += 1
            if parsed.score is not None:
                scores.append(parsed.score)
        return {"mean": sum(scores) / len(scores) if scores else None, "scores": scores, "outcomes": outcomes,
                "prompt_hash": prompt_hash}

    def score_many(self, jobs: dict[str, list[Message]], desc: str = "judging") -> dict[str, dict[str, Any]]:
        """{job id: messages} -> {job id: score()}; with several workers the calls run concurrently."""
        ids = list(jobs)
        results: dict[str, dict[str, Any]] = {}

        def run(job_id: str) -> tuple[str, dict[str, Any]]:
            return job_id, self.score(jobs[job_id])

        with ThreadPoolExecutor(max_workers=max(1, self.settings.workers)) as pool:
            for job_id, result in tqdm(pool.map(run, ids), total=len(ids), desc=desc, unit="prompt"):
                results[job_id] = result
        return results

    def describe(self) -> dict[str, Any]:
        return {"judge_model": self.model, "samples": self.settings.samples,
                "temperature": self.settings.temperature, "rubrics_hash": stable_hash(rubrics())}


def judge_replies(judge: Judge, records: list[dict[str, Any]], dimensions: tuple[str, ...] = REPLY_DIMENSIONS,
                  history_of: Callable[[dict[str, Any]], str] | None = None) -> None:
    """Add `judge_<dim>` (mean), `judge_<dim>_outcomes` and `judge_<dim>_prompt` to each record, by item id."""
    history_of = history_of or (lambda r: render_context(r["history"]))
    jobs = {f"{r['item_id']}\x1f{dim}": pointwise_messages(dim, history_of(r), r["reply"])
            for r in records for dim in dimensions}
    results = judge.score_many(jobs)
    by_id = {r["item_id"]: r for r in records}
    for job_id, result in results.items():
        item_id, dim = job_id.split("\x1f")
        by_id[item_id][f"judge_{dim}"] = result["mean"]
        by_id[item_id][f"judge_{dim}_outcomes"] = result["outcomes"]
        by_id[item_id][f"judge_{dim}_prompt"] = result["prompt_hash"]


def pairwise(judge: Judge, contexts: dict[str, str], replies_a: dict[str, str], replies_b: dict[str, str]
             ) -> dict[str, Any]:
    """A vs B on every shared item, in both orders. A side wins an item only if it wins in both orders;
    a split decision (position bias) counts as a tie. Each order uses the judge's first sample."""
    shared = [i for i in contexts if i in replies_a and i in replies_b]
    one = replace(judge.settings, samples=1)
    solo = Judge(judge.backend, judge.cache, one, judge.model)
    per_item: dict[str, dict[str, Any]] = {}
    outcome_counts = {"A": 0, "B": 0, "tie": 0, "invalid": 0}
    consistent = 0
    for item_id in tqdm(shared, desc="pairwise", unit="item"):
        forward = solo.sample(pairwise_messages(contexts[item_id], replies_a[item_id], replies_b[item_id]), 0)
        backward = solo.sample(pairwise_messages(contexts[item_id], replies_b[item_id], replies_a[item_id]), 0)
        first = parse_verdict(forward.get("text") or "")
        second = {"A": "B", "B": "A", "tie": "tie"}.get(parse_verdict(backward.get("text") or "") or "")
        if first is None or second is None:
            outcome = "invalid"
        else:
            consistent += first == second
            outcome = first if first == second else "tie"
        outcome_counts[outcome] += 1
        per_item[item_id] = {"ab_order": first, "ba_order": second, "outcome": outcome}
    judge.calls += solo.calls
    valid = len(shared) - outcome_counts["invalid"]
    return {"items": per_item, "counts": outcome_counts, "n": len(shared),
            "win_rate_a": outcome_counts["A"] / valid if valid else None,
            "win_rate_b": outcome_counts["B"] / valid if valid else None,
            "position_consistency": consistent / valid if valid else None, **judge.describe()}
