"""GGUF files: checking a header, reading metadata, and cutting a model after its first blocks."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from qiaoban.config import models_dir

GGUF_MAGIC = b"GGUF"


class ModelError(RuntimeError):
    """A model that is missing, not installed, or fails verification."""


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


def first_layers(source: Path, layers: int) -> Path:
    """A copy of a GGUF model that keeps only its first `layers` transformer blocks, built once next to the models
    (QIAOBAN_HOME/models, written atomically). llama.cpp's embeddings of it are that depth's hidden states, which a
    linear probe reads better than the last layer's (see qiaoban.safety.head)."""
    import gguf

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


