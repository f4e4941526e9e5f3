"""Helpers for tests that run real processes and servers on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from qiaoban.config import default_threads


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout_s: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


@contextmanager
def llama_cpp_server(model_path: Path, n_ctx: int = 2048, alias: str = "fixture",
                     extra: tuple[str, ...] = ()) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server on a free loopback port; yields its /v1 base URL.

    interrupt_requests is off: by default that server cuts a streaming reply short as soon as another request
    waits, which would corrupt concurrent clients."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", alias,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(default_threads()),
         "--interrupt_requests", "False", "--verbose", "False", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v1/models", timeout_s=180, proc=proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()  # uvicorn waits for a reply still streaming to a killed client: do not wait long
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
