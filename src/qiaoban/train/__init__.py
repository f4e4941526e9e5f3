"""Fine-tuning: data building (assistant-only labels, packing, mixes), LoRA / prefix / full training, export.

    from qiaoban.train import load_config, run_training, export_lora_gguf
    metrics = run_training(load_config("configs/lora_1.5b_cpu.yaml"))
    export_lora_gguf("runs/companion-1.5b")
    run_preference_training(load_config("configs/dpo_1.5b_cpu.yaml"))  # DPO on preference pairs

Heavy libraries (torch, transformers, peft) are imported inside the functions that need them.
"""

from qiaoban.train.config import TrainConfig, config_from_dict, load_config
from qiaoban.train.convert import convert_gguf, converted_path, peft_adapter_from_gguf
from qiaoban.train.dataset import (
    IGNORE_INDEX,
    PackedRow,
    Sample,
    collate,
    encode_dialogue,
    encode_dialogues,
    pack,
)
from qiaoban.train.export import (
    ExportError,
    ensure_converters,
    export_lora_gguf,
    export_merged_gguf,
    quantize_gguf,
)
from qiaoban.train.memory import MemoryBudgetError
from qiaoban.train.mix import MixError, MixSpec, build_mix
from qiaoban.train.pairs import PairError, PreferencePair, read_pairs, write_pairs
from qiaoban.train.preference import run_preference_training
from qiaoban.train.trainer import heldout_loss, prepare_data, run_training

__all__ = [
    "IGNORE_INDEX",
    "ExportError",
    "MemoryBudgetError",
    "MixError",
    "MixSpec",
    "PairError",
    "PreferencePair",
    "PackedRow",
    "Sample",
    "TrainConfig",
    "build_mix",
    "collate",
    "config_from_dict",
    "convert_gguf",
    "converted_path",
    "encode_dialogue",
    "encode_dialogues",
    "ensure_converters",
    "export_lora_gguf",
    "export_merged_gguf",
    "heldout_loss",
    "load_config",
    "pack",
    "peft_adapter_from_gguf",
    "prepare_data",
    "quantize_gguf",
    "read_pairs",
    "run_preference_training",
    "run_training",
    "write_pairs",
]
