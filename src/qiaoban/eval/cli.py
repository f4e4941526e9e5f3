"""`qiaoban eval`: score companion models, simulate children, compare runs in one report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from qiaoban.backends import BackendError, GenerationConfig, load_backend
from qiaoban.cli_errors import BAD_INPUT, FAILED, fail
from qiaoban.dialogue import Dialogue, DialogueFormatError

app = typer.Typer(
    help="\n\n".join([
        "Evaluate companion models and compare them.",
        "`run` answers every assistant turn of the test dialogues given the real history and scores the replies: "
        "reference perplexity, character BLEU/ROUGE-L, Distinct, length, questions, markdown, the coaching-strategy "
        "profile, and with --judge-* an LLM judge. `simulate` lets simulated children from scenario cards talk to "
        "the companion. `pairwise` compares two runs, judged in both orders. `report` writes one self-contained "
        "HTML page and report.json next to it.",
        "Every model and judge call is cached under DIR/cache: a rerun is free and a killed run resumes.",
        "Example: qiaoban eval run --model default --data dev.jsonl --out runs/eval/base --limit 10",
        "Example: qiaoban eval report runs/eval/base runs/eval/lora --out runs/eval/report.html",
    ]),
    no_args_is_help=True,
    add_completion=False,
)

ModelOpt = Annotated[str, typer.Option(help="Known model name (`qiaoban models`), GGUF path, or checkpoint dir.")]
AdapterOpt = Annotated[str | None, typer.Option(help=(
    "LoRA adapter (GGUF path or name; a dir for transformers); default: the model's default adapter in the "
    "registry (llama.cpp), `none` for the bare model."))]
BackendOpt = Annotated[str, typer.Option(help="llama | openai | transformers")]
BaseUrlOpt = Annotated[str | None, typer.Option(help="With --backend openai: the endpoint, e.g. http://127.0.0.1:8000/v1")]
JudgeUrlOpt = Annotated[str | None, typer.Option(help="OpenAI-compatible judge endpoint; enables the judge.")]
JudgeModelOpt = Annotated[str | None, typer.Option(
    help="Judge model: the name to request from --judge-base-url, or (without a URL) a local GGUF for llama.cpp.")]


def load_dialogues(path: Path, limit: int | None = None) -> list[Dialogue]:
    """Dialogue JSONL, or any corpus format `qiaoban data` imports (e.g. QiaoBan's child_chat_dev.json)."""
    from qiaoban.dialogue import read_jsonl

    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}", param_hint="--data")
    try:
        dialogues = read_jsonl(path) if path.suffix == ".jsonl" else _import(path)
    except (DialogueFormatError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="--data") from None
    if not dialogues:
        raise typer.BadParameter(f"{path} holds no dialogues", param_hint="--data")
    return dialogues[:limit] if limit else dialogues


def _import(path: Path) -> list[Dialogue]:
    try:
        from qiaoban.data import import_corpus
    except ImportError:
        raise ValueError(f"{path}: not Dialogue JSONL, and qiaoban.data (the corpus importer) is not installed") from None
    return list(import_corpus(path))


def _judge(out: Path, base_url: str | None, model: str | None, samples: int, temperature: float, workers: int):
    from qiaoban.eval.cache import JsonlCache
    from qiaoban.eval.judge import Judge, JudgeSettings

    if not base_url and not model:
        return None
    if base_url:
        backend = load_backend("openai", base_url=base_url, api_model=model or "default")
    else:
        backend = load_backend("llama", model=model)
        workers = 1  # one llama.cpp sequence
    settings = JudgeSettings(samples=samples, temperature=temperature, workers=workers)
    return Judge(backend, JsonlCache(out / "cache" / "judge.jsonl"), settings, model_name=model or backend.name)


