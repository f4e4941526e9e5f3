"""Adapters and the model listing: LoRA GGUFs found in the store and in the repository, and which one a command
loads by default (the registry's explicit `default_adapter`, never a file-name guess)."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from qiaoban.config import adapters_dir
from qiaoban.models.gguf_files import ModelError, read_gguf_header
from qiaoban.models.registry import DEFAULT_MODEL, KNOWN_ADAPTERS, KNOWN_MODELS, lookup
from qiaoban.models.store import installed_path, parts_installed


@dataclass
class ModelEntry:
    name: str
    kind: str  # "model" or "adapter"
    installed: bool
    path: str
    size: int
    description: str


def list_models() -> list[ModelEntry]:
    """Known models (installed or not) and GGUF adapters found in the store and in the package."""
    entries: list[ModelEntry] = []
    for model in KNOWN_MODELS.values():
        try:
            path = installed_path(model)
        except ModelError:
            path = None
        installed = bool(path and path.is_file() and path.stat().st_size == model.size)
        entries.append(
            ModelEntry(
                name=model.name + (" (default)" if model.name == DEFAULT_MODEL else ""),
                kind="model",
                installed=installed,
                path=str(path) if path else "",
                size=path.stat().st_size if installed and path else model.size,
                description=model.description
                + ("" if installed else " — parts installed, not assembled" if parts_installed(model) else " — not installed"),
            )
        )
    defaults = {m.default_adapter for m in KNOWN_MODELS.values() if m.default_adapter}
    for path in sorted(_adapter_files()):
        known = KNOWN_ADAPTERS.get(path.stem)
        entries.append(
            ModelEntry(name=path.stem + (" (default)" if path.stem in defaults else ""), kind="adapter",
                       installed=True, path=str(path), size=path.stat().st_size,
                       description=f"{known.description} (for {known.base})" if known else "LoRA adapter (GGUF)")
        )
    return entries


def _adapter_files() -> set[Path]:
    """GGUF adapters in the store and those that ship inside the package (`qiaoban/models/adapters/`)."""
    found = set(adapters_dir().glob("**/*.gguf"))
    shipped = resources.files("qiaoban.models").joinpath("adapters")
    if shipped.is_dir():
        found |= set(Path(str(shipped)).glob("**/*.gguf"))
    return {p.resolve() for p in found}


def resolve_adapter(name_or_path: str) -> Path:
    """An adapter given by path, or by name as listed by `qiaoban models`."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        read_gguf_header(path)
        return path
    for candidate in _adapter_files():
        if candidate.stem == name_or_path:
            return candidate
    raise ModelError(f"no adapter file at {path} and no known adapter named {name_or_path!r}")


def choose_adapter(requested: str | None, backend: str, model: str | None) -> str | None:
    """The adapter a command should load: `--adapter` as given, "none" for the bare model, and by default the
    registry's `default_adapter` for the model, on llama.cpp only."""
    if requested:
        return None if requested == "none" else requested
    entry = lookup(model or DEFAULT_MODEL)
    if backend not in ("llama", "llama-server") or entry is None or entry.default_adapter is None:
        return None
    try:
        return str(resolve_adapter(entry.default_adapter))
    except ModelError as err:
        raise ModelError(f"{entry.name}'s default adapter is missing ({err}); reinstall qiaoban, or pass "
                         "--adapter none for the bare model") from None
