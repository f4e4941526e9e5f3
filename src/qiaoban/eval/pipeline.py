"""`run_eval`: generation, perplexity, metrics, judge and safety score for one model, written to one directory.

    DIR/run.json          what was run: model, adapter, backend, data, generation settings, style, judge, counts
    DIR/items.jsonl       one line per scored assistant turn: reference, reply, every per-item metric and score
    DIR/safety.json       the safety benchmark's result, or a note saying why there is none
    DIR/cache/*.jsonl     every model and judge call, so a rerun is free and a killed run resumes
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qiaoban.backends import Backend, GenerationConfig
from qiaoban.chat import Guard, Persona
from qiaoban.dialogue import Dialogue
from qiaoban.eval.cache import JsonlCache, stable_hash
from qiaoban.eval.generate import EVAL_GENERATION, cuts_per_dialogue, eval_items, generate_replies, model_id
from qiaoban.eval.judge import REPLY_DIMENSIONS, Judge, judge_replies
from qiaoban.eval.metrics import reference_scores, reply_stats
from qiaoban.eval.perplexity import Scorer, reference_nll


def run_eval(
    backend: Backend,
    dialogues: list[Dialogue],
    out_dir: str | Path,
    *,
    adapter: str | None = None,
    label: str | None = None,
    gen: GenerationConfig = EVAL_GENERATION,
    as_deployed: bool = False,
    through_engine: bool = False,
    guard: Guard | None = None,
    scorer: Scorer | None = None,
    judge: Judge | None = None,
    judge_dimensions: tuple[str, ...] = REPLY_DIMENSIONS,
    safety_data: str | Path | None = None,
    data_path: str | Path | None = None,
    system_prompt: str | None = None,
    per_dialogue: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate one model on `dialogues`; returns the run description written to DIR/run.json.

    `per_dialogue` answers only that many seeded cuts of each dialogue (`cuts_per_dialogue`) instead of every
    assistant turn.

    `system_prompt` defaults to the companion's (`Persona().system_prompt()`), as deployed. `through_engine`
    answers every item through the chat engine (persona per age band, `guard` on both sides), as a child would
    receive it.
    """
    out = Path(out_dir)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    system_prompt = system_prompt or Persona().system_prompt(short=backend.profile.short_prompt)
    started = time.time()
    items = list(eval_items(dialogues))
    if per_dialogue:
        kept = set(cuts_per_dialogue(((item.item_id, item.dialogue_id) for item in items), per_dialogue))
        items = [item for item in items if item.item_id in kept]
    records = generate_replies(backend, items, JsonlCache(out / "cache" / "generations.jsonl"), adapter=adapter,
                               gen=gen, system_prompt=system_prompt, as_deployed=as_deployed,
                               through_engine=through_engine, guard=guard, progress=progress)
    for record in records:
        record.update(reference_scores(record["reply"], record["reference"]))
        record.update(reply_stats(record["reply"]))
    if scorer is not None:
        nll = reference_nll(scorer, dialogues, JsonlCache(out / "cache" / "perplexity.jsonl"),
                            model_key=model_id(backend, adapter), system_prompt=system_prompt, progress=progress)
        for record in records:
            scored = nll.get(record["item_id"])
            record["ref_nll"], record["ref_tokens"] = (scored["nll"], scored["tokens"]) if scored else (None, 0)
    if judge is not None:
        judge_replies(judge, records, judge_dimensions)
    with open(out / "items.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    safety = safety_score(safety_data)
    (out / "safety.json").write_text(json.dumps(safety, ensure_ascii=False, indent=2), encoding="utf-8")
    run = {
        "label": label or backend.name,
        "model": model_id(backend, adapter),
        "data": str(data_path) if data_path else None,
        "dialogues": len(dialogues),
        "items": len(records),
        "unscored_assistant_turns": sum(t.role == "assistant" for d in dialogues for t in d.turns) - len(records),
        "cuts_per_dialogue": per_dialogue or "all",
        "generation": {k: v for k, v in asdict(gen).items() if k != "timeout_s"},
        "style": _style(as_deployed, through_engine, guard),
        "system_prompt_hash": stable_hash(system_prompt),
        "perplexity": "computed" if scorer is not None else "not available for this backend (no logits)",
        "judge": {**judge.describe(), "dimensions": list(judge_dimensions), "calls": judge.calls} if judge else None,
        "seconds": round(time.time() - started, 1),
    }
    (out / "run.json").write_text(json.dumps(run, ensure_ascii=False, indent=2), encoding="utf-8")
    return run


def _style(as_deployed: bool, through_engine: bool, guard: Guard | None) -> str:
    if through_engine:
        return f"through the chat engine ({'guard: ' + type(guard).__name__ if guard else 'no guard'})"
    return "spoken (as deployed: qiaoban.chat.style.spoken applied)" if as_deployed else "raw model output"


def safety_score(path: str | Path | None) -> dict[str, Any]:
    """`qiaoban.safety.run_bench` on the red-team test split, or a note saying why it did not run."""
    try:
        from qiaoban.safety import run_bench
    except ImportError as err:
        return {"available": False, "note": f"qiaoban.safety.run_bench is not importable: {err}"}
    if path is None:
        return {"available": False, "note": "no safety test split given (--safety-data PATH)"}
    try:
        return {"available": True, "data": str(path), **run_bench(path)}
    except Exception as err:  # noqa: BLE001 - a failing benchmark must not lose the rest of the evaluation
        return {"available": False, "note": f"run_bench({path}) failed: {type(err).__name__}: {err}"}
