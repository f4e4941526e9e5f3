"""Will it fit? A parameter count times bytes per parameter, checked before anything is loaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

BYTES_PER_DTYPE = {"float32": 4, "bfloat16": 2, "float16": 2}


class MemoryBudgetError(MemoryError):
    """The run would not fit in RAM (or GPU memory); the message says how much it needs and has."""


def available_ram_bytes() -> int:
    """MemAvailable from /proc/meminfo (what can be allocated without swapping), else total physical RAM."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_gpu_bytes() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


def gguf_param_count(path: Path) -> int:
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    return sum(int(t.n_elements) for t in reader.tensors)


def hf_param_count(model_dir: Path) -> int:
    """Parameters of a checkpoint from its safetensors headers (no weights read), else from the config."""
    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    if files:
        total = 0
        for file in files:
            with open(file, "rb") as handle:
                size = int.from_bytes(handle.read(8), "little")
                header = json.loads(handle.read(size))
            for name, info in header.items():
                if name != "__metadata__":
                    count = 1
                    for dim in info["shape"]:
                        count *= dim
                    total += count
        return total
    config = json.loads((model_dir / "config.json").read_text())
    hidden, layers = config["hidden_size"], config["num_hidden_layers"]
    inter, vocab = config.get("intermediate_size", 4 * hidden), config["vocab_size"]
    tied = config.get("tie_word_embeddings", False)
    return layers * (4 * hidden * hidden + 3 * hidden * inter) + vocab * hidden * (1 if tied else 2)


def training_bytes(params: int, method: str, dtype: str, seq_len: int, batch_size: int, hidden: int = 2048,
                   layers: int = 28, vocab: int = 151936, trainable_fraction: float = 0.012) -> int:
    """A rough estimate of peak training memory, calibrated on this machine.

    weights (dtype) + for trainable parameters an fp32 copy, its gradient and two Adam moments (16 bytes)
    + activations per token: ~84 bytes per hidden unit per layer per dtype byte (no activation checkpointing)
    plus ~12 bytes per vocabulary entry for the logits and their gradient + 1 GiB for the runtime.
    Measured: Qwen2.5-1.5B bf16, LoRA r16 on all linear layers, 768 tokens x 1 -> ~10 GB resident.
    """
    width = BYTES_PER_DTYPE[dtype]
    weight_bytes = params * width
    trainable = params if method == "full" else int(params * trainable_fraction)
    per_token = layers * hidden * width * 84 + vocab * 12
    return weight_bytes + trainable * 16 + per_token * seq_len * batch_size + (1 << 30)


def check_fits(need: int, *, where: str = "cpu", what: str = "this run") -> None:
    have = available_ram_bytes() if where == "cpu" else available_gpu_bytes()
    if have is None:
        return
    if need > have:
        raise MemoryBudgetError(
            f"{what} needs about {need / 2**30:.1f} GiB of {'RAM' if where == 'cpu' else 'GPU memory'} but only "
            f"{have / 2**30:.1f} GiB is free. Try: method lora instead of full, dtype bfloat16, a shorter "
            f"max_seq_len, a smaller batch_size (raise grad_accum instead), or a smaller base model."
        )
