"""Recent conversations' KV states for llama.cpp, so that a session's next turn evaluates only what is new.

`qiaoban serve` has one llama.cpp context for every child: as soon as two sessions interleave, the context holds
the other child's conversation, and without this each turn would prefill its whole history again. After every
reply the state (llama.cpp's own `save_state`) is kept here, keyed by the tokens it holds; before the next
prompt, the state sharing the longest prefix with it is restored when it beats what the context already holds.
Bounded in bytes (~28 kB per token for the 1.5B); every turn puts its conversation's state back, so the least
recently used conversation is the first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from llama_cpp.llama import LlamaState

def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    unequal = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(unequal[0]) if unequal.size else n


def compact(state: LlamaState) -> LlamaState:
    """The state without the logits rows of every position: llama.cpp re-evaluates the last token after a
    restore, so one row is enough (a full copy is n_batch × vocabulary floats, ~300 MB for the 1.5B)."""
    from llama_cpp.llama import LlamaState

    return LlamaState(input_ids=state.input_ids.copy(), scores=state.scores[-1:].copy(),
                      n_tokens=state.n_tokens, llama_state=state.llama_state,
                      llama_state_size=state.llama_state_size, seed=state.seed)


class PrefixCache:
    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self._states: OrderedDict[tuple[int, ...], LlamaState] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0

    @property
    def size_bytes(self) -> int:
        return sum(s.llama_state_size for s in self._states.values())

    def __len__(self) -> int:
        return len(self._states)

    def best(self, tokens: Sequence[int]) -> tuple[LlamaState | None, int]:
        """The kept state sharing the longest prefix with `tokens`, and that length (0 and None when none)."""
        with self._lock:
            found, length = None, 0
            for key in self._states:
                shared = common_prefix(key, tokens)
                if shared > length:
                    found, length = key, shared
            return (self._states[found], length) if found is not None else (None, 0)

    def put(self, state: LlamaState) -> None:
        key = tuple(int(t) for t in state.input_ids[: state.n_tokens])
        if not key or state.llama_state_size > self.capacity_bytes:
            return
        with self._lock:
            # A state whose tokens are a prefix of this one's is superseded by it.
            for old in [k for k in self._states if len(k) <= len(key) and key[: len(k)] == k]:
                del self._states[old]
            self._states[key] = state
            while self.size_bytes > self.capacity_bytes:
                self._states.popitem(last=False)
