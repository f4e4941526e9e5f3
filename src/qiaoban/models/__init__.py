"""Models: the registry of known models and adapters (`registry`), the verified store their weights are assembled
into (`store`), GGUF file tools (`gguf_files`) and adapter lookup (`adapters`)."""

from qiaoban.models.adapters import ModelEntry, choose_adapter, list_models, resolve_adapter
from qiaoban.models.gguf_files import GGUF_MAGIC, ModelError, first_layers, gguf_metadata, read_gguf_header
from qiaoban.models.registry import (
    DEFAULT_MODEL,
    KNOWN_ADAPTERS,
    KNOWN_MODELS,
    UNTUNED,
    ChatProfile,
    KnownAdapter,
    KnownModel,
    lookup,
    profile_of,
)
from qiaoban.models.store import assemble, ensure_model, installed_path, parts_installed, sha256_file, verify

__all__ = [
    "DEFAULT_MODEL", "GGUF_MAGIC", "KNOWN_ADAPTERS", "KNOWN_MODELS", "UNTUNED", "ChatProfile", "KnownAdapter",
    "KnownModel", "ModelEntry", "ModelError", "assemble", "choose_adapter", "ensure_model", "first_layers",
    "gguf_metadata", "installed_path", "list_models", "lookup", "parts_installed", "profile_of", "read_gguf_header",
    "resolve_adapter", "sha256_file", "verify",
]
