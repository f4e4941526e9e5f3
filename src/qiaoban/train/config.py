"""Training configs as data: a YAML file, optionally overridden by `section.key=value` strings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from qiaoban.config import load_yaml

METHODS = ("lora", "prefix", "full")
OBJECTIVES = ("sft", "dpo")


@dataclass
class DataConfig:
    train: str | None = None  # Dialogue JSONL ...
    eval: str | None = None  # ... with an optional held-out file
    mix: str | dict[str, Any] | None = None  # ... or a mix spec (file or inline) (see qiaoban.train.mix), which makes its own held-out split
    max_len: int = 512
    long_dialogues: str = "split"  # split | truncate
    packing: bool = True
    system_prompt: str = "persona"  # "persona": the long coaching prompt; "persona-short": the persona line for each
    # dialogue's meta.age_band; "" = none; else literal text
    max_eval_samples: int = 64


@dataclass
class LoraSpec:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    layers: list[int] | None = None  # block indices to adapt (e.g. the upper ones on a CPU); None = all


@dataclass
class PrefixSpec:
    num_virtual_tokens: int = 16
    projection: bool = True  # P-tuning v2 style reparameterisation through an MLP while training


@dataclass
class PreferenceSpec:
    """DPO (objective: dpo): data.train / data.eval are preference-pair files (qiaoban.train.pairs)."""

    init_adapter: str | None = None  # start from this adapter (a shipped GGUF name or path, or a PEFT folder);
    # the reference is a frozen copy of it. None: a fresh LoRA, the reference being the base (adapter disabled)
    beta: float = 0.1
    loss_type: str = "sigmoid"  # any of trl's DPO losses: sigmoid (DPO), ipo, robust, ...
    sft_weight: float = 0.0  # > 0 adds the chosen replies' NLL with this weight (RPO), against drift in fluency


@dataclass
class OptimConfig:
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 2
    grad_accum: int = 4
    lr: float = 2e-4
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    scheduler: str = "cosine"
    gradient_checkpointing: bool = False
    logging_steps: int = 5
    eval_steps: int = 0  # eval loss every N steps; 0 = only the held-out loss at the end (base and tuned)
    save_steps: int = 25
    save_total_limit: int = 2
    max_minutes: float | None = None  # stop (and save) after this much training time, e.g. on a shared CPU
    deepspeed: str | None = None  # a DeepSpeed JSON such as configs/deepspeed_zero2.json (GPU runs)
    threads: int | None = None  # torch CPU threads; None = every core we may use


@dataclass
class TrainConfig:
    model: str = "default"  # a known GGUF name (converted once) or a Hugging Face model directory
    method: str = "lora"
    objective: str = "sft"  # sft: imitate the dialogues; dpo: prefer the chosen reply of each pair
    dtype: str = "bfloat16"
    output_dir: str = "runs/lora"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSpec = field(default_factory=LoraSpec)
    prefix: PrefixSpec = field(default_factory=PrefixSpec)
    preference: PreferenceSpec = field(default_factory=PreferenceSpec)
    optim: OptimConfig = field(default_factory=OptimConfig)
    source: str = ""  # the YAML file this came from; relative data paths resolve against its folder too

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.objective == "dpo" and self.method != "lora":
            raise ValueError("objective dpo trains a LoRA adapter (method: lora)")
        if self.objective == "dpo" and self.data.mix:
            raise ValueError("objective dpo reads preference pairs from data.train / data.eval, not a mix")
        if self.dtype not in ("bfloat16", "float16", "float32"):
            raise ValueError(f"dtype must be bfloat16, float16 or float32, got {self.dtype!r}")
        if self.data.long_dialogues not in ("split", "truncate"):
            raise ValueError(f"data.long_dialogues must be split or truncate, got {self.data.long_dialogues!r}")
        if not (self.data.train or self.data.mix):
            raise ValueError("data needs either `train` (a Dialogue JSONL) or `mix` (a mix spec)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "lora": LoraSpec, "prefix": PrefixSpec, "preference": PreferenceSpec,
            "optim": OptimConfig}


def config_from_dict(raw: dict[str, Any], source: str = "") -> TrainConfig:
    raw = dict(raw)
    top_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(raw) - top_fields
    if unknown:
        raise ValueError(f"unknown config keys {sorted(unknown)}; allowed: {sorted(top_fields - {'source'})}")
    for name, cls in SECTIONS.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise ValueError(f"config section {name!r} must be a mapping")
        allowed = {f.name for f in dataclasses.fields(cls)}
        bad = set(section) - allowed
        if bad:
            raise ValueError(f"unknown keys in {name}: {sorted(bad)}; allowed: {sorted(allowed)}")
        raw[name] = cls(**section)
    return TrainConfig(**{**raw, "source": source or raw.get("source", "")})


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`optim.lr=1e-4`, `data.packing=false`, `model=/path/to/hf` (values parsed as YAML scalars)."""
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value (e.g. optim.lr=1e-4)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {part} is not a section")
        node[parts[-1]] = _scalar(value)
    return raw


def _scalar(text: str) -> Any:
    """A YAML scalar, with `1e-4` read as a number (YAML 1.1 wants `1.0e-4`)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    raw = apply_overrides(load_yaml(path), overrides or [])
    return config_from_dict(raw, source=str(path))


def resolve_path(config: TrainConfig, path: str) -> Path:
    """A data path as written, or relative to the config file's folder when that is where it exists."""
    candidate = Path(path).expanduser()
    if candidate.exists() or candidate.is_absolute() or not config.source:
        return candidate
    beside = Path(config.source).parent / candidate
    return beside if beside.exists() else candidate
