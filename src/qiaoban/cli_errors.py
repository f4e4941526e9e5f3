"""How every `qiaoban` command reports an error: one line on stderr that says what to do, and one exit code per
kind of failure."""

from __future__ import annotations

from typing import NoReturn

import typer

BAD_INPUT = 2  # a file, an option or a model the user can fix; the message says how
FAILED = 1  # the work itself failed (a backend error, a stopped run); what finished is kept, rerun to go on


def fail(message: str, code: int = BAD_INPUT) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
