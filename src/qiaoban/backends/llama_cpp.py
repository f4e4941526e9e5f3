"""llama.cpp on the CPU through llama-cpp-python: the default backend.

The prompt is rendered with the chat template stored in the GGUF (the same Jinja formatter llama-cpp-python
uses for `create_chat_completion`), so we know its exact token count and can trim history by tokens.
llama.cpp reuses the longest matching prefix of its KV cache, so a growing conversation only pays for the
new turn. `warm(system_prompt)` makes the very first turn cheap too: the KV state after the system prompt is
computed once, saved under `QIAOBAN_HOME/prompt-cache` with what it was built from, and restored by later
processes; a cache that does not match or does not verify is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from qiaoban.backends.base import Backend, BackendError, ChatStream, GenerationConfig, Message, Usage
from qiaoban.backends.prefix_cache import PrefixCache, common_prefix, compact
from qiaoban.config import default_threads, home
from qiaoban.config import prefix_cache_bytes as prefix_cache_bytes_default
from qiaoban.models.registry import profile_of

DEFAULT_CONTEXT = 4096


@contextlib.contextmanager
def quiet_stderr():
    """llama.cpp prints its load log on fd 2 even when verbose=False; keep a terminal chat clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


def chat_formatter(llm, model_path: Path, add_generation_prompt: bool = True):
    """The Jinja formatter for the chat template stored in the GGUF, as llama-cpp-python builds it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        raise BackendError(f"{model_path} has no chat template in its metadata")
    eos_id, bos_id = llm.token_eos(), llm.token_bos()
    token_text = llm._model.token_get_text
    return Jinja2ChatFormatter(
        template=template,
        eos_token=token_text(eos_id) if eos_id != -1 else "",
        bos_token=token_text(bos_id) if bos_id != -1 else "",
        add_generation_prompt=add_generation_prompt,
    )


class LlamaCppBackend(Backend):
    def __init__(
        self,
        model_path: str | Path,
        *,
        adapter_path: str | Path | None = None,
        n_ctx: int = DEFAULT_CONTEXT,
        n_threads: int | None = None,
        name: str | None = None,
        verbose: bool = False,
        prefix_cache_bytes: int | None = None,
    ):
        from llama_cpp import Llama

        self.model_path = Path(model_path)
        self.adapter_path = Path(adapter_path) if adapter_path else None
        threads = n_threads or default_threads()
        try:
            with contextlib.nullcontext() if verbose else quiet_stderr():
                self.llm = Llama(
                    model_path=str(self.model_path),
                    lora_path=str(self.adapter_path) if self.adapter_path else None,
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    verbose=verbose,
                )
        except (ValueError, RuntimeError) as err:
            raise BackendError(f"llama.cpp could not load {self.model_path}: {err}") from err
        self.name = name or self.model_path.stem + (f"+{self.adapter_path.stem}" if self.adapter_path else "")
        self.context_length = self.llm.n_ctx()
        self.profile = profile_of(str(self.model_path), str(self.adapter_path) if self.adapter_path else None)
        self._formatter = chat_formatter(self.llm, self.model_path)
        # llama.cpp holds one sequence: callers from several threads take turns.
        self._lock = threading.Lock()
        self.prefix_cache = PrefixCache(prefix_cache_bytes_default() if prefix_cache_bytes is None else prefix_cache_bytes)

    def render_prompt(self, messages: list[Message]) -> tuple[list[int], list[str]]:
        rendered = self._formatter(messages=messages)
        tokens = self.llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True)
        return tokens, [s for s in rendered.stop if s]

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        return len(self.render_prompt(messages)[0])

    def count_text_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def stream_chat(self, messages: list[Message], gen: GenerationConfig | None = None) -> ChatStream:
        gen = gen or GenerationConfig()
        usage = Usage()
        return ChatStream(self.name, self._generate(messages, gen, usage), usage)

    def _generate(self, messages: list[Message], gen: GenerationConfig, usage: Usage) -> Iterator[str]:
        tokens, stops = self.render_prompt(messages)
        usage.prompt_tokens = len(tokens)
        budget = self.context_length - len(tokens)
        if budget <= 0:
            raise BackendError(f"prompt of {len(tokens)} tokens does not fit the {self.context_length}-token context")
        with self._lock:
            self._resume_longest_prefix(tokens)
            pieces: list[str] = []
            chunks = self.llm.create_completion(
                prompt=tokens,
                max_tokens=min(gen.max_tokens, budget),
                temperature=gen.temperature,
                top_p=gen.top_p,
                top_k=gen.top_k,
                repeat_penalty=gen.repeat_penalty,
                seed=gen.seed,
                stop=stops + list(gen.stop),
                stream=True,
            )
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    if choice.get("finish_reason"):
                        usage.finish_reason = choice["finish_reason"]
                    if choice["text"]:
                        pieces.append(choice["text"])
                        yield choice["text"]
            finally:  # also when the reader stopped early: this conversation's next turn starts from here
                chunks.close()
                self.prefix_cache.put(compact(self.llm.save_state()))
            usage.completion_tokens = self.count_text_tokens("".join(pieces)) + (usage.finish_reason == "stop")

    def _resume_longest_prefix(self, tokens: list[int]) -> None:
        """Restore the kept state that shares more of `tokens` than the context does (another session may have
        used the context since); llama.cpp then evaluates only the rest."""
        held = common_prefix(self.llm.input_ids[: self.llm.n_tokens], tokens)
        state, shared = self.prefix_cache.best(tokens)
        if state is not None and shared > held:
            self.llm.load_state(state)
            self.prefix_cache.hits += 1

    def prompt_prefix(self, system_prompt: str) -> list[int]:
        """The tokens every conversation under `system_prompt` starts with (up to the first child message)."""
        first, _ = self.render_prompt([{"role": "system", "content": system_prompt}, {"role": "user", "content": "甲"}])
        second, _ = self.render_prompt([{"role": "system", "content": system_prompt}, {"role": "user", "content": "乙"}])
        same = next((i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b), min(len(first), len(second)))
        return first[:same]

    def _built_from(self, tokens: list[int]) -> dict[str, object]:
        import llama_cpp

        def file_id(path: Path | None) -> dict[str, object] | None:
            if path is None:
                return None
            stat = path.stat()
            return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}

        return {"model": file_id(self.model_path), "adapter": file_id(self.adapter_path), "n_ctx": self.context_length,
                "llama_cpp": llama_cpp.__version__,
                "tokens": hashlib.sha256(np.asarray(tokens, dtype=np.int32).tobytes()).hexdigest()}

    def warm(self, system_prompt: str, cache_dir: str | Path | None = None) -> str:
        """Have the KV state after `system_prompt` in the context: "loaded" from the cache, "built" (and saved),
        or "ready" when the context already starts with it."""
        tokens = self.prompt_prefix(system_prompt)
        with self._lock:
            if list(self.llm._input_ids[: len(tokens)]) == tokens:
                return "ready"
            built_from = self._built_from(tokens)
            key = hashlib.sha256(json.dumps(built_from, sort_keys=True).encode()).hexdigest()[:24]
            folder = Path(cache_dir) if cache_dir else home() / "prompt-cache"
            state_path, manifest_path = folder / f"{key}.npz", folder / f"{key}.json"
            if self._load_state(state_path, manifest_path, built_from):
                return "loaded"
            self.llm.reset()
            self.llm.eval(tokens)
            self._save_state(state_path, manifest_path, built_from)
            return "built"

    def _load_state(self, state_path: Path, manifest_path: Path, built_from: dict[str, object]) -> bool:
        from llama_cpp.llama import LlamaState

        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
            data = state_path.read_bytes()
            if manifest["built_from"] != built_from or hashlib.sha256(data).hexdigest() != manifest["sha256"]:
                return False
            with np.load(state_path) as saved:
                raw = saved["llama_state"].tobytes()
                state = LlamaState(input_ids=saved["input_ids"], scores=saved["scores"],
                                   n_tokens=int(saved["n_tokens"]), llama_state=raw, llama_state_size=len(raw),
                                   seed=int(saved["seed"]))
            self.llm.load_state(state)
            return True
        except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError):
            self.llm.reset()
            return False

    def _save_state(self, state_path: Path, manifest_path: Path, built_from: dict[str, object]) -> None:
        state = self.llm.save_state()
        state_path.parent.mkdir(parents=True, exist_ok=True)
        partial = state_path.with_suffix(".partial.npz")
        # Only the last position's logits are ever read back (logits_all is off): keep that row alone.
        np.savez(partial, llama_state=np.frombuffer(state.llama_state, dtype=np.uint8),
                 input_ids=state.input_ids, scores=state.scores[-1:], n_tokens=state.n_tokens, seed=state.seed)
        digest = hashlib.sha256(partial.read_bytes()).hexdigest()
        partial.replace(state_path)
        manifest_path.write_text(json.dumps({"built_from": built_from, "sha256": digest}, indent=2), "utf-8")

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
