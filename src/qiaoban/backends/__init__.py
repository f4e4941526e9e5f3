"""LLM backends behind one interface (`Backend.stream_chat`), and `load_backend` to pick one by name.

    from qiaoban.backends import load_backend
    backend = load_backend("llama", model="default")            # llama.cpp on the CPU
    backend = load_backend("llama-server", parallel=4)         # llama.cpp's server: 4 slots, batched
    backend = load_backend("openai", base_url="http://127.0.0.1:8000/v1", api_model="qwen")
    backend = load_backend("transformers", model="runs/lora/merged")
    for delta in backend.stream_chat([{"role": "user", "content": "你好"}]):
        print(delta, end="")
"""

from __future__ import annotations

from qiaoban.backends.base import (
    Backend,
    BackendError,
    ChatResult,
    ChatStream,
    EngineUnavailable,
    GenerationConfig,
    Message,
    Usage,
    estimate_tokens,
)

BACKENDS = ("llama", "llama-server", "openai", "transformers")

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "ChatResult",
    "ChatStream",
    "EngineUnavailable",
    "GenerationConfig",
    "Message",
    "Usage",
    "estimate_tokens",
    "load_backend",
]


def load_backend(
    kind: str = "llama",
    *,
    model: str | None = None,
    adapter: str | None = None,
    base_url: str | None = None,
    api_model: str | None = None,
    n_ctx: int | None = None,
    timeout_s: float = 120.0,
    parallel: int = 4,
) -> Backend:
    """Build a backend. `model` is a known model name or a GGUF path (llama) or a checkpoint dir (transformers);
    `adapter` a LoRA (GGUF for llama, a PEFT dir for transformers), "none" or None for the bare model;
    `parallel` the llama-server engine's slots."""
    adapter = None if adapter == "none" else adapter
    if kind in ("llama", "llama-server"):
        from qiaoban.backends.llama_cpp import DEFAULT_CONTEXT
        from qiaoban.models import DEFAULT_MODEL, ensure_model, resolve_adapter

        path = ensure_model(model or DEFAULT_MODEL)
        adapter_path = resolve_adapter(adapter) if adapter else None
        if kind == "llama":
            from qiaoban.backends.llama_cpp import LlamaCppBackend

            return LlamaCppBackend(path, adapter_path=adapter_path, n_ctx=n_ctx or DEFAULT_CONTEXT)
        from qiaoban.backends.llama_server import LlamaServerBackend

        return LlamaServerBackend(path, adapter_path=adapter_path, n_ctx=n_ctx or DEFAULT_CONTEXT, parallel=parallel,
                                  timeout_s=timeout_s)
    if kind == "openai":
        from qiaoban.backends.openai_http import OpenAIBackend

        if not base_url:
            raise BackendError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        from qiaoban.models import profile_of

        remote = OpenAIBackend(base_url, api_model or model or "default", timeout_s=timeout_s,
                               **({"context_length": n_ctx} if n_ctx else {}))
        remote.profile = profile_of(api_model or model or "", adapter)  # unknown: no filters
        return remote
    if kind == "transformers":
        from qiaoban.backends.transformers_hf import TransformersBackend

        if not model:
            raise BackendError("the transformers backend needs --model DIR (a Hugging Face checkpoint directory)")
        return TransformersBackend(model, adapter_dir=adapter)
    raise BackendError(f"unknown backend {kind!r}; choose one of {', '.join(BACKENDS)}")
