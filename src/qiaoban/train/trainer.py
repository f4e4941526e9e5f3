"""Fine-tune a causal LM on companion dialogues: LoRA (default), prefix tuning (P-tuning v2) or full.

The loop is transformers' `Trainer` fed with our own samples (assistant-only labels, optional packing), so
seeding, checkpoints and resume, eval loss, the progress bar, `accelerate launch` and DeepSpeed all come from
the library. A run directory holds:

    config.yaml          the resolved config
    data_stats.json      what the data builder kept and why it dropped the rest
    checkpoint-*/        Trainer checkpoints (resume with --resume)
    adapter/ or model/   the final PEFT adapter (lora, prefix) or full model, with the tokenizer
    log.jsonl            every logged loss / eval loss / learning rate, one JSON per line
    metrics.json         final train/eval loss, tokens/s, held-out loss of base vs tuned (LoRA)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from qiaoban.dialogue import Dialogue, read_jsonl
from qiaoban.train.config import TrainConfig, resolve_path
from qiaoban.train.dataset import IGNORE_INDEX, Sample, collate, encode_dialogues, pack
from qiaoban.train.memory import check_fits, hf_param_count, training_bytes


def system_prompt_for(config: TrainConfig) -> str | Callable[[Dialogue], str]:
    """The prompt every sample starts with: the persona's (long), the persona line for each dialogue's own
    `meta.age_band` ("persona-short"), none (""), or literal text."""
    from qiaoban.chat import Persona

    if config.data.system_prompt == "persona":
        return Persona().system_prompt()
    if config.data.system_prompt == "persona-short":
        return lambda d: Persona(age_band=d.meta.get("age_band") or Persona().age_band).system_prompt(short=True)
    return config.data.system_prompt


def resolve_model_dir(model: str) -> Path:
    """An HF directory as is; a known GGUF name or a .gguf path converted once into $QIAOBAN_HOME/hf/."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
        return path
    from qiaoban.train.convert import convert_gguf

    return convert_gguf(model)


def load_dialogues(config: TrainConfig) -> tuple[list[Dialogue], list[Dialogue], list[str]]:
    """(train, eval, report lines) from a Dialogue JSONL pair or a mix spec."""
    if config.data.mix:
        from qiaoban.config import load_yaml
        from qiaoban.train.mix import MixSpec, build_mix

        mix, base = config.data.mix, Path(config.source).parent if config.source else None
        if isinstance(mix, str):  # a separate mix file
            mix_path = resolve_path(config, mix)
            mix, base = load_yaml(mix_path), mix_path.parent
        train, held_out, report = build_mix(MixSpec.from_dict(mix, base_dir=base))
        return train, held_out, report.lines()
    train = list(read_jsonl(resolve_path(config, config.data.train)))
    held_out = list(read_jsonl(resolve_path(config, config.data.eval))) if config.data.eval else []
    return train, held_out, [f"train {len(train)} dialogues, eval {len(held_out)}"]


@dataclass
class PreparedData:
    train_rows: list  # PackedRow or Sample
    eval_samples: list[Sample]
    stats: dict[str, Any]


def prepare_data(config: TrainConfig, tokenizer) -> PreparedData:
    train_dialogues, eval_dialogues, report = load_dialogues(config)
    system_prompt = system_prompt_for(config)
    d = config.data
    train_samples, train_stats = encode_dialogues(tokenizer, train_dialogues, system_prompt, d.max_len, d.long_dialogues)
    eval_samples, eval_stats = encode_dialogues(tokenizer, eval_dialogues, system_prompt, d.max_len, d.long_dialogues)
    eval_samples = eval_samples[: d.max_eval_samples]
    if not train_samples:
        raise ValueError(f"no training samples survived ({train_stats}); check the data and data.max_len")
    packing = d.packing and config.method != "prefix"  # a prefix's cache cannot be shared by packed samples
    rows = pack(train_samples, d.max_len) if packing else train_samples
    stats = {
        "mix": report,
        "train": vars(train_stats),
        "eval": vars(eval_stats),
        "eval_samples_used": len(eval_samples),
        "packing": packing,
        "train_rows": len(rows),
        "row_fill": sum(len(r.input_ids) for r in rows) / (len(rows) * d.max_len),
    }
    return PreparedData(rows, eval_samples, stats)


def estimate_memory(config: TrainConfig, model_dir: Path) -> int:
    cfg = json.loads((model_dir / "config.json").read_text())
    return training_bytes(
        hf_param_count(model_dir),
        config.method,
        config.dtype,
        config.data.max_len,
        config.optim.batch_size,
        hidden=cfg.get("hidden_size", 2048),
        layers=cfg.get("num_hidden_layers", 24),
        vocab=cfg.get("vocab_size", 151936),
    )


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: TrainConfig, model_dir: Path):
    """The base model in config.dtype, after checking that training it will fit in memory."""
    import torch
    from transformers import AutoModelForCausalLM

    where = "gpu" if torch.cuda.is_available() else "cpu"
    check_fits(estimate_memory(config, model_dir), where=where, what=f"{config.method} training of {model_dir.name}")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, config.dtype))
    model.config.use_cache = False
    return model


