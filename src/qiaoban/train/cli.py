"""`qiaoban train`: build data, fine-tune, and export to the chat runtime."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from qiaoban.cli_errors import fail

HELP = """Fine-tune a companion model and hand it to the chat runtime.

The usual path on the bundled 1.5B (CPU: about an hour; one GPU: minutes):

  qiaoban train convert-gguf default        # once: GGUF -> trainable HF dir
  qiaoban train build-data configs/mix_companion.yaml --out data/mix
  qiaoban train run configs/lora_1.5b_cpu.yaml    # run again to resume
  qiaoban train export runs/companion-1.5b --to gguf-adapter
  qiaoban chat --adapter companion-1.5b     # name listed by `qiaoban models`

Configs are YAML files in configs/ (LoRA, prefix/P-tuning v2, full).
Override any key after the file:

  qiaoban train run configs/lora_1.5b_cpu.yaml optim.lr=1e-4 data.max_len=384

Several GPUs: the same command under accelerate (the Trainer distributes):

  accelerate launch --config_file configs/accelerate_multi_gpu.yaml \
      -m qiaoban train run configs/lora_1.5b_gpu.yaml
  accelerate launch --config_file configs/accelerate_multi_gpu.yaml \
      -m qiaoban train run configs/full.yaml \
      optim.deepspeed=configs/deepspeed_zero3.json

