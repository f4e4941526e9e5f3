"""Turn a GGUF model into an ordinary, trainable Hugging Face checkpoint, once.

transformers reads a GGUF (`from_pretrained(dir, gguf_file=...)`), but the loaded model stays flagged as
quantized and refuses to be saved or trained. We load it dequantized, clear the quantizer flags, and save
weights + config + the tokenizer (converted from the GGUF's own vocabulary and chat template) into
`$QIAOBAN_HOME/hf/<name>`. For the 1.5B this takes about 70 s and 9 GB of RAM on the CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from qiaoban.config import home
from qiaoban.models import ensure_model, lookup

DONE_MARKER = "qiaoban_converted.json"


def hf_dir() -> Path:
    path = home() / "hf"
    path.mkdir(parents=True, exist_ok=True)
    return path


def converted_name(name_or_path: str) -> str:
    known = lookup(name_or_path)
    return known.name if known else Path(name_or_path).stem


def converted_path(name_or_path: str) -> Path:
    """Where `convert_gguf(name_or_path)` puts (or has put) the checkpoint."""
    return hf_dir() / converted_name(name_or_path)


def is_converted(path: Path) -> bool:
    return (path / DONE_MARKER).is_file()


def convert_gguf(name_or_path: str = "default", *, dtype: str = "bfloat16", force: bool = False) -> Path:
    """Dequantize a GGUF (a known model name or a path) into `$QIAOBAN_HOME/hf/<name>`; returns that directory.

    Idempotent: a finished conversion (marked by a stamp file written last) is reused unless `force`.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path = ensure_model(name_or_path)
    target = converted_path(name_or_path)
    if is_converted(target) and not force:
        return target
    check_memory_for_conversion(gguf_path)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent),
        gguf_file=gguf_path.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=getattr(torch, dtype),
    )
    clear_quantizer(model)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / DONE_MARKER).write_text(json.dumps({"gguf": str(gguf_path), "dtype": dtype}))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def clear_quantizer(model) -> None:
    """Make a dequantized GGUF model look like a plain one, so it can be saved and trained."""
    model.hf_quantizer = None
    for attr in ("is_quantized", "quantization_method"):
        if attr in vars(model):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def check_memory_for_conversion(gguf_path: Path) -> None:
    from qiaoban.train.memory import MemoryBudgetError, available_ram_bytes, gguf_param_count

    params = gguf_param_count(gguf_path)
    # fp32 dequantization buffers plus the bf16 copy that is saved: about 6 bytes per parameter at peak.
    need = params * 6
    have = available_ram_bytes()
    if need > have:
        raise MemoryBudgetError(
            f"converting {gguf_path.name} ({params / 1e9:.2f}B parameters) needs about {need / 2**30:.1f} GiB of "
            f"RAM, only {have / 2**30:.1f} GiB is available; close other jobs and retry"
        )