def apply_method(model, config: TrainConfig):
    """Wrap the model for the chosen method; full fine-tuning returns it unchanged."""
    from peft import LoraConfig, PrefixTuningConfig, TaskType, get_peft_model

    if config.method == "lora":
        spec = config.lora
        peft_config = LoraConfig(
            task_type=TaskType.CAUSAL_LM, r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
            target_modules=list(spec.target_modules),
            # Only these blocks get adapters; autograd then never runs backward through the blocks below them.
            layers_to_transform=list(spec.layers) if spec.layers else None,
        )
    elif config.method == "prefix":
        peft_config = PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.prefix.num_virtual_tokens,
            prefix_projection=config.prefix.projection,
        )
    else:
        return model
    model = get_peft_model(model, peft_config)
    if config.optim.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def heldout_loss(model, samples: list[Sample], batch_size: int = 1) -> dict[str, float]:
    """Mean cross-entropy per assistant token (token-weighted, not batch-averaged) and its perplexity."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            batch = collate(samples[i : i + batch_size], pad_id=0)
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
            labels = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += float(losses)
            count += int((labels != IGNORE_INDEX).sum())
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "tokens": count}


def callbacks(log_path: Path, max_minutes: float | None) -> list:
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                with open(log_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    class TimeBudget(TrainerCallback):
        """Stop after max_minutes of training (this session), saving a checkpoint; resume continues it."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if (time.perf_counter() - self.started) / 60 >= max_minutes:
                control.should_training_stop = True
                control.should_save = True

    return [JsonlLog()] + ([TimeBudget()] if max_minutes else [])


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted(run_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return checkpoints[-1] if checkpoints else None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def training_arguments(config: TrainConfig, run_dir: Path, has_eval: bool, arguments_class=None, **extra: Any):
    """The Trainer's arguments from the config (`arguments_class`: a TrainingArguments subclass such as trl's
    DPOConfig, given its own `extra` fields)."""
    from transformers import TrainingArguments

    o = config.optim
    return (arguments_class or TrainingArguments)(
        output_dir=str(run_dir),
        per_device_train_batch_size=o.batch_size,
        per_device_eval_batch_size=o.batch_size,
        gradient_accumulation_steps=o.grad_accum,
        num_train_epochs=o.epochs,
        max_steps=o.max_steps,
        learning_rate=o.lr,
        lr_scheduler_type=o.scheduler,
        warmup_steps=o.warmup_steps,
        weight_decay=o.weight_decay,
        max_grad_norm=o.max_grad_norm,
        activation_checkpointing=o.gradient_checkpointing,
        logging_steps=o.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval and o.eval_steps else "no",  # the final held-out loss is always measured
        eval_steps=o.eval_steps or None,
        save_strategy="steps",
        save_steps=o.save_steps,
        save_total_limit=o.save_total_limit,
        seed=config.seed,
        data_seed=config.seed,
        # GPU: bf16 mixed precision (DeepSpeed's "auto" follows it). CPU: weights are already in config.dtype,
        # autocast would only add casts.
        bf16=config.dtype == "bfloat16" and _cuda(),
        deepspeed=o.deepspeed,
        remove_unused_columns=False,
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=_cuda(),
        **{"label_names": ["labels"], **extra},
    )


def start_run(config: TrainConfig) -> Path:
    """Threads and seed as configured; the run directory, with the resolved config written into it."""
    import torch
    from transformers import set_seed

    if config.optim.threads:
        torch.set_num_threads(config.optim.threads)
    set_seed(config.seed)
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), allow_unicode=True, sort_keys=False))
    return run_dir


def run_training(config: TrainConfig, *, resume: bool = True, compare_base: bool = True) -> dict[str, Any]:
    """Train as configured; returns (and writes) the run's metrics. Resumes from the latest checkpoint if any."""
    from transformers import Trainer

    run_dir = start_run(config)
    model_dir = resolve_model_dir(config.model)
    tokenizer = load_tokenizer(model_dir)
    data = prepare_data(config, tokenizer)  # before the model: bad data fails fast and cheaply
    (run_dir / "data_stats.json").write_text(json.dumps(data.stats, ensure_ascii=False, indent=2))
    model = apply_method(load_model(config, model_dir), config)

    pad_id = tokenizer.pad_token_id
    trainer = Trainer(
        model=model,
        args=training_arguments(config, run_dir, has_eval=bool(data.eval_samples)),
        train_dataset=data.train_rows,
        eval_dataset=(data.eval_samples or None) if config.optim.eval_steps else None,
        data_collator=lambda rows: collate(rows, pad_id),
        callbacks=callbacks(run_dir / "log.jsonl", config.optim.max_minutes),
    )
    checkpoint = latest_checkpoint(run_dir) if resume else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started

    final_dir = run_dir / ("model" if config.method == "full" else "adapter")
    trainer.save_model(str(final_dir))
    tokenizer.save_pretrained(final_dir)
    epochs_done = trainer.state.epoch or 0
    tokens = sum(len(r.input_ids) for r in data.train_rows) * epochs_done
    metrics: dict[str, Any] = {
        "model_dir": str(model_dir),
        "method": config.method,
        "steps": trainer.state.global_step,
        "epochs": epochs_done,
        "train_loss": result.training_loss,
        "train_seconds": seconds,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "tokens_per_s": tokens / seconds if checkpoint is None and seconds > 0 else None,
        "train_losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        "eval_losses": [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e],
    }
    if trainer.is_world_process_zero():
        evaluate_and_record(model, config, data, run_dir, metrics, compare_base)
    return metrics


