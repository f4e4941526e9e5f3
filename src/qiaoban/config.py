"""Paths and configuration files shared by every part of qiaoban."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def home() -> Path:
    """The user cache directory: assembled models, adapters, caches. `QIAOBAN_HOME`, default ~/.cache/qiaoban."""
    path = Path(os.environ.get("QIAOBAN_HOME") or Path.home() / ".cache" / "qiaoban").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    path = home() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def adapters_dir() -> Path:
    path = home() / "adapters"
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_threads() -> int:
    """Threads for CPU inference: every core we are allowed to use (llama.cpp's own default is half)."""
    if env := os.environ.get("QIAOBAN_THREADS"):
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def prefix_cache_bytes() -> int:
    """Memory for recent conversations' KV states in llama.cpp (QIAOBAN_PREFIX_CACHE_MB, default 1024; 0: none)."""
    return int(float(os.environ.get("QIAOBAN_PREFIX_CACHE_MB", "1024")) * (1 << 20))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a clear error for a missing file or a file that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        data = yaml.safe_load(handle) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data
