"""Hugging Face transformers: for GPUs and for checkpoints fresh out of `qiaoban train` (optionally + a PEFT
adapter). Streams through `TextIteratorStreamer` with generation in a worker thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

from qiaoban.backends.base import Backend, BackendError, ChatStream, GenerationConfig, Message, Usage


class TransformersBackend(Backend):
    def __init__(
        self,
        model_dir: str | Path,
        *,
        adapter_dir: str | Path | None = None,
        device: str | None = None,
        dtype: str = "auto",
        name: str | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").is_file():
            raise BackendError(f"{model_dir} is not a Hugging Face model directory (no config.json)")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        torch_dtype = {"auto": "auto", "bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if self.tokenizer.chat_template is None:
            raise BackendError(f"{model_dir}: the tokenizer has no chat template")
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype)
        if adapter_dir:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir))
        self.model = model.to(self.device).eval()
        self.name = name or model_dir.name + (f"+{Path(adapter_dir).name}" if adapter_dir else "")
        self.context_length = int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
        self._lock = threading.Lock()

    def _prompt_ids(self, messages: list[Message]):
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        return int(self._prompt_ids(messages).shape[-1])

    def stream_chat(self, messages: list[Message], gen: GenerationConfig | None = None) -> ChatStream:
        gen = gen or GenerationConfig()
        usage = Usage()
        return ChatStream(self.name, self._generate(messages, gen, usage), usage)

    def _generate(self, messages: list[Message], gen: GenerationConfig, usage: Usage) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        input_ids = self._prompt_ids(messages).to(self.device)
        usage.prompt_tokens = int(input_ids.shape[-1])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True,
                                        timeout=gen.timeout_s)
        sampling = gen.temperature > 0
        kwargs = dict(
            input_ids=input_ids,
            attention_mask=self._torch.ones_like(input_ids),
            max_new_tokens=gen.max_tokens,
            do_sample=sampling,
            repetition_penalty=gen.repeat_penalty,
            streamer=streamer,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        if sampling:
            kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=gen.top_k)
        output: dict[str, object] = {}
        stopped = threading.Event()
        kwargs["stopping_criteria"] = StoppingCriteriaList([_WhenSet(stopped)])

        def run() -> None:
            if gen.seed is not None:
                self._torch.manual_seed(gen.seed)
            try:
                with self._torch.inference_mode():
                    output["ids"] = self.model.generate(**kwargs)
            except Exception as err:  # surfaced to the caller below
                output["error"] = err
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            text = ""
            try:
                for piece in streamer:
                    text += piece
                    if gen.stop and any(s in text for s in gen.stop):
                        break
                    yield piece
            finally:  # a stop string, or the consumer closed the stream: generation stops at the next token
                stopped.set()
                worker.join()
        if "error" in output:
            raise BackendError(f"generation failed: {output['error']}")
        generated = output["ids"][0][input_ids.shape[-1]:]
        usage.completion_tokens = int(generated.shape[-1])
        usage.finish_reason = "length" if usage.completion_tokens >= gen.max_tokens else "stop"


class _WhenSet:
    """A transformers stopping criterion: true once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        return self.event.is_set()