@app.command()
def run(
    data: Annotated[Path, typer.Option(help="Test dialogues: Dialogue JSONL or a corpus file `qiaoban data` imports.")],
    out: Annotated[Path, typer.Option(help="Run directory (created); holds run.json, items.jsonl and the caches.")],
    model: ModelOpt = "default",
    adapter: AdapterOpt = None,
    backend: BackendOpt = "llama",
    base_url: BaseUrlOpt = None,
    label: Annotated[str | None, typer.Option(help="Name of this model in the report (default: the model's).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N dialogues.")] = None,
    per_dialogue: Annotated[int | None, typer.Option(help=(
        "Answer only N seeded cuts (child turns, openings included) of each dialogue instead of every turn; "
        "`eval annotate export --per-dialogue N` picks the same ones."))] = None,
    as_deployed: Annotated[bool, typer.Option("--as-deployed/--raw", help=(
        "Score replies after the chat's spoken-style filter (markdown stripped), as a child sees them; "
        "default: the raw model output."))] = False,
    through_engine: Annotated[bool, typer.Option("--through-engine", help=(
        "Answer through the whole chat engine (persona for the dialogue's meta.age_band, the safety guard on "
        "both sides, the engine's reply filters): what a child receives. For `eval annotate`."))] = False,
    safety: Annotated[bool, typer.Option(help="With --through-engine: the safety guard on (default).")] = True,
    max_tokens: Annotated[int, typer.Option(help="Longest generated reply.")] = 160,
    temperature: Annotated[float, typer.Option()] = 0.7,
    seed: Annotated[int, typer.Option(help="Sampling seed (a rerun reproduces the replies).")] = 0,
    ppl: Annotated[bool, typer.Option(help="Compute the perplexity of the references (llama/transformers).")] = True,
    ppl_context: Annotated[int, typer.Option(help="Context of the perplexity model (logits for every token).")] = 2048,
    judge_base_url: JudgeUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_samples: Annotated[int, typer.Option(help="Judge samples per item and dimension (PICA used 20).")] = 3,
    judge_temperature: Annotated[float, typer.Option(help="Judge sampling temperature (PICA used 2.0).")] = 1.0,
    judge_workers: Annotated[int, typer.Option(help="Concurrent judge calls (HTTP judges).")] = 4,
    judge_dims: Annotated[str, typer.Option(help="Comma-separated judge dimensions.")] = (
        "fluency,consistency,empathy,coaching,child_appropriateness,safety"),
    safety_data: Annotated[Path | None, typer.Option(help="Safety red-team test split for qiaoban.safety.run_bench.")] = None,
) -> None:
    """Generate replies for a test set and score them; results in OUT (see `qiaoban eval --help`)."""
    from qiaoban.eval.judge import REPLY_DIMENSIONS
    from qiaoban.eval.perplexity import scorer_for
    from qiaoban.eval.pipeline import run_eval
    from qiaoban.eval.simulate import make_guard
    from qiaoban.models import ModelError, choose_adapter

    dims = tuple(d.strip() for d in judge_dims.split(",") if d.strip())
    unknown = [d for d in dims if d not in REPLY_DIMENSIONS]
    if unknown:
        raise typer.BadParameter(f"unknown {', '.join(unknown)}; choose from {', '.join(REPLY_DIMENSIONS)}",
                                 param_hint="--judge-dims")
    dialogues = load_dialogues(data, limit)
    gen = GenerationConfig(max_tokens=max_tokens, temperature=temperature, top_p=0.9, top_k=40,
                           repeat_penalty=1.1, seed=seed)
    scorer = None
    try:
        adapter = choose_adapter(adapter, backend, model)
        llm = load_backend(backend, model=model, adapter=adapter, base_url=base_url, api_model=model)
        if ppl:
            scorer = scorer_for(llm, n_ctx=ppl_context)
        judge = _judge(out, judge_base_url, judge_model, judge_samples, judge_temperature, judge_workers)
        guard = make_guard()[0] if through_engine and safety else None
        result = run_eval(llm, dialogues, out, adapter=adapter, label=label, gen=gen, as_deployed=as_deployed,
                          through_engine=through_engine, guard=guard, scorer=scorer, judge=judge,
                          judge_dimensions=dims, safety_data=safety_data, data_path=data,
                          per_dialogue=per_dialogue)
    except (ModelError, BackendError) as err:
        fail(f"{err} (finished calls are cached in {out / 'cache'}; rerun to resume)", FAILED)
    finally:
        if scorer is not None:
            scorer.close()
    typer.echo(json.dumps(_headline(out), ensure_ascii=False, indent=2))
    typer.echo(f"{result['items']} replies from {result['dialogues']} dialogues in {out}")


def _headline(out: Path) -> dict:
    from qiaoban.eval.report import load_run, summarize

    summary = summarize(load_run(out))
    keys = ("model", "n_items", "ppl", "bleu4", "chrf", "rouge_l", "distinct1", "distinct2", "mean_reply_chars",
            "over_80_rate", "question_rate", "markdown_rate", "fluency", "consistency", "empathy", "coaching",
            "child_appropriateness", "safety")
    return {k: summary[k] for k in keys if k in summary}


