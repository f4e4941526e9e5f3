"""Training throughput: our trainer (packed rows, no padding) vs a plain transformers Trainer (padded batches).

Both train the same model on the same encoded samples (same assistant-only labels), with the same optimizer,
batch size, steps and seed, in this one process, one after the other. Padding is the baseline's waste: a batch
is as wide as its longest sample. Packing fills every row with real tokens and keeps samples apart with
position ids, so the same compute trains on more real tokens.

Reported: real (non-padding) tokens per second for each, and the ratio ours / baseline (target >= 1.0).

    .venv/bin/python bench/train_throughput.py                       # fixture model, tiny dialogues, CPU
    .venv/bin/python bench/train_throughput.py --model default --data data/mix/train.jsonl --steps 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from qiaoban.dialogue import read_jsonl
from qiaoban.train.dataset import IGNORE_INDEX, collate, encode_dialogues, pack
from qiaoban.train.trainer import load_tokenizer, resolve_model_dir

ROOT = Path(__file__).resolve().parents[1]


def timed_run(model_dir: Path, rows: list, collator, args, out: Path) -> dict:
    """`args.steps` Trainer steps of LoRA on these rows; returns seconds and the real tokens seen."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

    set_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, args.dtype))
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    seen = {"real": 0, "padded": 0}

    def counting_collate(batch_rows):
        batch = collator(batch_rows)
        seen["real"] += sum(len(r["input_ids"] if isinstance(r, dict) else r.input_ids) for r in batch_rows)
        seen["padded"] += batch["input_ids"].numel()
        return batch

    trainer_args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=args.batch_size, max_steps=args.steps,
        learning_rate=1e-4, logging_steps=args.steps, save_strategy="no", report_to="none", seed=0,
        remove_unused_columns=False, dataloader_pin_memory=False, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=trainer_args, train_dataset=rows, data_collator=counting_collate)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "real_tokens": seen["real"], "batch_tokens": seen["padded"],
            "real_tokens_per_s": seen["real"] / seconds, "padding_share": 1 - seen["real"] / seen["padded"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fixture", help="known GGUF name (converted once) or HF model dir")
    parser.add_argument("--data", default=str(ROOT / "tests/train/data/tiny_dialogues.jsonl"), help="Dialogue JSONL")
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--system-prompt", default="You are a kind friend for children.")
    parser.add_argument("--out", default="/tmp/qiaoban-bench-train")
    args = parser.parse_args()

    from transformers import DataCollatorForSeq2Seq

    model_dir = resolve_model_dir(args.model)
    tokenizer = load_tokenizer(model_dir)
    samples, _ = encode_dialogues(tokenizer, read_jsonl(args.data), args.system_prompt, args.max_len)
    # Enough rows for every step of both runs, so neither repeats a shorter epoch.
    need = args.steps * args.batch_size
    while len(pack(samples, args.max_len)) < need:
        samples = samples + samples
    packed = pack(samples, args.max_len)[:need]
    # The baseline: the usual recipe, one sample per row, padded per batch by transformers' own collator.
    plain = [{"input_ids": s.input_ids, "labels": s.labels} for s in samples[:need]]
    padding = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE_INDEX)
    baseline = timed_run(model_dir, plain, padding, args, Path(args.out) / "baseline")
    ours = timed_run(model_dir, packed, lambda rows: collate(rows, tokenizer.pad_token_id), args, Path(args.out) / "ours")
    result = {
        "model": str(model_dir.name),
        "settings": {"max_len": args.max_len, "batch_size": args.batch_size, "steps": args.steps, "dtype": args.dtype},
        "baseline_padded_trainer": baseline,
        "ours_packed": ours,
        "ratio_real_tokens_per_s": ours["real_tokens_per_s"] / baseline["real_tokens_per_s"],
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
