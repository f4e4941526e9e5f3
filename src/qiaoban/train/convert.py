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


# llama.cpp's tensor names for the projections a LoRA adapts -> the Hugging Face module path inside a block.
GGUF_TO_HF_MODULE = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def peft_adapter_from_gguf(adapter: str | Path, base_dir: Path, *, force: bool = False) -> Path:
    """A GGUF LoRA adapter (a shipped name or a path) -> a PEFT adapter folder in `$QIAOBAN_HOME/hf/adapters/`,
    so that training can continue from an adapter whose PEFT run is gone. Done once; returns the folder.

    llama.cpp stores each LoRA pair as `blk.N.<tensor>.weight.lora_a` (r x in) and `.lora_b` (out x r) with the
    scaling alpha in `adapter.lora.alpha`: the same matrices PEFT keeps, under other names. For the llama
    architecture its converter permutes the rows of the query and key projections (rotary layout), so their
    `lora_b` rows are put back in Hugging Face order.
    """
    import numpy as np
    import torch
    from gguf import GGUFReader
    from peft import LoraConfig, TaskType
    from safetensors.torch import save_file

    from qiaoban.models.adapters import resolve_adapter

    path = resolve_adapter(str(adapter))
    target = hf_dir() / "adapters" / path.stem
    if is_converted(target) and not force:
        return target
    reader = GGUFReader(str(path))
    alpha_field = reader.fields.get("adapter.lora.alpha")
    if alpha_field is None:
        raise ValueError(f"{path} is not a GGUF LoRA adapter (no adapter.lora.alpha)")
    alpha = float(alpha_field.parts[alpha_field.data[0]][0])
    arch_field = reader.fields.get("general.architecture")
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode() if arch_field else ""
    base_config = json.loads((base_dir / "config.json").read_text())
    heads = {"attn_q": base_config["num_attention_heads"],
             "attn_k": base_config.get("num_key_value_heads", base_config["num_attention_heads"])}
    tensors: dict[str, torch.Tensor] = {}
    layers, modules, ranks = set(), set(), set()
    for tensor in reader.tensors:
        block, index, name, _, kind = tensor.name.split(".")
        if block != "blk" or name not in GGUF_TO_HF_MODULE or kind not in ("lora_a", "lora_b"):
            raise ValueError(f"{path}: unexpected tensor {tensor.name}")
        shape = [int(n) for n in reversed(tensor.shape)]  # GGUF lists dimensions innermost first
        data = torch.from_numpy(np.asarray(tensor.data, dtype=np.float32).reshape(shape).copy())
        if arch == "llama" and kind == "lora_b" and name in heads:
            data = unpermute_rows(data, heads[name])
        module = GGUF_TO_HF_MODULE[name]
        peft_name = f"base_model.model.model.layers.{index}.{module}.lora_{kind[-1].upper()}.weight"
        tensors[peft_name] = data
        layers.add(int(index))
        modules.add(module.split(".")[-1])
        ranks.add(shape[0] if kind == "lora_a" else shape[1])
    if len(ranks) != 1:
        raise ValueError(f"{path}: LoRA ranks differ between tensors ({sorted(ranks)})")
    config = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=ranks.pop(), lora_alpha=alpha, lora_dropout=0.0,
        target_modules=sorted(modules), layers_to_transform=sorted(layers), base_model_name_or_path=str(base_dir),
    )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    config.save_pretrained(str(partial))
    save_file(tensors, str(partial / "adapter_model.safetensors"))
    (partial / DONE_MARKER).write_text(json.dumps({"gguf_adapter": str(path)}))
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target


def unpermute_rows(weight, n_head: int):
    """Undo llama.cpp's rotary permutation of a projection's output rows (its `LlamaModel.permute`)."""
    rows = weight.shape[0]
    return weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