@app.command()
def simulate(
    out: Annotated[Path, typer.Option(help="Run directory (may be the same as a `run` directory).")],
    model: ModelOpt = "default",
    adapter: AdapterOpt = None,
    backend: BackendOpt = "llama",
    base_url: BaseUrlOpt = None,
    label: Annotated[str | None, typer.Option(help="Name of this model in the report.")] = None,
    simulator_model: Annotated[str | None, typer.Option(
        help="Model that plays the child (name/GGUF for llama.cpp, or the name at --simulator-base-url); "
             "default: the companion's own model.")] = None,
    simulator_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint of the simulator.")] = None,
    cards: Annotated[str | None, typer.Option(help="Comma-separated scenario card ids (default: all).")] = None,
    turns: Annotated[int, typer.Option(help="Child messages per dialogue (K).")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Longest companion reply.")] = 160,
    child_max_tokens: Annotated[int, typer.Option(help="Longest simulated-child message.")] = 80,
    seed: Annotated[int, typer.Option(help="Sampling seed for both sides.")] = 0,
    safety: Annotated[bool, typer.Option(help="Use the safety guard in the companion when it is installed.")] = True,
    judge_base_url: JudgeUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_samples: Annotated[int, typer.Option()] = 3,
    judge_temperature: Annotated[float, typer.Option()] = 1.0,
) -> None:
    """Simulated children from scenario cards talk to the companion for K turns; each dialogue is checked."""
    from qiaoban.eval.cache import JsonlCache
    from qiaoban.eval.generate import model_id
    from qiaoban.eval.simulate import SIMULATOR_GENERATION, load_cards, make_guard, run_simulations
    from qiaoban.models import ModelError, choose_adapter

    try:
        chosen = load_cards([c.strip() for c in cards.split(",")] if cards else None)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--cards") from None
    out.mkdir(parents=True, exist_ok=True)
    try:
        adapter = choose_adapter(adapter, backend, model)
        companion = load_backend(backend, model=model, adapter=adapter, base_url=base_url, api_model=model)
        if simulator_base_url:
            simulator = load_backend("openai", base_url=simulator_base_url, api_model=simulator_model or "default")
        elif simulator_model and simulator_model != model:
            simulator = load_backend("llama", model=simulator_model)
        else:
            simulator = companion
        guard, guard_note = make_guard() if safety else (None, "disabled (--no-safety)")
        judge = _judge(out, judge_base_url, judge_model, judge_samples, judge_temperature, 4)
        records = run_simulations(companion, simulator, chosen, JsonlCache(out / "cache" / "simulation.jsonl"),
                                  turns=turns, judge=judge, guard=guard,
                                  companion_id={**model_id(companion, adapter), "guard": guard_note},
                                  companion_gen=GenerationConfig(max_tokens=max_tokens, temperature=0.7, seed=seed),
                                  simulator_gen=replace(SIMULATOR_GENERATION, max_tokens=child_max_tokens, seed=seed))
    except (ModelError, BackendError) as err:
        fail(f"{err} (finished calls are cached in {out / 'cache'}; rerun to resume)", FAILED)
    with open(out / "simulations.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    meta = {"label": label or companion.name, "simulator": simulator.name, "turns": turns, "guard": guard_note,
            "cards": [c["id"] for c in chosen], "judge": judge.describe() if judge else None}
    (out / "simulate.json").write_text(json.dumps(meta, ensure_ascii=False, indent=2), encoding="utf-8")
    for r in records:
        typer.echo(f"{r['card']}: risk check {r['risk_check']}; judge {r.get('judge')}")


@app.command()
def pairwise(
    run_a: Annotated[Path, typer.Argument(help="Run directory of model A.")],
    run_b: Annotated[Path, typer.Argument(help="Run directory of model B (same test data).")],
    out: Annotated[Path, typer.Option(help="Where to write the JSON result.")],
    judge_base_url: JudgeUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_temperature: Annotated[float, typer.Option()] = 0.0,
) -> None:
    """A vs B on the same items, judged in both orders; a split decision counts as a tie."""
    from qiaoban.eval.judge import pairwise as compare
    from qiaoban.eval.judge import render_context
    from qiaoban.eval.report import ReportError, load_run

    try:
        a, b = load_run(run_a), load_run(run_b)
    except ReportError as err:
        raise typer.BadParameter(str(err)) from None
    judge = _judge(out.parent, judge_base_url, judge_model, 1, judge_temperature, 1)
    if judge is None:
        raise typer.BadParameter("give --judge-base-url and/or --judge-model")
    contexts = {r["item_id"]: render_context(r["history"]) for r in a["items"]}
    result = compare(judge, contexts, {r["item_id"]: r["reply"] for r in a["items"]},
                     {r["item_id"]: r["reply"] for r in b["items"]})
    result.update(model_a=a["label"], model_b=b["label"])
    out.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    typer.echo(json.dumps({k: v for k, v in result.items() if k != "items"}, ensure_ascii=False, indent=2))


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to compare, side by side.")],
    out: Annotated[Path, typer.Option(help="The HTML file to write; report.json goes next to it.")] = Path(
        "report.html"),
    annotations: Annotated[list[Path] | None, typer.Option(
        "--annotations", help="A sheet directory whose judgements were imported (`eval annotate import`); "
                              "repeatable.")] = None,
) -> None:
    """One self-contained HTML page (tables, radar and length charts) and report.json, bootstrap CIs on means."""
    from qiaoban.eval.report import ReportError, write_report

    try:
        summary = write_report(runs, out, annotations=annotations or [])
    except ReportError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(f"wrote {out} and {out.parent / 'report.json'} ({len(summary['models'])} models)")