def evaluate_and_record(model, config: TrainConfig, data: PreparedData, run_dir: Path, metrics: dict[str, Any],
                        compare_base: bool = True) -> None:
    """Held-out assistant-turn loss of the tuned model (and of the base, for adapters) -> log.jsonl, metrics.json."""
    if data.eval_samples:
        metrics["heldout_tuned"] = heldout_loss(model, data.eval_samples)
        if compare_base and config.method in ("lora", "prefix"):
            with model.disable_adapter():
                metrics["heldout_base"] = heldout_loss(model, data.eval_samples)
        with open(run_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": metrics["steps"], "heldout_loss": metrics["heldout_tuned"]["loss"],
                                     "heldout_base_loss": metrics.get("heldout_base", {}).get("loss")}) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))


def finish_run(run_dir: str | Path, *, checkpoint: str | Path | None = None, max_eval_samples: int | None = None,
               compare_base: bool = True, eval_with: str = "torch") -> dict[str, Any]:
    """Turn a checkpoint of a stopped run (killed, out of time) into a finished one: the final adapter/model
    folder, the held-out losses and metrics.json, so it can be exported. Default: the latest checkpoint.

    eval_with="llama" (LoRA on a GGUF base model): measure held-out loss in llama.cpp, base GGUF vs base + the
    exported GGUF adapter, i.e. exactly what `qiaoban chat` runs, and several times faster than torch on a CPU.
    """
    from qiaoban.train.config import config_from_dict

    run_dir = Path(run_dir)
    raw = yaml.safe_load((run_dir / "config.yaml").read_text())
    config = config_from_dict({k: v for k, v in raw.items() if k != "source"}, source=raw.get("source", ""))
    if max_eval_samples is not None:
        config.data.max_eval_samples = max_eval_samples
    checkpoint = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if checkpoint is None or not checkpoint.is_dir():
        raise FileNotFoundError(f"no checkpoint to finish in {run_dir}")
    if eval_with not in ("torch", "llama"):
        raise ValueError(f"eval_with must be torch or llama, got {eval_with!r}")
    if eval_with == "llama" and config.method != "lora":
        raise ValueError("eval_with=llama needs a LoRA run (llama.cpp loads LoRA adapters, not prefixes)")
    model_dir = resolve_model_dir(config.model)
    tokenizer = load_tokenizer(model_dir)
    data = prepare_data(config, tokenizer)
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    history = state.get("log_history", [])
    metrics: dict[str, Any] = {
        "model_dir": str(model_dir),
        "method": config.method,
        "steps": state.get("global_step"),
        "epochs": state.get("epoch"),
        "finished_from": str(checkpoint),
        "train_losses": [e["loss"] for e in history if "loss" in e],
        "eval_losses": [e["eval_loss"] for e in history if "eval_loss" in e],
    }
    final_dir = run_dir / ("model" if config.method == "full" else "adapter")
    if eval_with == "llama":
        return _finish_with_llama(config, checkpoint, final_dir, tokenizer, data, run_dir, metrics, compare_base)
    import torch
    from transformers import AutoModelForCausalLM

    if config.method == "full":
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=getattr(torch, config.dtype))
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(config, model_dir), str(checkpoint))
    model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    evaluate_and_record(model, config, data, run_dir, metrics, compare_base)
    return metrics


def _finish_with_llama(config, checkpoint: Path, final_dir: Path, tokenizer, data: PreparedData, run_dir: Path,
                       metrics: dict[str, Any], compare_base: bool) -> dict[str, Any]:
    import shutil

    from qiaoban.models import ensure_model
    from qiaoban.train.export import export_lora_gguf, heldout_loss_llama

    final_dir.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy(checkpoint / name, final_dir / name)
    tokenizer.save_pretrained(final_dir)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))  # export reads it
    base_gguf = ensure_model(config.model)
    adapter = export_lora_gguf(run_dir, run_dir / "adapter-f16.gguf")
    metrics["heldout_eval"] = f"llama.cpp on {base_gguf.name} (+ {adapter.name})"
    if data.eval_samples:
        metrics["heldout_tuned"] = heldout_loss_llama(base_gguf, data.eval_samples, adapter)
        if compare_base:
            metrics["heldout_base"] = heldout_loss_llama(base_gguf, data.eval_samples)
        with open(run_dir / "log.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"step": metrics["steps"], "heldout_loss": metrics["heldout_tuned"]["loss"],
                                     "heldout_base_loss": metrics.get("heldout_base", {}).get("loss")}) + "\n")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
