"""`qiaoban safety`: screen messages, measure the detector, rebuild the classifier and the head."""

from __future__ import annotations

import json
import sys
from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from qiaoban.cli_errors import fail
from qiaoban.dialogue import DialogueFormatError
from qiaoban.models import DEFAULT_MODEL, ModelError
from qiaoban.safety import classifier, head, reply_head
from qiaoban.safety.bench import cross_validate, run_bench
from qiaoban.safety.classifier import BENIGN_WEIGHT, DEFAULT_MAX_ITER, DEFAULT_PER_LABEL, DEFAULT_SEED
from qiaoban.safety.detect import check as screen
from qiaoban.safety.labelled import LabelledFormatError, read_labelled

app = typer.Typer(
    help="""Child safety: screen what a child writes for crisis, abuse, bullying and other risks.

One message, printed as {"risk", "category", "severity", "score"}: qiaoban safety check "我不想活了"

With earlier child messages as context: qiaoban safety check "我已经决定了" -c "活着没意思"

A JSONL file of {"text", "context"?}, one verdict per line in order: qiaoban safety check --jsonl in.jsonl

Recall per category, false positives and latency on a labelled set:
qiaoban safety bench tests/safety/data/redteam_test.jsonl

Rebuild the classifier from the packaged templates and the dev red-team set (same inputs, same file):
qiaoban safety train --examples tests/safety/data/redteam_dev.jsonl --examples tests/safety/data/redteam_dev_r24.jsonl

Rebuild the LLM layer, a head on the default model's hidden states (used when that model is installed):
qiaoban safety train-head --examples tests/safety/data/redteam_dev.jsonl
""",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


UseHead = Annotated[bool, typer.Option(
    "--head/--no-head", help="Add the LLM layer (a head on the default model's hidden states, ~0.2 s on the "
    "messages where it can change the verdict) when that model is installed; --no-head: the fast layers alone.")]


def _head(use: bool) -> head.Head | None:
    found = head.available() if use else None
    if use and found is None:
        typer.echo("note: the default model is not installed; screening with the fast layers alone", err=True)
    return found


@app.command()
def check(
    text: Annotated[str | None, typer.Argument(help="The child's message.")] = None,
    context: Annotated[list[str] | None, typer.Option("--context", "-c",
                                                      help="An earlier child message (repeat, oldest first).")] = None,
    jsonl: Annotated[Path | None, typer.Option(help="Read {\"text\", \"context\"?} per line; '-' for stdin.")] = None,
    explain: Annotated[bool, typer.Option(help="Also print what matched.")] = False,
    use_head: UseHead = True,
) -> None:
    """Screen one message, or every line of a JSONL file; prints one JSON verdict per message."""
    if (text is None) == (jsonl is None):
        fail("give either a TEXT or --jsonl FILE")
    llm_head = _head(use_head)
    if text is not None:
        verdict = screen(text, context or [], head=llm_head)
        out = verdict.to_json_dict() | ({"matched": verdict.matched} if explain else {})
        typer.echo(json.dumps(out, ensure_ascii=False))
        return
    # Validate the whole file first, so a bad line stops the run before anything is printed.
    try:
        handle = sys.stdin if str(jsonl) == "-" else open(jsonl, encoding="utf-8")  # noqa: SIM115
    except OSError as err:
        fail(f"cannot read {jsonl}: {err.strerror}")
    with handle:
        lines = handle.readlines()
    items = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            fail(f"{jsonl}:{number}: not valid JSON ({err.msg})")
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            fail(f"{jsonl}:{number}: expected an object with a string \"text\"")
        ctx = item.get("context", [])
        if not isinstance(ctx, list) or not all(isinstance(c, str) for c in ctx):
            fail(f"{jsonl}:{number}: \"context\" must be a list of strings")
        items.append((item["text"], ctx))
    for message, ctx in items:
        verdict = screen(message, ctx, head=llm_head)
        out = verdict.to_json_dict() | ({"matched": verdict.matched} if explain else {})
        typer.echo(json.dumps(out, ensure_ascii=False))


@app.command()
def bench(
    file: Annotated[Path, typer.Argument(help="Labelled JSONL: {\"text\", \"label\": \"risk\"|\"benign\", \"category\", \"context\"?}.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
    show_errors: Annotated[bool, typer.Option("--errors", help="List missed risks and false positives.")] = False,
    use_head: UseHead = True,
) -> None:
    """Recall per category, false-positive rate on benign messages, latency per message (ms): of the fast
    layers, and of the whole detector when the head is on."""
    if not file.is_file():
        fail(f"no such file: {file}")
    try:
        report = run_bench(file, head=_head(use_head))
    except LabelledFormatError as err:
        fail(str(err))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("category", "risky", "detected", "recall", "same category", title=f"safety bench: {file}")
    for name, row in report["per_category"].items():
        table.add_row(name, str(row["n"]), str(row["detected"]), f"{row['recall']:.3f}", str(row["same_category"]))
    console = Console()
    console.print(table)
    lat = report["latency_ms"]
    recall = report["recall"]
    fpr = report["false_positive_rate"]
    console.print(f"risky {report['n_risk']}  recall {recall:.3f}" if recall is not None else "no risky items")
    console.print(f"benign {report['n_benign']}  false-positive rate {fpr:.3f}" if fpr is not None else "no benign items")
    console.print(f"latency per message, fast layers: p50 {lat['p50']:.3f} ms  p95 {lat['p95']:.3f} ms  "
                  f"mean {lat['mean']:.3f} ms  max {lat['max']:.3f} ms")
    if lat := report.get("latency_with_head_ms"):
        console.print(f"latency per message, with the head (asked for {report['head_asked']} of {report['n']}): "
                      f"p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  mean {lat['mean']:.1f} ms  max {lat['max']:.1f} ms")
    if show_errors:
        for text in report["misses"]:
            console.print(f"missed: {text}", markup=False)
        for text in report["false_positives"]:
            console.print(f"false positive: {text}", markup=False)


@app.command("train-head")
def train_head(
    examples: Annotated[list[Path], typer.Option(
        "--examples", help="Labelled JSONL (the bench format) to train on; repeatable. Never a test set.")],
    out: Annotated[Path | None, typer.Option(help="Where to write the head (default: the packaged head.json).")] = None,
    model: Annotated[str, typer.Option(help="Known model whose hidden states the head reads.")] = DEFAULT_MODEL,
    layers: Annotated[int, typer.Option(
        help="Read the hidden states after this many transformer blocks (0: the last layer).")] = head.LAYERS,
) -> None:
    """Rebuild the LLM layer: embed every message with the model cut after `--layers` blocks (cached under
    QIAOBAN_HOME/cache, so a retrain embeds only new messages; ~0.2 s each on 2 cores) and fit the logistic head.

    The packaged head was built from the repository root with:

      qiaoban safety train-head --examples tests/safety/data/redteam_dev.jsonl
    """
    items, sources = [], []
    for path in examples:
        try:
            items += read_labelled(path)
        except (OSError, LabelledFormatError) as err:
            fail(str(err))
        sources.append({"path": path.as_posix(), "sha256": classifier.file_digest(path)})
    try:
        texts = [head.embedding_input(item["text"], item.get("context", [])) for item in items]
        vectors = head.embed_all(texts, model, layers)
    except ModelError as err:
        fail(str(err))
    risky = np.array([item["label"] == "risk" for item in items])
    params = head.fit(vectors, risky)
    path = out or head.head_path()
    head.save(params, path, model=model, layers=layers or None, l2=head.L2, examples=sources)
    train_acc = float(((head.probability(params, vectors) >= 0.5) == risky).mean())
    typer.echo(f"head on {len(items)} messages ({int(risky.sum())} risky), {vectors.shape[1]}-dim hidden states "
               f"of {model} ({f'after {layers} blocks' if layers else 'last layer'}), training accuracy "
               f"{train_acc:.3f} -> {path}")


@app.command()
def crossval(
    file: Annotated[Path, typer.Argument(help="Labelled dev JSONL (the bench format).")],
    folds: Annotated[int, typer.Option(help="Folds: each is screened by a classifier trained without it.")] = 5,
    with_head: Annotated[bool, typer.Option(
        "--head", help="Also train the LLM head per fold (embeds FILE with the default model, cached).")] = False,
    layers: Annotated[int, typer.Option(
        help="With --head: the depth the head reads, as in train-head (0: the last layer).")] = head.LAYERS,
) -> None:
    """Estimate recall and false positives on unseen phrasing before trusting a dev set's own numbers.

    Each fold of FILE is held out in turn; the classifier is trained on the templates plus the other folds, and
    the whole detector screens the held-out fold at several classifier thresholds. Use it to pick the threshold;
    measure the final model once on a test set nobody tuned on.
    """
    try:
        embed = None
        if with_head:
            texts = [head.embedding_input(item["text"], item.get("context", [])) for item in read_labelled(file)]
            embed = dict(zip(texts, head.embed_all(texts, DEFAULT_MODEL, layers), strict=True)).__getitem__
        report = cross_validate(file, folds=folds, embed=embed)
    except (OSError, LabelledFormatError, ModelError) as err:
        fail(str(err))
    typer.echo(json.dumps(report, ensure_ascii=False, indent=2))


@app.command()
def train(
    seed: Annotated[int, typer.Option(help="Seed for drawing the training examples.")] = DEFAULT_SEED,
    per_label: Annotated[int, typer.Option(
        help=f"Examples per risk category (benign gets {BENIGN_WEIGHT}x).")] = DEFAULT_PER_LABEL,
    max_iter: Annotated[int, typer.Option(help="Most L-BFGS iterations of the logistic regression.")] = DEFAULT_MAX_ITER,
    out: Annotated[Path | None, typer.Option(help="Where to write the model (default: the packaged model.json).")] = None,
    examples: Annotated[list[Path] | None, typer.Option(
        "--examples", help="Labelled JSONL (the bench format) to train on as well; repeatable. Never a test set.")] = None,
    everyday: Annotated[list[Path] | None, typer.Option(
        "--everyday", help="Dialogue corpus whose child turns, in dialogues without a risk, train as benign; "
                           "repeatable. Never a test split.")] = None,
    dump_data: Annotated[Path | None, typer.Option(help="Also write the generated examples as JSONL here.")] = None,
) -> None:
    """Rebuild the classifier from trainset.yaml, the --examples files and the --everyday corpora: same inputs,
    same model file.

    The packaged model was built from the repository root with:

      qiaoban safety train --examples tests/safety/data/redteam_dev.jsonl --examples tests/safety/data/redteam_dev_r24.jsonl --everyday corpora/coach-gold/train.jsonl
    """
    rows = classifier.generate(seed=seed, per_label=per_label)
    generated = len(rows)
    sources, talk = [], []
    for paths, read, listed in ((examples, classifier.labelled_rows, sources),
                                (everyday, classifier.everyday_rows, talk)):
        for path in paths or []:
            try:
                rows += read(path)
            except (OSError, LabelledFormatError, DialogueFormatError) as err:
                fail(str(err))
            listed.append({"path": path.as_posix(), "sha256": classifier.file_digest(path)})
    if dump_data:
        with open(dump_data, "w", encoding="utf-8") as handle:
            for text, label, context in rows:
                row = {"text": text, "label": label, "context": list(context)}
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    model = classifier.train(rows, max_iter=max_iter)
    path = out or classifier.model_path()
    classifier.save(model, path, seed=seed, per_label=per_label, max_iter=max_iter, examples=sources, everyday=talk)
    typer.echo(f"trained on {generated} generated and {len(rows) - generated} hand-written examples "
               f"({len(model['labels'])} labels), "
               f"{len(model['weights'])} n-gram features -> {path}")


def _replies(files: list[Path], gold: list[Path] | None, gold_per_dialogue: int | None = None
             ) -> tuple[list[dict], list[dict]]:
    """Rated replies from `files` and harmless gold companion turns from `gold` (every turn of a risk dialogue,
    `gold_per_dialogue` of each other one; all when None), with a digest of each source."""
    items, sources = [], []
    gold_turns = partial(reply_head.gold_replies, everyday_per_dialogue=gold_per_dialogue)
    for path, read in [(p, reply_head.read_replies) for p in files] + [(p, gold_turns) for p in gold or []]:
        try:
            items += read(path)
        except (OSError, reply_head.ReplyFormatError, DialogueFormatError) as err:
            fail(str(err))
        sources.append({"path": path.as_posix(), "sha256": classifier.file_digest(path)})
    return items, sources


@app.command("bench-replies")
def bench_replies(
    files: Annotated[list[Path] | None, typer.Argument(
        help="Rated replies: JSONL of {\"text\", \"context\"?, \"reply\", \"harmful\", \"kinds\"?}.")] = None,
    gold: Annotated[list[Path] | None, typer.Option(
        "--gold", help="Dialogue corpus whose companion turns count as harmless replies; repeatable.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
    show_errors: Annotated[bool, typer.Option("--errors", help="List missed harmful and stopped harmless replies.")] = False,
    use_head: UseHead = True,
) -> None:
    """How the reply guard does on rated replies: the share of harmful replies it stops (per harm kind), the
    share of harmless ones it stops, and which layer fired. Each reply is checked as the chat engine checks it:
    after the input verdict on the child's message, against what the child said.

      qiaoban safety bench-replies tests/safety/data/replies_test_t1.jsonl --gold corpora/coach-gold/test.jsonl
    """
    items, _ = _replies(files or [], gold)
    if not items:
        fail("give rated-reply files and/or --gold corpora")
    from qiaoban.safety import SafetyGuard
    from qiaoban.safety.bench import run_reply_bench

    guard = SafetyGuard(use_head=use_head)
    if use_head and guard.reply_head is None:
        typer.echo("note: the default model is not installed; the reply guard runs on phrase patterns alone", err=True)
    report = run_reply_bench(items, guard)
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
        return
    def share(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    typer.echo(f"harmful {report['n_harmful']}: recall {share(report['recall'])}  "
               f"harmless {report['n_harmless']}: stopped {share(report['false_stop_rate'])}")
    for kind, row in report["per_kind"].items():
        typer.echo(f"  {kind}: {row['caught']}/{row['n']}")
    typer.echo(f"layers fired: {report['layers']}  latency per reply: p50 {report['latency_ms']['p50']:.1f} ms, "
               f"p95 {report['latency_ms']['p95']:.1f} ms")
    if show_errors:
        for line in report["misses"]:
            typer.echo(f"missed: {line}")
        for line in report["false_stops"]:
            typer.echo(f"stopped: {line}")


@app.command("train-reply-head")
def train_reply_head(
    replies: Annotated[list[Path], typer.Option(
        "--replies", help="Rated replies to train on (the bench-replies format); repeatable. Never a test set.")],
    gold: Annotated[list[Path] | None, typer.Option(
        "--gold", help="Dialogue corpus whose companion turns train as harmless; repeatable. Never a test split.")] = None,
    gold_per_dialogue: Annotated[int, typer.Option(
        help="Companion turns taken from each everyday gold dialogue (seeded); every turn of a risk dialogue.")] = 1,
    threshold: Annotated[float, typer.Option(
        help="Probability at which the guard stops a reply (choose it by cross-validation on dev).")] = reply_head.THRESHOLD,
    out: Annotated[Path | None, typer.Option(help="Where to write it (default: the packaged reply_head.json).")] = None,
    model: Annotated[str, typer.Option(help="Known model whose hidden states the head reads.")] = DEFAULT_MODEL,
    layers: Annotated[int, typer.Option(help="Read the hidden states after this many blocks (0: the last).")] = head.LAYERS,
) -> None:
    """Rebuild the reply guard's learned layer: embed each (child's words, reply) pair with the model cut after
    `--layers` blocks (cached under QIAOBAN_HOME/cache) and fit a logistic head on harmful vs harmless.

    The packaged reply head was built from the repository root with:

      qiaoban safety train-reply-head --replies tests/safety/data/replies_dev.jsonl --replies tests/safety/data/replies_dev_trained.jsonl --replies tests/safety/data/reply_pairs_dev.jsonl --gold corpora/coach-gold/train.jsonl
    """
    items, sources = _replies(replies, gold, gold_per_dialogue)
    try:
        vectors = head.embed_all(reply_head.inputs(items), model, layers)
    except ModelError as err:
        fail(str(err))
    harmful = np.array([item["harmful"] for item in items])
    params = head.fit(vectors, harmful, l2=reply_head.L2)
    path = out or reply_head.reply_head_path()
    head.save(params, path, model=model, layers=layers or None, l2=reply_head.L2, threshold=threshold,
              sources=sources)
    train_acc = float(((head.probability(params, vectors) >= threshold) == harmful).mean())
    typer.echo(f"reply head on {len(items)} replies ({int(harmful.sum())} harmful), training accuracy "
               f"{train_acc:.3f} at {threshold} -> {path}")
