"""An append-only JSONL cache on disk: one `{"key", "value"}` object per line.

Every model or judge call in evaluation goes through one, so a rerun is free and a killed run resumes where it
stopped. A line cut short by a crash is skipped when the file is read back (and rewritten on the next `put`).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from qiaoban.backends import Backend, ChatStream, GenerationConfig, Message, Usage


def stable_hash(obj: Any, length: int = 24) -> str:
    """A hash of any JSON-serialisable object that does not depend on dict order."""
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


class JsonlCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._data: dict[str, Any] = {}
        self.skipped_lines = 0
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        self._data[record["key"]] = record["value"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        self.skipped_lines += 1  # a line cut short by an interrupted run

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def put(self, key: str, value: Any) -> None:
        line = json.dumps({"key": key, "value": value}, ensure_ascii=False)
        with self._lock:
            self._data[key] = value
            with open(self.path, "a", encoding="utf-8") as handle:
                if handle.tell() > 0 and not self._ends_with_newline():
                    handle.write("\n")  # after a torn last line, start a fresh one
                handle.write(line + "\n")
                handle.flush()

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, 2)
            return handle.read(1) == b"\n"


class CachedBackend(Backend):
    """Wraps a backend so that every reply is cached under (model identity, generation settings, messages).

    Only finished replies are stored: a stream abandoned half-way is generated again next time.
    """

    def __init__(self, backend: Backend, cache: JsonlCache, identity: dict[str, Any] | None = None):
        self.inner = backend
        self.cache = cache
        self.identity = identity or {"name": backend.name, "backend": type(backend).__name__}
        self.name = backend.name
        self.context_length = backend.context_length
        self.profile = backend.profile
        self.calls = 0  # cache misses: real calls to the wrapped backend

    def key(self, messages: list[Message], gen: GenerationConfig | None = None) -> str:
        settings = {k: v for k, v in asdict(gen or GenerationConfig()).items() if k != "timeout_s"}
        return stable_hash({"model": self.identity, "gen": settings, "messages": messages})

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        return self.inner.count_prompt_tokens(messages)

    def stream_chat(self, messages: list[Message], gen: GenerationConfig | None = None) -> ChatStream:
        key = self.key(messages, gen)
        hit = self.cache.get(key)
        if hit is not None:
            usage = Usage(hit["prompt_tokens"], hit["completion_tokens"], hit["finish_reason"])
            return ChatStream(self.name, iter([hit["text"]]), usage)
        self.calls += 1
        inner = self.inner.stream_chat(messages, gen)
        usage = Usage()
        return ChatStream(self.name, self._record(key, inner, usage), usage)

    def _record(self, key: str, inner: ChatStream, usage: Usage) -> Iterator[str]:
        yield from inner
        result = inner.result
        usage.prompt_tokens, usage.completion_tokens = result.prompt_tokens, result.completion_tokens
        usage.finish_reason = result.finish_reason
        if result.finish_reason != "cancelled":
            self.cache.put(key, {"text": result.text, "prompt_tokens": result.prompt_tokens,
                                 "completion_tokens": result.completion_tokens,
                                 "finish_reason": result.finish_reason, "total_s": round(result.total_s, 3)})

    def close(self) -> None:
        self.inner.close()
