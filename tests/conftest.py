"""Shared fixtures: real GGUF models from the packaged model store, and the public corpora when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("QIAOBAN_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _model(name: str) -> Path:
    from qiaoban.models import ModelError, ensure_model

    try:
        return ensure_model(name)
    except ModelError as err:
        pytest.skip(f"model {name} not available: {err}")


@pytest.fixture(scope="session")
def fixture_model_path() -> Path:
    """SmolLM2-135M-Instruct (English only): fast enough for every integration test."""
    return _model("fixture")


@pytest.fixture(scope="session")
def default_model_path() -> Path:
    """The 1.5B default model: only for tests marked slow."""
    return _model("default")


@pytest.fixture(scope="session")
def fixture_backend(fixture_model_path):
    from qiaoban.backends.llama_cpp import LlamaCppBackend

    backend = LlamaCppBackend(fixture_model_path, n_ctx=2048)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"public corpora not found at {SHARED_DATA}")
    return SHARED_DATA