More in docs/training.md.
"""

app = typer.Typer(help=HELP, no_args_is_help=True, rich_markup_mode=None)


@app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="A training config YAML (see configs/).")],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides, e.g. optim.lr=1e-4")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's latest checkpoint when there is one.")] = True,
    compare_base: Annotated[bool, typer.Option(help="Also measure the base model's held-out loss (LoRA/prefix).")] = True,
) -> None:
    """Train as the config says; writes checkpoints, log.jsonl and metrics.json into output_dir.

    objective sft (default): loss on the companion's turns only. objective dpo: preference pairs (see
    `build-pairs`), e.g. configs/dpo_1.5b_cpu.yaml, which continues from the shipped companion adapter. Prints the final train loss and the held-out assistant-turn loss
    of the tuned model (and of the base model, for adapters).
    """
    from qiaoban.train.config import load_config
    from qiaoban.train.memory import MemoryBudgetError
    from qiaoban.train.preference import run_preference_training
    from qiaoban.train.trainer import run_training

    try:
        cfg = load_config(config, overrides or [])
        if cfg.objective == "dpo":
            metrics = run_preference_training(cfg, resume=resume)
        else:
            metrics = run_training(cfg, resume=resume, compare_base=compare_base)
    except (ValueError, FileNotFoundError, MemoryBudgetError) as err:
        fail(str(err))
    keys = ("steps", "train_loss", "heldout_base", "heldout_tuned", "heldout", "tokens_per_s")
    summary = {k: metrics[k] for k in keys if k in metrics}
    typer.echo(json.dumps(summary, indent=2))
    typer.echo(f"run saved in {cfg.output_dir}; export with: qiaoban train export {cfg.output_dir} --to gguf-adapter")


@app.command("finish")
def finish(
    run_dir: Annotated[Path, typer.Argument(help="A run stopped before it finished (killed, out of time).")],
    checkpoint: Annotated[Path | None, typer.Option(help="Which checkpoint (default: the latest).")] = None,
    max_eval_samples: Annotated[int | None, typer.Option(help="Fewer held-out samples = a faster finish.")] = None,
    eval_with: Annotated[str, typer.Option(help="torch, or llama: held-out loss in llama.cpp on the GGUF base "
                                           "+ exported adapter (LoRA on a GGUF model; faster on a CPU).")] = "torch",
) -> None:
    """Finish a run from a checkpoint: save the adapter, measure held-out loss (base vs tuned), write
    metrics.json. After this, `qiaoban train export RUN_DIR` works. (To keep training, use `run` again.)"""
    from qiaoban.train.trainer import finish_run

    try:
        metrics = finish_run(run_dir, checkpoint=checkpoint, max_eval_samples=max_eval_samples, eval_with=eval_with)
    except (ValueError, FileNotFoundError) as err:
        fail(str(err))
    summary = {k: metrics.get(k) for k in ("steps", "finished_from", "heldout_base", "heldout_tuned")}
    typer.echo(json.dumps(summary, indent=2))


@app.command("convert-gguf")
def convert_gguf_command(
    model: Annotated[str, typer.Argument(help="A known model name (default, fixture, qwen-0.5b) or a GGUF path.")] = "default",
    force: Annotated[bool, typer.Option(help="Convert again even if a finished conversion exists.")] = False,
) -> None:
    """Dequantize a GGUF into a trainable Hugging Face checkpoint in $QIAOBAN_HOME/hf/<name> (done once).

    Training configs that name a GGUF model do this by themselves; run it ahead to see where it lands.
    """
    from qiaoban.models import ModelError
    from qiaoban.train.convert import convert_gguf
    from qiaoban.train.memory import MemoryBudgetError

    try:
        typer.echo(str(convert_gguf(model, force=force)))
    except (ModelError, MemoryBudgetError) as err:
        fail(str(err))


@app.command("export")
def export(
    run_dir: Annotated[Path, typer.Argument(help="A finished training run (has metrics.json).")],
    to: Annotated[str, typer.Option(help="gguf-adapter (LoRA for `qiaoban chat --adapter`) or merged-q4.")] = "gguf-adapter",
    out: Annotated[Path | None, typer.Option(help="Output file (default: $QIAOBAN_HOME/adapters or models).")] = None,
    quant: Annotated[str, typer.Option(help="With merged-q4: llama.cpp quantization type.")] = "Q4_K_M",
    outtype: Annotated[str, typer.Option(help="With gguf-adapter: f16, bf16, f32 or q8_0 (about half the size).")] = "f16",
) -> None:
    """Convert a run for llama.cpp with llama.cpp's own converters (fetched once into $QIAOBAN_HOME/tools).

    gguf-adapter: a small LoRA GGUF on top of the base model; `qiaoban models` lists it.
    merged-q4: base + LoRA merged (or a full fine-tune) -> f16 GGUF -> quantized stand-alone model.
    """
    from qiaoban.train.export import ExportError, export_lora_gguf, export_merged_gguf

    try:
        if to == "gguf-adapter":
            path = export_lora_gguf(run_dir, out, outtype)
        elif to == "merged-q4":
            path = export_merged_gguf(run_dir, out, quant)
        else:
            raise ExportError(f"--to must be gguf-adapter or merged-q4, got {to!r}")
    except ExportError as err:
        fail(str(err))
    size_mb = path.stat().st_size / 2**20
    typer.echo(f"{path} ({size_mb:.1f} MB)")
    if to == "gguf-adapter":
        typer.echo(f"try it: qiaoban chat --adapter {path}")
    else:
        typer.echo(f"try it: qiaoban chat --model {path}")


@app.command("build-data")
def build_data(
    mix: Annotated[Path, typer.Argument(help="A mix spec YAML (see configs/mix_companion.yaml).")],
    out: Annotated[Path, typer.Option(help="Folder for train.jsonl and eval.jsonl.")] = Path("data/mix"),
) -> None:
    """Build a weighted data mix into Dialogue JSONL (train + held-out), printing what was kept and why not.

    Each source is imported (qiaoban.data formats), passed through the quality and safety gates, split into
    held-out and train before sampling, then sampled by weight. Use the files as data.train / data.eval.
    """
    from qiaoban.config import load_yaml
    from qiaoban.dialogue import write_jsonl
    from qiaoban.train.mix import MixError, MixSpec, build_mix

    try:
        train, held_out, report = build_mix(MixSpec.from_dict(load_yaml(mix), base_dir=mix.parent))
    except (MixError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", held_out)
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"wrote {len(train)} training and {len(held_out)} held-out dialogues to {out}/")


@app.command("build-pairs")
def build_pairs(
    out: Annotated[Path, typer.Option(help="The pair file to write (JSONL).")],
    eval_run: Annotated[list[Path] | None, typer.Option(help=(
        "An `eval run` directory: its gold reply chosen over the model's own reply, per item. Repeatable."))] = None,
    rated: Annotated[list[Path] | None, typer.Option(help=(
        "Rated model replies (text, context, reply, harmful), each joined with --written. Repeatable."))] = None,
    written: Annotated[list[Path] | None, typer.Option(help=(
        "Replies written for the messages of the --rated file given in the same place (text, context, reply, "
        "age_band), matched by message: chosen over the rated reply."))] = None,
    contrast: Annotated[list[Path] | None, typer.Option(help=(
        "Contrastive replies: each message answered harmfully and harmlessly; harmless chosen. Repeatable."))] = None,
    harmful_only: Annotated[bool, typer.Option(help="From --rated files, only the replies rated harmful.")] = False,
    sample: Annotated[int | None, typer.Option(help="At most this many pairs from each source file (seeded).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --sample.")] = 0,
) -> None:
    """Preference pairs for `train run` with objective dpo, from model replies and better ones.

      qiaoban eval run --data corpora/coach-gold/train.jsonl --per-dialogue 1 --through-engine --no-safety \
          --no-ppl --limit 200 --out runs/eval/own-train
      qiaoban train build-pairs --eval-run runs/eval/own-train \
          --rated tests/safety/data/replies_dev_trained.jsonl --written corpora/preference/written_pref1.jsonl \
          --contrast tests/safety/data/reply_pairs_dev.jsonl --out corpora/preference/pairs.jsonl
    """
    from collections import Counter

    from qiaoban.train.pairs import (
        PairError,
        pairs_from_contrast,
        pairs_from_eval_run,
        pairs_from_rated,
        sample_pairs,
        write_pairs,
    )

    rated, written = rated or [], written or []
    if len(rated) != len(written):
        fail(f"every --rated file needs its --written file ({len(rated)} rated, {len(written)} written)")
    try:
        sources = [pairs_from_eval_run(run) for run in eval_run or []]
        sources += [pairs_from_rated(r, w, harmful_only=harmful_only) for r, w in zip(rated, written, strict=True)]
        sources += [pairs_from_contrast(path) for path in contrast or []]
    except (PairError, FileNotFoundError) as err:
        fail(str(err))
    pairs = [p for source in sources for p in sample_pairs(source, sample, seed)]
    if not pairs:
        fail("no pairs: give at least one --eval-run, --rated/--written or --contrast source")
    count = write_pairs(out, pairs)
    for source, n in Counter(p.source for p in pairs).items():
        typer.echo(f"{n:5d}  {source}")
    typer.echo(f"wrote {count} pairs to {out}")
