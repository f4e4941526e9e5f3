"""`qiaoban synth`: synthesize emotion-coaching dialogues with a teacher model."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated

import typer

from qiaoban.backends import BACKENDS, Backend, BackendError, GenerationConfig, load_backend
from qiaoban.cli_errors import FAILED, fail
from qiaoban.config import load_yaml
from qiaoban.data import GateConfig
from qiaoban.dialogue import DialogueFormatError
from qiaoban.models import ModelError
from qiaoban.synth.runner import SynthConfig, SynthError, dry_run, run_synth
from qiaoban.synth.topics import TopicFileError


def _teacher(backend: str, model: str | None, base_url: str | None, api_model: str | None, n_ctx: int | None,
             timeout: float, workers: int) -> Backend:
    if backend == "openai":
        if not base_url:
            raise BackendError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        from qiaoban.backends.openai_http import OpenAIBackend

        # Retries are ours (capped, with backoff): the client's own retries would multiply them.
        return OpenAIBackend(base_url, api_model or model or "default", max_retries=0, timeout_s=timeout,
                             **({"context_length": n_ctx} if n_ctx else {}))
    return load_backend(backend, model=model, base_url=base_url, api_model=api_model, n_ctx=n_ctx, timeout_s=timeout,
                        parallel=workers)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def app(
    n: Annotated[int, typer.Option("--n", help="Accepted dialogues wanted in OUT (those already there count).")],
    out: Annotated[Path, typer.Option("--out", help="Dialogue JSONL to append to; OUT.rejected.jsonl and "
                                      "OUT.report.json are written next to it.")],
    backend: Annotated[str, typer.Option(help=f"Teacher backend: {', '.join(BACKENDS)}.")] = "llama",
    model: Annotated[str | None, typer.Option(help="Known model name or GGUF path (llama), checkpoint dir "
                                              "(transformers). Default: the default model.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")] = None,
    api_model: Annotated[str | None, typer.Option(help="Model name to send to the endpoint.")] = None,
    workers: Annotated[int, typer.Option(help="Concurrent teacher calls: for an HTTP teacher with parallel slots "
                                         "(vLLM, hosted APIs) and for --backend llama-server (it starts "
                                         "llama.cpp's server with this many slots). The llama backend and "
                                         "llama-cpp-python's server run one request at a time; start that "
                                         "server with --interrupt_requests False or it cuts concurrent replies "
                                         "short.")] = 1,
    seed: Annotated[int, typer.Option(help="Plan seed: item i of seed s is always the same request, id "
                                      "syn-s{s}-{i:06d}.")] = 0,
    rpm: Annotated[float, typer.Option(help="Requests per minute over all workers (0: no limit).")] = 0.0,
    max_retries: Annotated[int, typer.Option(help="Retries per item after a teacher error or timeout.")] = 3,
    timeout: Annotated[float, typer.Option(help="Seconds per teacher call.")] = 180.0,
    max_items: Annotated[int | None, typer.Option(help="Items to try at most (default 3 × N): ends a run whose "
                                                  "replies keep being rejected.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Reply token limit; a reply cut at the limit is rejected "
                                            "as `truncated`.")] = 1024,
    temperature: Annotated[float, typer.Option(help="Teacher sampling temperature.")] = 0.8,
    n_ctx: Annotated[int | None, typer.Option(help="Context window (llama) or the endpoint's (openai).")] = None,
    topics: Annotated[str | None, typer.Option(help="Taxonomy YAML, or a plain topic list (one theme per line, "
                                               "items separated by 、). Default: the packaged taxonomy.")] = None,
    prompts: Annotated[str | None, typer.Option(help="Prompt file of the same shape as the packaged "
                                                "prompts.yaml (system, user, openings, sizes).")] = None,
    gates: Annotated[Path | None, typer.Option(help="YAML with GateConfig fields (min_turns, require_chinese, "
                                               "disabled: [...]) for the quality gates.")] = None,
    cut_at_repeat: Annotated[bool, typer.Option(help="Keep a looping reply up to its first word-for-word repeated "
                                                "turn instead of rejecting it as `repeated_turn`.")] = True,
    safety_screen: Annotated[bool, typer.Option(help="Screen companion turns with qiaoban.safety.")] = True,
    dedup_threshold: Annotated[float, typer.Option(help="Near-duplicate Jaccard threshold (character 3-grams).")] = 0.85,
    price_in: Annotated[float, typer.Option(help="Price per 1M prompt tokens, for the cost line.")] = 0.0,
    price_out: Annotated[float, typer.Option(help="Price per 1M completion tokens.")] = 0.0,
    dry_run_: Annotated[bool, typer.Option("--dry-run", help="Print the first N prompts; call no model.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Synthesize emotion-coaching dialogues (child ↔ companion) with a teacher model.

    Each item is a scenario from the topic taxonomy plus a child persona and a target length; the teacher's reply
    is parsed into turns, checked by the quality gates (structure, Chinese, narration, leaked tags, AI talk,
    parent role-play, safety screen) and near-duplicate removal, and appended to OUT. Rejected items go to
    OUT.rejected.jsonl with their reason; OUT.report.json holds counts by reason, tokens, cost and speed.

    Safe to kill (Ctrl-C or `kill` also write the report; even SIGKILL loses nothing written): run the same
    command again and it resumes, skipping every item already in OUT or the rejected file. Examples:

      qiaoban synth --n 20 --out synth.jsonl --dry-run
      qiaoban synth --n 200 --out synth.jsonl                       # local default model
      qiaoban synth --n 50000 --out synth.jsonl --backend openai --base-url https://api.example.com/v1 \\
          --api-model qwen-max --workers 16 --rpm 600 --price-in 0.4 --price-out 1.2
    """
    try:
        gate_values = load_yaml(gates) if gates else {}
        gate_values.setdefault("safety_screen", safety_screen)
        config = SynthConfig(
            n=n, out=out, seed=seed, workers=workers, rpm=rpm, max_retries=max_retries, timeout_s=timeout,
            max_items=max_items, topics=topics, prompts=prompts, gates=GateConfig.from_dict(gate_values),
            gen=GenerationConfig(max_tokens=max_tokens, temperature=temperature, top_p=0.95, repeat_penalty=1.1),
            cut_at_repeat=cut_at_repeat, dedup_threshold=dedup_threshold, price_in=price_in, price_out=price_out, progress=not quiet,
        )
        if dry_run_:
            dry_run(config, echo=typer.echo)
            return
        teacher = _teacher(backend, model, base_url, api_model, n_ctx, timeout, workers)
        # `kill PID` stops like Ctrl-C: workers stop, the report of the run so far is written.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            report = run_synth(teacher, config)
        except KeyboardInterrupt:
            typer.echo(f"interrupted; {config.report_path} has the counts so far. Run the same command to resume.",
                       err=True)
            raise typer.Exit(130) from None
        finally:
            teacher.close()
    except (SynthError, BackendError, ModelError, TopicFileError, DialogueFormatError, FileNotFoundError,
            ValueError) as err:
        fail(str(err))
    typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    if report["stopped"]:
        fail(f"stopped early: {report['stopped']}; run the same command to resume", FAILED)