annotate_app = typer.Typer(
    help="\n\n".join([
        "Blind pairwise judgements of two runs on the same contexts, by people (or a judge model).",
        "`export` writes DIR/sheet.html (open it in a browser: A / B / tie per criterion, keyboard shortcuts, "
        "progress kept, a button downloads the judgements), DIR/sheet.jsonl, and DIR/key.json (which run is A on "
        "each item; keep it away from raters). `judge` lets an OpenAI-compatible model fill the same sheet. "
        "`import` unblinds the judgement files: win rate with a 95% bootstrap interval over items, tie rate, "
        "Krippendorff's alpha; DIR/results.json, shown by `eval report --annotations DIR`.",
        "Example: qiaoban eval run --data corpora/coach-gold/test.jsonl --through-engine --out runs/eval/base",
        "Example: qiaoban eval annotate export runs/eval/trained runs/eval/base --out runs/annotate/r1",
        "Example: qiaoban eval annotate import runs/annotate/r1 alice.jsonl bob.jsonl carol.jsonl",
    ]),
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(annotate_app, name="annotate")


@annotate_app.command("export")
def annotate_export(
    run_a: Annotated[Path, typer.Argument(help="Run directory of the first model (its win rate is reported).")],
    run_b: Annotated[Path, typer.Argument(help="Run directory of the second model, on the same test data.")],
    out: Annotated[Path, typer.Option(help="Sheet directory to write.")],
    seed: Annotated[int, typer.Option(help="Seed of the item choice and of the A/B order.")] = 0,
    per_dialogue: Annotated[int, typer.Option(help="Cuts (child turns) taken from each dialogue.")] = 1,
    limit: Annotated[int | None, typer.Option(help="At most this many items.")] = None,
) -> None:
    """Write a blind pairwise sheet (HTML and JSONL) and its key for the items both runs answered."""
    from qiaoban.eval.annotate import export_sheet
    from qiaoban.eval.report import ReportError

    try:
        key = export_sheet(run_a, run_b, out, seed=seed, per_dialogue=per_dialogue, limit=limit)
    except ReportError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(f"{out / 'sheet.html'}: {len(key['items'])} items (sheet {key['sheet']}); the key is "
               f"{out / 'key.json'}")


@annotate_app.command("judge")
def annotate_judge(
    sheet: Annotated[Path, typer.Argument(help="Sheet directory from `annotate export`.")],
    judge_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible judge endpoint.")] = None,
    judge_model: JudgeModelOpt = None,
    rater: Annotated[str | None, typer.Option(help="Rater name written to the judgements (default: the model).")] = None,
) -> None:
    """A judge model fills the sheet in both A/B orders (an order-dependent choice is a tie)."""
    from qiaoban.eval.annotate import AnnotationError, fill_with_judge
    from qiaoban.models import ModelError

    if not judge_base_url and not judge_model:
        raise typer.BadParameter("give --judge-base-url and/or --judge-model")
    try:
        llm = (load_backend("openai", base_url=judge_base_url, api_model=judge_model or "default") if judge_base_url
               else load_backend("llama", model=judge_model))
        path = fill_with_judge(llm, sheet, rater=rater or judge_model or llm.name)
    except (AnnotationError, ModelError, BackendError) as err:
        fail(str(err), BAD_INPUT if isinstance(err, AnnotationError) else FAILED)
    typer.echo(f"wrote {path}")


@annotate_app.command("import")
def annotate_import(
    sheet: Annotated[Path, typer.Argument(help="Sheet directory from `annotate export` (holds key.json).")],
    judgements: Annotated[list[Path], typer.Argument(help="Judgement JSONL files downloaded from the sheet.")],
) -> None:
    """Unblind the judgements: per criterion win rate (95% CI), tie rate, Krippendorff's alpha; results.json."""
    from qiaoban.eval.annotate import AnnotationError, import_judgements

    try:
        results = import_judgements(sheet, judgements)
    except AnnotationError as err:
        fail(str(err))
    typer.echo(json.dumps(results, ensure_ascii=False, indent=2))
