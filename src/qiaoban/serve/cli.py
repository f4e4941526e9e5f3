"""`qiaoban serve`: the companion over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qiaoban.backends import BackendError, load_backend
from qiaoban.cli_errors import fail
from qiaoban.models import ModelError, choose_adapter

MIN_TOKEN_CHARS = 12


def app(
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    model: Annotated[str | None, typer.Option(help="Known model name or GGUF path (default: the 1.5B).")] = None,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter (GGUF path or name from `qiaoban models`; \"none\" for the bare model). Default: the companion adapter, with the default model.")] = None,
    backend: Annotated[str, typer.Option(help="llama | llama-server | openai | transformers")] = "llama",
    parallel: Annotated[int, typer.Option(help="With --backend llama-server: the engine's slots (replies "
                                               "decoded together, each keeping its session's prefix).")] = 4,
    base_url: Annotated[str | None, typer.Option(help="With --backend openai: the upstream, e.g. a vLLM "
                                                     "cluster at http://gpu-host:8000/v1")] = None,
    api_model: Annotated[str | None, typer.Option(help="Model name to request from --base-url.")] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file for sessions and safety events "
                                                "(default: $QIAOBAN_HOME/serve.db).")] = None,
    guardian_token: Annotated[str | None, typer.Option(
        envvar="QIAOBAN_GUARDIAN_TOKEN", show_envvar=True,
        help=f"Token for the guardian page and API (at least {MIN_TOKEN_CHARS} characters). Without one the "
             "guardian view is off.")] = None,
    store_transcripts: Annotated[bool, typer.Option(
        help="Let guardians read what the child wrote (event text and whole conversations).")] = False,
    queue_size: Annotated[int, typer.Option(help="Requests that may wait for the model; more get 503.")] = 16,
    concurrency: Annotated[int | None, typer.Option(
        help="Replies generated at once (default: 1 for llama, --parallel for llama-server, 16 for openai).")] = None,
    max_message_chars: Annotated[int, typer.Option(help="Longest message a child may send.")] = 2000,
    max_history_messages: Annotated[int, typer.Option(help="Most messages per API request / kept in context.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="Longest reply in tokens (API callers may ask for up to 512).")] = 160,
    request_timeout: Annotated[float, typer.Option(help="Seconds a request may wait and generate.")] = 120.0,
    age_band: Annotated[str | None, typer.Option(help="Default age band of new sessions: 6-8, 9-12, 13-15, 16-18.")] = None,
    name: Annotated[str | None, typer.Option(help="The companion's name.")] = None,
) -> None:
    """Serve the companion: an OpenAI-compatible API, the child's chat page and a guardian view.

    \b
    qiaoban serve --port 8000, then open:
      /                the chat page for children (phone-friendly, Chinese)
      /v1              OpenAI-compatible: POST /chat/completions, GET /models
      /api/sessions    stored conversations (SQLite), Dialogue JSONL export
      /guardian        safety events, with --guardian-token

    The safety layer screens every message and every reply. llama.cpp writes
    one reply at a time; others wait in a queue of --queue-size, and beyond
    that clients get 503 with Retry-After. llama.cpp's own server as the
    engine (built once, `make engine`) batches --parallel replies and keeps
    each session's prefix; it pays on CPUs with more cores, not on 2 (see
    docs/serving.md):

    \b
    qiaoban serve --backend llama-server --parallel 4

    In front of a GPU cluster:

    \b
    qiaoban serve --backend openai --base-url http://vllm:8000/v1 \\
        --api-model NAME --concurrency 64
    """
    import uvicorn

    from qiaoban.serve.app import create_app
    from qiaoban.serve.deps import ServeSettings

    if guardian_token is not None and len(guardian_token) < MIN_TOKEN_CHARS:
        raise typer.BadParameter(f"use at least {MIN_TOKEN_CHARS} characters", param_hint="--guardian-token")
    if queue_size < 0 or max_message_chars < 1 or max_tokens < 1 or request_timeout <= 0:
        raise typer.BadParameter("--queue-size must be >= 0, --max-message-chars and --max-tokens >= 1, "
                                 "--request-timeout > 0")
    try:
        llm = load_backend(backend, model=model, adapter=choose_adapter(adapter, backend, model),
                           base_url=base_url, api_model=api_model, timeout_s=request_timeout, parallel=parallel)
    except (ModelError, BackendError) as err:
        fail(str(err))
    settings = ServeSettings(
        model_id=api_model or model or "default",
        guardian_token=guardian_token or None,
        store_transcripts=store_transcripts,
        queue_size=queue_size,
        slots=concurrency or {"llama": 1, "llama-server": parallel}.get(backend, 16),
        max_message_chars=max_message_chars,
        max_history_messages=max_history_messages,
        reply_tokens=max_tokens,
        request_timeout_s=request_timeout,
        age_band=age_band,
        persona_name=name,
    )
    if db is not None:
        settings.db_path = db
    try:
        web = create_app(llm, settings)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(f"qiaoban: {llm.name} on http://{host}:{port}/ (sessions in {settings.db_path}; guardian view "
               f"{'on' if settings.guardian_token else 'off: no --guardian-token'})", err=True)
    try:
        # No access log: request paths carry session ids (the key to a child's conversation) and ?token=.
        uvicorn.run(web, host=host, port=port, log_level="info", access_log=False,
                    timeout_graceful_shutdown=int(request_timeout) + 5)
    finally:
        llm.close()

