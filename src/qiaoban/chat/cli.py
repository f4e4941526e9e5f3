"""`qiaoban chat`: talk to the companion in a terminal, or send one message (`--message`, `--json`)."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Annotated

import typer

from qiaoban.backends import BackendError, GenerationConfig, load_backend
from qiaoban.chat.engine import ChatEngine, Persona
from qiaoban.cli_errors import FAILED, fail
from qiaoban.config import home
from qiaoban.dialogue import write_jsonl
from qiaoban.models import ModelError, choose_adapter

HELP = """Talk with the companion.

Interactive (a terminal, or lines piped on stdin, one message per line):

  qiaoban chat

  commands: /reset starts over, /save FILE writes the conversation as Dialogue JSONL, /exit quits.

One message, for scripts:

  qiaoban chat --message "我今天考试没考好" --json

prints {"reply", "model", "prompt_tokens", "completion_tokens", "ttft_s", "tokens_per_s", "safety"}.

Models: --model takes a known name (see `qiaoban models`) or any GGUF path; --adapter a LoRA GGUF.
Other backends: --backend openai --base-url URL --api-model NAME (key from QIAOBAN_API_KEY or OPENAI_API_KEY),
or --backend transformers --model CHECKPOINT_DIR.
"""


class SafetyRecorder:
    """The guard for the engine, and a guardian event for each detection (in QIAOBAN_HOME/guardian.sqlite,
    without the child's words), as `qiaoban serve`'s guardian view shows them."""

    def __init__(self) -> None:
        from qiaoban.safety import EventStore, SafetyGuard

        self.guard = SafetyGuard()
        self.store = EventStore(home() / "guardian.sqlite")
        self.session_id = "cli-" + uuid.uuid4().hex[:12]

    def record(self, reply) -> None:
        if reply.verdict is not None and reply.verdict.risk:
            self.store.record(reply.verdict, session_id=self.session_id)


def chat(
    message: Annotated[str | None, typer.Option("--message", "-m", help="Send one message, print the reply, exit.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="With --message: print one JSON object.")] = False,
    model: Annotated[str | None, typer.Option(help="Known model name or GGUF path (default: the 1.5B).")] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter (GGUF path or name from `qiaoban models`; \"none\" for the bare model). Default: the companion adapter, with the default model.")] = None,
    backend: Annotated[str, typer.Option(help="llama | openai | transformers")] = "llama",
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")] = None,
    api_model: Annotated[str | None, typer.Option(help="Model name to request from --base-url.")] = None,
    name: Annotated[str | None, typer.Option(help="The companion's name.")] = None,
    age_band: Annotated[str | None, typer.Option(help="The child's age band: 6-8, 9-12, 13-15, 16-18.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest reply in tokens.")] = 160,
    temperature: Annotated[float, typer.Option()] = 0.7,
    seed: Annotated[int | None, typer.Option(help="Sampling seed, for reproducible replies.")] = None,
    safety: Annotated[bool, typer.Option(help="Screen messages and replies (--no-safety for research only).")] = True,
) -> None:
    try:
        persona = Persona(**{k: v for k, v in {"name": name, "age_band": age_band}.items() if v})
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    gen = GenerationConfig(max_tokens=max_tokens, temperature=temperature, seed=seed)
    try:
        if message is None and sys.stdin.isatty():
            typer.echo("正在加载模型……", err=True)
        llm = load_backend(backend, model=model, adapter=choose_adapter(adapter, backend, model),
                           base_url=base_url, api_model=api_model)
    except (ModelError, BackendError) as err:
        fail(str(err))
    recorder = SafetyRecorder() if safety else None
    if recorder and message is None:
        recorder.guard.preload()
    engine = ChatEngine(llm, persona, gen, guard=recorder.guard if recorder else None)
    try:
        engine.warm()
        if message is not None:
            _one_shot(engine, message, as_json, recorder)
        else:
            _interactive(engine, recorder)
    except BackendError as err:
        fail(str(err), FAILED)



def _one_shot(engine: ChatEngine, message: str, as_json: bool, recorder: SafetyRecorder | None) -> None:
    try:
        stream = engine.stream(message)
    except ValueError as err:
        fail(str(err))
    if as_json:
        reply = stream.collect()
    else:
        for piece in stream:
            typer.echo(piece, nl=False)
        typer.echo()
        reply = stream.reply
    if recorder:
        recorder.record(reply)
    if not as_json:
        return
    result = reply.result
    verdict = reply.verdict
    typer.echo(json.dumps({
        "reply": reply.text,
        "model": engine.backend.name,
        "prompt_tokens": result.prompt_tokens if result else 0,
        "completion_tokens": result.completion_tokens if result else 0,
        "ttft_s": round(result.ttft_s, 4) if result else 0.0,
        "tokens_per_s": round(result.tokens_per_s, 2) if result else 0.0,
        "safety": {"risk": verdict.risk, "category": verdict.category, "severity": verdict.severity}
        if verdict is not None else None,
    }, ensure_ascii=False))


def _interactive(engine: ChatEngine, recorder: SafetyRecorder | None) -> None:
    tty = sys.stdin.isatty()
    name = engine.persona.name
    if tty:
        typer.echo(f"{name}：你好呀，我是{name}。今天过得怎么样？想聊什么都可以。（/reset 重新开始，/save 文件 保存，/exit 退出）")
    while True:
        try:
            line = input("你：" if tty else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            typer.echo()
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            command, _, arg = line.partition(" ")
            if command in ("/exit", "/quit"):
                break
            if command == "/reset":
                engine.reset()
                typer.echo("（已重新开始）")
                continue
            if command == "/save":
                _save(engine, arg.strip())
                continue
            typer.echo("（命令：/reset、/save 文件名、/exit）")
            continue
        typer.echo(f"{name}：", nl=False)
        try:
            stream = engine.stream(line)
            for piece in stream:
                typer.echo(piece, nl=False)
            if recorder:
                recorder.record(stream.reply)
        except ValueError as err:
            typer.echo(f"（{err}）", nl=False)
        except KeyboardInterrupt:
            typer.echo("……（停下了）", nl=False)
        typer.echo()


def _save(engine: ChatEngine, path: str) -> None:
    if not path:
        typer.echo("（用法：/save 文件名.jsonl）")
        return
    if not engine.turns:
        typer.echo("（还没有对话可以保存）")
        return
    try:
        write_jsonl(Path(path), [engine.to_dialogue()], append=True)
    except OSError as err:
        typer.echo(f"（保存失败：{err}）")
        return
    typer.echo(f"（已保存到 {path}）")
