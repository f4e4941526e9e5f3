"""From a training run to files the chat runtime (llama.cpp) loads.

- `export_lora_gguf(run_dir)`: the PEFT LoRA adapter -> a GGUF LoRA adapter (`qiaoban chat --adapter PATH`).
- `export_merged_gguf(run_dir, quant="Q4_K_M")`: merge the adapter into the base (or take a full fine-tune),
  convert to an f16 GGUF, then quantize with `llama_cpp.llama_model_quantize`.

The converters are llama.cpp's own (`convert_lora_to_gguf.py`, `convert_hf_to_gguf.py` with its `gguf-py`),
which ship in llama-cpp-python's source distribution but not in the installed wheel. `ensure_converters()`
fetches that sdist once with pip (same version as the installed package) and extracts only the converter files
into `$QIAOBAN_HOME/tools/`; nothing of llama.cpp is kept in this repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

from qiaoban.backends import BackendError
from qiaoban.backends.llama_server import fetch_llama_sources
from qiaoban.config import adapters_dir, home

CONVERTER_FILES = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py")
CONVERTER_DIRS = ("conversion/", "gguf-py/")


class ExportError(RuntimeError):
    """A conversion step failed; the message carries the converter's own last lines."""


def ensure_converters() -> Path:
    """The folder with llama.cpp's converters for the installed llama-cpp-python (fetched once)."""
    release = version("llama-cpp-python")
    tools = home() / "tools" / f"llama.cpp-{release}"
    if (tools / ".complete").is_file():
        return tools
    try:
        archive = fetch_llama_sources(home() / "tools" / "sdist")
    except BackendError as err:
        raise ExportError(f"{err} (needed for llama.cpp's converters)") from err
    prefix = f"llama_cpp_python-{release}/vendor/llama.cpp/"
    partial = tools.with_name(tools.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(archive) as tar:
        members = []
        for member in tar.getmembers():
            if not member.name.startswith(prefix) or not member.isfile():
                continue
            rel = member.name[len(prefix):]
            if rel in CONVERTER_FILES or rel.startswith(CONVERTER_DIRS):
                member.name = rel
                members.append(member)
        if not members:
            raise ExportError(f"{archive} has no llama.cpp converters under {prefix}")
        tar.extractall(partial, members=members, filter="data")
    (partial / ".complete").write_text(release)
    shutil.rmtree(tools, ignore_errors=True)
    partial.rename(tools)
    archive.unlink()  # 75 MB of llama.cpp sources we no longer need
    return tools


def _run_converter(script: str, args: list[str]) -> None:
    tools = ensure_converters()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tools / "gguf-py"), str(tools)])}
    done = subprocess.run([sys.executable, str(tools / script), *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise ExportError(f"{script} failed (exit {done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")


def run_paths(run_dir: Path) -> tuple[dict, Path]:
    """The run's metrics (base model dir, method) and its final adapter/model folder."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file():
        raise ExportError(f"{run_dir} is not a finished training run (no metrics.json); train it first")
    metrics = json.loads(metrics_file.read_text())
    final = run_dir / ("model" if metrics["method"] == "full" else "adapter")
    if not final.is_dir():
        raise ExportError(f"{final} is missing; the run did not save its result")
    return metrics, final


def export_lora_gguf(run_dir: str | Path, out: str | Path | None = None, outtype: str = "f16") -> Path:
    """The run's LoRA as a GGUF adapter (default: $QIAOBAN_HOME/adapters/<run name>.gguf)."""
    metrics, adapter = run_paths(Path(run_dir))
    if metrics["method"] != "lora":
        raise ExportError(f"only LoRA runs export as a GGUF adapter (this run is {metrics['method']}); "
                          "use --to merged-q4 for full fine-tunes")
    out = Path(out) if out else adapters_dir() / f"{Path(run_dir).resolve().name}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    _run_converter("convert_lora_to_gguf.py",
                   [str(adapter), "--base", metrics["model_dir"], "--outfile", str(out), "--outtype", outtype])
    return out


def merged_model_dir(run_dir: Path, metrics: dict, final: Path, workdir: Path) -> Path:
    """A full HF checkpoint: the fine-tuned model itself, or base + LoRA merged."""
    if metrics["method"] == "full":
        return final
    if metrics["method"] != "lora":
        raise ExportError("a prefix-tuning run cannot be merged into the weights; keep it as a PEFT adapter")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(metrics["model_dir"], dtype=torch.bfloat16)
    merged = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
    target = workdir / "merged"
    merged.save_pretrained(target)
    AutoTokenizer.from_pretrained(final).save_pretrained(target)
    return target


def hf_to_gguf(model_dir: str | Path, out: str | Path, outtype: str = "f16") -> Path:
    """A Hugging Face checkpoint as an unquantized GGUF (llama.cpp's convert_hf_to_gguf.py)."""
    _run_converter("convert_hf_to_gguf.py", [str(model_dir), "--outfile", str(out), "--outtype", outtype])
    return Path(out)


def export_merged_gguf(run_dir: str | Path, out: str | Path | None = None, quant: str = "Q4_K_M") -> Path:
    """Merge (if LoRA) -> f16 GGUF -> quantized GGUF (default $QIAOBAN_HOME/models/<run name>-<quant>.gguf)."""
    from qiaoban.config import models_dir

    run_dir = Path(run_dir)
    metrics, final = run_paths(run_dir)
    out = Path(out) if out else models_dir() / f"{run_dir.resolve().name}-{quant.lower()}.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        model_dir = merged_model_dir(run_dir, metrics, final, Path(tmp))
        f16 = hf_to_gguf(model_dir, Path(tmp) / "model-f16.gguf")
        if quant.upper() in ("F16", "NONE"):
            shutil.move(f16, out)
        else:
            quantize_gguf(f16, out, quant)
    return out


def quantize_gguf(source: Path, out: Path, quant: str = "Q4_K_M") -> Path:
    """llama.cpp's own quantizer through llama-cpp-python."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}", None)
    if ftype is None:
        raise ExportError(f"unknown quantization {quant!r} (e.g. Q4_K_M, Q5_K_M, Q8_0)")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    from qiaoban.config import default_threads

    params.nthread = default_threads()
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), params)
    if status != 0:
        raise ExportError(f"llama_model_quantize returned {status} for {source} -> {out}")
    return out


def heldout_loss_llama(model_gguf: str | Path, samples: list, adapter_gguf: str | Path | None = None) -> dict:
    """Mean cross-entropy per assistant token, computed by llama.cpp (the chat runtime) on a GGUF model, with
    or without a GGUF LoRA. Token ids are fed as they are, so the labels line up with the training samples."""
    import math

    import numpy as np

    from qiaoban.backends.llama_scoring import open_for_scoring, token_nll
    from qiaoban.train.dataset import IGNORE_INDEX

    llm = open_for_scoring(model_gguf, adapter_gguf, n_ctx=max(len(s.input_ids) for s in samples) + 8)
    total, count = 0.0, 0
    try:
        for sample in samples:
            keep = np.array(sample.labels[1:]) != IGNORE_INDEX
            total += float(token_nll(llm, sample.input_ids)[keep].sum())
            count += int(keep.sum())
    finally:
        llm.close()
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50)), "tokens": count}
