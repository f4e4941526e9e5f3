"""`qiaoban data`: import public corpora, validate them with the quality gates, describe and split them."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from qiaoban.cli_errors import fail
from qiaoban.config import load_yaml
from qiaoban.data.gates import REASONS, GateConfig
from qiaoban.data.importers import FORMATS, CorpusRecordError, detect_format, import_corpus
from qiaoban.data.report import CORPUS_REASONS, dialogue_stats, render_stats, validate_file
from qiaoban.data.split import SPLIT_NAMES, split_dialogues
from qiaoban.dialogue import DialogueFormatError, write_jsonl

FORMAT_HELP = f"Input format ({', '.join(FORMATS)}); detected from the first record when left out."

app = typer.Typer(
    help="""Corpus tools: import, validate, stats, split, gates.

Every command reads any of these formats (JSON array or JSONL, detected from the first record):

  qiaoban   QiaoBan child_chat JSON (dialog_id, emotion, topic, dialog)
  messages  SMILE / CPsyCoun JSONL (client / counselor messages)
  chatml    system / user / assistant messages JSONL
  xtuner    EmoLLM JSON (conversation: input / output)
  dialogue  qiaoban's own Dialogue JSONL

Examples:

  qiaoban data import child_chat_dev.json --out qiaoban.jsonl
  qiaoban data validate child_chat_dev.json
  qiaoban data stats corpus.jsonl --json
  qiaoban data split corpus.jsonl --out-dir splits/ --seed 0
""",
    no_args_is_help=True,
    add_completion=False,
)


def _gate_config(config_path: Path | None, no_safety: bool, disable: str | None) -> GateConfig:
    """GateConfig from an optional YAML of its fields, then the command-line switches on top."""
    try:
        values = load_yaml(config_path) if config_path else {}
        config = GateConfig.from_dict(values)
        names = {n.strip() for n in (disable or "").split(",") if n.strip()}
        return replace(config, safety_screen=config.safety_screen and not no_safety,
                       disabled=config.disabled | names)
    except (ValueError, OSError) as err:
        fail(str(err))


GATES_HELP = "YAML of GateConfig fields (min_turns, max_turn_chars, disabled: [...]); see `qiaoban data gates`."


@app.command("import")
def import_cmd(
    src: Annotated[Path, typer.Argument(help="Corpus file to read.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Dialogue JSONL to write (overwritten).")],
    format: Annotated[str | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
    source: Annotated[str | None, typer.Option(help="Source name to record (default: guessed from the path).")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Skip malformed records and count them.")] = False,
) -> None:
    """Convert a corpus into qiaoban Dialogue JSONL, faithfully (defects are kept; `validate` reports them)."""
    errors: list[CorpusRecordError] = []
    started = time.perf_counter()
    partial = out.with_name(out.name + ".partial")  # OUT is replaced only once the whole import succeeded
    try:
        fmt = format or detect_format(src)
        count = write_jsonl(partial, import_corpus(src, fmt, source=source, skip_bad=skip_bad, errors=errors))
    except (DialogueFormatError, OSError, ValueError) as err:
        partial.unlink(missing_ok=True)
        fail(str(err))
    partial.replace(out)
    elapsed = time.perf_counter() - started
    typer.echo(f"{src} [{fmt}] -> {out}: {count} dialogues in {elapsed:.2f}s"
               + (f", {len(errors)} malformed records skipped" if skip_bad else ""))
    for error in errors[:10]:
        typer.echo(f"  skipped: {error}", err=True)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="Corpus file in any importable format.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    format: Annotated[str | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Count malformed records instead of stopping.")] = False,
    no_safety: Annotated[bool, typer.Option("--no-safety", help="Skip the safety screen of companion turns.")] = False,
    disable: Annotated[str | None, typer.Option(help="Comma-separated gate names to skip.")] = None,
    gates: Annotated[Path | None, typer.Option(help=GATES_HELP)] = None,
) -> None:
    """Run the quality gates over every dialogue and report each defect kind with its count and example ids.

    Exit code 0 whenever the file parses, whatever the defects; 2 when it does not."""
    config = _gate_config(gates, no_safety, disable)
    try:
        report = validate_file(file, config, format, skip_bad=skip_bad, progress=not as_json)
    except (DialogueFormatError, OSError, ValueError, RuntimeError) as err:
        fail(str(err))
    typer.echo(json.dumps(report.to_dict(), ensure_ascii=False, indent=2) if as_json else report.render())


@app.command()
def stats(
    file: Annotated[Path, typer.Argument(help="Corpus file in any importable format.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    format: Annotated[str | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
    no_safety: Annotated[bool, typer.Option("--no-safety", help="Skip the safety screen when counting rejections.")] = False,
    gates: Annotated[Path | None, typer.Option(help=GATES_HELP)] = None,
    by: Annotated[str | None, typer.Option(
        help="Comma-separated fields to count dialogues by, e.g. meta.category,meta.age_band (and each cell).")] = None,
) -> None:
    """Counts, turns per dialogue, characters per turn by role, topics, emotions, sources, rejection reasons."""
    config = _gate_config(gates, no_safety, None)
    fields = tuple(f.strip() for f in (by or "").split(",") if f.strip())
    try:
        dialogues = tqdm(import_corpus(file, format), desc="reading", unit="dlg", leave=False, disable=as_json)
        result = dialogue_stats(dialogues, config, by=fields)
    except (DialogueFormatError, OSError, ValueError, RuntimeError) as err:
        fail(str(err))
    typer.echo(json.dumps(result, ensure_ascii=False, indent=2) if as_json else render_stats(result))


@app.command()
def split(
    file: Annotated[Path, typer.Argument(help="Corpus file in any importable format.")],
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="Writes train.jsonl, dev.jsonl, test.jsonl here.")],
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
    ratios: Annotated[str, typer.Option(help="train,dev,test shares summing to 1.")] = "0.8,0.1,0.1",
    format: Annotated[str | None, typer.Option("--format", "-f", help=FORMAT_HELP)] = None,
    group_by: Annotated[str | None, typer.Option(
        help="Dialogues sharing this field stay on one side, e.g. meta.scenario.")] = None,
    stratify: Annotated[str | None, typer.Option(
        help="Comma-separated fields cut in the same shares, e.g. meta.category,meta.age_band.")] = None,
) -> None:
    """Seeded split by dialogue; near-duplicates stay on one side; independent of the file's order.

    Example: qiaoban data split corpora/coach-gold/dialogues.jsonl -o corpora/coach-gold --group-by meta.scenario
    --stratify meta.category,meta.age_band"""
    try:
        shares = tuple(float(x) for x in ratios.split(","))
        fields = tuple(f.strip() for f in (stratify or "").split(",") if f.strip())
        parts = split_dialogues(import_corpus(file, format), shares, seed, names=SPLIT_NAMES[: len(shares)],
                                group_by=group_by, stratify_by=fields)
    except (DialogueFormatError, OSError, ValueError) as err:
        fail(str(err))
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, dialogues in parts.items():
        write_jsonl(out_dir / f"{name}.jsonl", dialogues)
        typer.echo(f"{out_dir / f'{name}.jsonl'}: {len(dialogues)} dialogues")


@app.command("gates")
def list_gates() -> None:
    """List every rejection reason the gates and validate can report."""
    for name, meaning in {**REASONS, **CORPUS_REASONS}.items():
        typer.echo(f"{name:<24} {meaning}")
