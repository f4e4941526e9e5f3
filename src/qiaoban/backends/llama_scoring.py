"""Token log-likelihoods under llama.cpp, the chat runtime: for perplexity (eval) and held-out loss (train).

    llm = open_for_scoring("model.gguf", adapter_path="adapter.gguf", n_ctx=1024)
    nll = token_nll(llm, tokens)    # nll[i] = -log p(tokens[i + 1] | tokens[: i + 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qiaoban.config import default_threads

_CHUNK = 128  # rows of logits copied at a time: a 150k vocabulary makes full copies large


def open_for_scoring(model_path: str | Path, adapter_path: str | Path | None = None, n_ctx: int = 2048,
                     n_threads: int | None = None) -> Any:
    """A llama.cpp instance that keeps the logits of every position (`logits_all`)."""
    from llama_cpp import Llama

    from qiaoban.backends.llama_cpp import quiet_stderr

    threads = n_threads or default_threads()
    with quiet_stderr():
        return Llama(model_path=str(model_path), lora_path=str(adapter_path) if adapter_path else None,
                     n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, logits_all=True, verbose=False)


def token_nll(llm: Any, tokens: Sequence[int]) -> np.ndarray:
    """Per-token negative log-likelihood of `tokens[1:]`, evaluated from an empty context."""
    llm.reset()
    llm.eval(list(tokens))
    targets = np.asarray(tokens[1:])
    nll = np.empty(len(targets))
    for start in range(0, len(targets), _CHUNK):
        logits = np.asarray(llm.scores[start : start + _CHUNK][: len(targets) - start], dtype=np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_z = (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))[:, 0]
        chunk = targets[start : start + len(logits)]
        nll[start : start + len(logits)] = log_z - logits[np.arange(len(logits)), chunk]
    return nll
