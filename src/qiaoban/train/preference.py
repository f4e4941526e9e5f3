"""Preference tuning of a LoRA companion with trl's DPO: prefer the chosen reply of each pair over the rejected.

The policy starts from `preference.init_adapter` (e.g. the shipped SFT adapter, converted from its GGUF once),
and the reference is that same adapter frozen: trl copies a PEFT model's adapter into a second one ("ref") on the
same base weights, so there is no second model in memory. Without an init adapter a fresh LoRA is trained and
the reference is the base with the adapter disabled. Checkpoints, resume, the time budget and the JSONL log are
the same as for supervised runs (`qiaoban.train.trainer`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from qiaoban.train.config import TrainConfig, resolve_path
from qiaoban.train.pairs import PreferencePair, read_pairs
from qiaoban.train.trainer import (
    apply_method,
    callbacks,
    latest_checkpoint,
    load_model,
    load_tokenizer,
    resolve_model_dir,
    start_run,
    training_arguments,
)


def pair_prompt(config: TrainConfig, pair: PreferencePair) -> list[dict[str, str]]:
    """The system prompt the chat would use for this pair (as for SFT, `data.system_prompt`), then the history."""
    from qiaoban.chat import Persona

    mode = config.data.system_prompt
    if mode == "persona-short":
        system = Persona(age_band=pair.age_band).system_prompt(short=True)
    elif mode == "persona":
        system = Persona(age_band=pair.age_band).system_prompt()
    else:
        system = mode
    return ([{"role": "system", "content": system}] if system else []) + pair.history


def pair_rows(config: TrainConfig, pairs: list[PreferencePair]) -> list[dict[str, Any]]:
    """trl's conversational preference format; it renders the chat template itself."""
    return [
        {"prompt": pair_prompt(config, p), "chosen": [{"role": "assistant", "content": p.chosen}],
         "rejected": [{"role": "assistant", "content": p.rejected}]}
        for p in pairs
    ]


def policy_model(config: TrainConfig, model_dir: Path):
    """The base with the adapter to train: the init adapter (trainable), or a fresh LoRA."""
    model = load_model(config, model_dir)
    init = config.preference.init_adapter
    if not init:
        return apply_method(model, config)
    from peft import PeftModel

    from qiaoban.train.convert import peft_adapter_from_gguf

    folder = Path(init).expanduser()
    if not (folder / "adapter_config.json").is_file():
        folder = peft_adapter_from_gguf(init, model_dir)
    model = PeftModel.from_pretrained(model, str(folder), is_trainable=True)
    if config.optim.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


def run_preference_training(config: TrainConfig, *, resume: bool = True) -> dict[str, Any]:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    run_dir = start_run(config)
    train_pairs = read_pairs(resolve_path(config, config.data.train))  # bad data fails before the model loads
    eval_pairs = read_pairs(resolve_path(config, config.data.eval)) if config.data.eval else []
    eval_pairs = eval_pairs[: config.data.max_eval_samples]
    stats = {"train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs),
             "train_sources": dict(Counter(p.source for p in train_pairs))}
    (run_dir / "data_stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=2))
    model_dir = resolve_model_dir(config.model)
    tokenizer = load_tokenizer(model_dir)
    model = policy_model(config, model_dir)

    spec = config.preference
    losses, weights = [spec.loss_type], [1.0]
    if spec.sft_weight > 0:
        losses, weights = [spec.loss_type, "sft"], [1.0, spec.sft_weight]
    args = training_arguments(
        config, run_dir, has_eval=bool(eval_pairs), arguments_class=DPOConfig,
        beta=spec.beta, loss_type=losses, loss_weights=weights, max_length=config.data.max_len, label_names=[],
    )
    trainer = DPOTrainer(
        model=model, args=args, processing_class=tokenizer,
        train_dataset=Dataset.from_list(pair_rows(config, train_pairs)),
        eval_dataset=Dataset.from_list(pair_rows(config, eval_pairs)) if eval_pairs else None,
        callbacks=callbacks(run_dir / "log.jsonl", config.optim.max_minutes),
    )
    checkpoint = latest_checkpoint(run_dir) if resume else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    final_dir = run_dir / "adapter"
    trainer.model.save_pretrained(str(final_dir), selected_adapters=["default"])
    tokenizer.save_pretrained(final_dir)
    history = trainer.state.log_history
    metrics: dict[str, Any] = {
        "model_dir": str(model_dir),
        "method": config.method,
        "objective": config.objective,
        "init_adapter": spec.init_adapter,
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": result.training_loss,
        "train_seconds": seconds,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "train_losses": [e["loss"] for e in history if "loss" in e],
        "train_reward_accuracy": [e["rewards/accuracies"] for e in history if "rewards/accuracies" in e],
    }
    if eval_pairs:
        metrics["heldout"] = {k: v for k, v in trainer.evaluate().items() if k.startswith(("eval_loss", "eval_rewards"))}
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
