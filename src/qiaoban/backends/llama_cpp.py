"""llama.cpp on the CPU through llama-cpp-python: the default backend.

The prompt is rendered with the chat template stored in the GGUF (the same Jinja formatter llama-cpp-python
uses for `create_chat_completion`), so we know its exact token count and can trim history by tokens.
llama.cpp reuses the longest matching prefix of its KV cache, so a growing conversation only pays for the
new turn.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from qiaoban.backends.base import Backend, BackendError, ChatStream, GenerationConfig, Message, Usage
from qiaoban.config import default_threads

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
        self._formatter = chat_formatter(self.llm, self.model_path)
        # llama.cpp holds one sequence: callers from several threads take turns.
        self._lock = threading.Lock()

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
            for chunk in chunks:
                choice = chunk["choices"][0]
                if choice.get("finish_reason"):
                    usage.finish_reason = choice["finish_reason"]
                if choice["text"]:
                    pieces.append(choice["text"])
                    yield choice["text"]
            usage.completion_tokens = self.count_text_tokens("".join(pieces)) + (usage.finish_reason == "stop")

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            llm.close()
