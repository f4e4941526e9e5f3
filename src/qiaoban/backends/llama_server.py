"""llama.cpp's own server (`llama-server`) as the batching engine: N slots, continuous batching, prompt cache.

`qiaoban serve --backend llama-server --parallel N` and `qiaoban synth --backend llama-server --workers N`
start one engine process on loopback, supervise it (a crashed engine is restarted on the next request; the
requests it was serving fail with `EngineUnavailable`) and talk to it through the OpenAI-compatible backend.
The engine keeps each slot's KV state and a RAM cache of recent prompts (`--cache-ram`), so a session's next
turn resumes from its kept prefix however sessions interleave.

The binary is built once from the llama.cpp sources that ship in llama-cpp-python's source distribution (same
release as the installed wheel) into `$QIAOBAN_HOME/tools/`: `qiaoban models build-engine` (`make engine`).
`QIAOBAN_LLAMA_SERVER` points at another build.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import httpx

from qiaoban.backends.base import (
    BackendError,
    ChatStream,
    EngineUnavailable,
    GenerationConfig,
    Message,
    Usage,
)
from qiaoban.backends.openai_http import OpenAIBackend
from qiaoban.config import default_threads, home, prefix_cache_bytes
from qiaoban.models.registry import profile_of

ENGINE_ENV = "QIAOBAN_LLAMA_SERVER"
LOG_TAIL_CHARS = 3000


def llama_release() -> str:
    return version("llama-cpp-python")


def built_engine_path() -> Path:
    return home() / "tools" / f"llama-server-{llama_release()}" / "llama-server"


def engine_path() -> Path | None:
    """The llama-server to run: $QIAOBAN_LLAMA_SERVER, else the one `build_engine` made, else None."""
    if os.environ.get(ENGINE_ENV):
        return Path(os.environ[ENGINE_ENV])
    built = built_engine_path()
    return built if built.is_file() else None


def fetch_llama_sources(dest: Path) -> Path:
    """llama-cpp-python's source distribution (the installed release) fetched with pip into `dest`."""
    release = llama_release()
    archive = dest / f"llama_cpp_python-{release}.tar.gz"
    if archive.is_file():
        return archive
    dest.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={release}", "-d", str(dest)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not archive.is_file():
        raise BackendError(f"could not fetch llama-cpp-python {release}'s source:\n{done.stderr[-2000:]}")
    return archive


CMAKE_OPTIONS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON",
                 "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_TESTS=OFF",
                 "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_UI=OFF", "-DLLAMA_USE_PREBUILT_UI=OFF",
                 "-DLLAMA_OPENSSL=OFF", "-DLLAMA_CURL=OFF")


def cmake_command() -> str:
    """cmake from PATH, else the PyPI build of cmake installed into this environment."""
    found = shutil.which("cmake")
    if found:
        return found
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "cmake"], capture_output=True, text=True)
    local = Path(sys.executable).with_name("cmake")
    if done.returncode != 0 or not local.is_file():
        raise BackendError(f"building llama-server needs cmake and a C++ compiler; pip could not install cmake:\n"
                           f"{done.stderr[-2000:]}")
    return str(local)


def build_engine(jobs: int | None = None, log: Callable[[str], None] = print) -> Path:
    """Compile llama-server for this CPU (GGML_NATIVE) into $QIAOBAN_HOME/tools; ~11 min on 2 cores."""
    target = built_engine_path()
    if target.is_file():
        return target
    cmake = cmake_command()
    with tempfile.TemporaryDirectory(prefix="llama-server-") as scratch:
        work = Path(scratch)
        archive = fetch_llama_sources(work)
        log(f"extracting {archive.name}")
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        source = work / f"llama_cpp_python-{llama_release()}" / "vendor" / "llama.cpp"
        build = work / "build"
        steps = [[cmake, "-S", str(source), "-B", str(build), *CMAKE_OPTIONS],
                 [cmake, "--build", str(build), "--target", "llama-server", "-j", str(jobs or os.cpu_count() or 2)]]
        for step in steps:
            log(" ".join(step[:4]) + " …")
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                raise BackendError(f"{' '.join(step[:3])} failed (exit {done.returncode}):\n"
                                   f"{(done.stdout + done.stderr)[-LOG_TAIL_CHARS:]}")
        binary = build / "bin" / "llama-server"
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copy2(binary, partial)
        partial.replace(target)
    return target


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One supervised llama-server process on loopback."""

    def __init__(self, binary: Path, model_path: Path, *, adapter_path: Path | None = None, parallel: int = 4,
                 n_ctx: int = 4096, threads: int | None = None, cache_ram_mib: int | None = None,
                 startup_timeout_s: float = 120.0):
        if parallel < 1:
            raise ValueError("parallel must be >= 1")
        self.binary = Path(binary)
        if not self.binary.is_file():
            raise EngineUnavailable(f"no llama-server at {self.binary}; build it with `qiaoban models build-engine`")
        self.model_path, self.adapter_path = Path(model_path), adapter_path and Path(adapter_path)
        self.parallel, self.n_ctx = parallel, n_ctx
        self.threads = threads or default_threads()
        self.cache_ram_mib = prefix_cache_bytes() // 2**20 if cache_ram_mib is None else cache_ram_mib
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()  # kept across restarts: the client's base URL stays valid
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._lock = threading.Lock()
        self._log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - the engine's log, kept while it lives

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [str(self.binary), "--model", str(self.model_path), "--host", "127.0.0.1", "--port", str(self.port),
                   "--parallel", str(self.parallel), "--ctx-size", str(self.n_ctx * self.parallel),
                   "--threads", str(self.threads), "--threads-batch", str(self.threads),
                   "--cache-ram", str(self.cache_ram_mib), "--jinja", "--no-webui", "--fit", "off"]
        if self.adapter_path:
            command += ["--lora", str(self.adapter_path)]
        return command

    def start(self) -> None:
        self._log.seek(0)
        self._log.truncate()
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EngineUnavailable(f"llama-server exited with {self.process.returncode} while starting:\n"
                                        f"{self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise EngineUnavailable(f"llama-server did not become ready within {self.startup_timeout_s:.0f} s:\n"
                                f"{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self, grace_s: float = 1.0) -> bool:
        """Whether the engine is gone, waiting up to `grace_s`: a killed process closes its sockets a moment
        before it can be reaped, so a dropped connection may arrive first."""
        process = self.process
        if process is None:
            return True
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def ensure_running(self) -> None:
        """Start the engine again if it died; requests it was serving have already failed."""
        with self._lock:
            if not self.alive():
                self.restarts += 1
                self.start()

    def log_tail(self) -> str:
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - LOG_TAIL_CHARS))
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        self.stop()
        self._log.close()


class LlamaServerBackend(OpenAIBackend):
    """The OpenAI-compatible backend in front of a llama-server it owns."""

    def __init__(self, model_path: str | Path, *, adapter_path: str | Path | None = None, parallel: int = 4,
                 n_ctx: int = 4096, threads: int | None = None, timeout_s: float = 120.0,
                 binary: str | Path | None = None):
        binary = Path(binary) if binary else engine_path()
        if binary is None:
            raise EngineUnavailable("llama-server is not built; run `qiaoban models build-engine` (or `make engine`)"
                                    f", or point {ENGINE_ENV} at a llama-server binary")
        model_path = Path(model_path)
        adapter_path = Path(adapter_path) if adapter_path else None
        self.engine = LlamaServer(binary, model_path, adapter_path=adapter_path, parallel=parallel, n_ctx=n_ctx,
                                  threads=threads)
        try:
            self.engine.start()
        except BaseException:
            self.engine.close()
            raise
        super().__init__(self.engine.base_url + "/v1", "qiaoban", context_length=n_ctx, max_retries=0,
                         timeout_s=timeout_s)
        self.name = model_path.stem + (f"+{adapter_path.stem}" if adapter_path else "") + f"@llama-server×{parallel}"
        self.profile = profile_of(str(model_path), str(adapter_path) if adapter_path else None)
        self._http = httpx.Client(timeout=30.0)

    def _engine_call(self, path: str, body: dict) -> dict:
        try:
            response = self._http.post(self.engine.base_url + path, json=body)
            response.raise_for_status()
            return response.json()
        except httpx.HTTPError as err:
            raise EngineUnavailable(f"llama-server {path}: {err}") from err

    def count_prompt_tokens(self, messages: list[Message]) -> int:
        """Exact: the engine renders the chat template and tokenizes it."""
        self.engine.ensure_running()
        prompt = self._engine_call("/apply-template", {"messages": messages})["prompt"]
        return len(self._engine_call("/tokenize", {"content": prompt, "add_special": True,
                                                   "parse_special": True})["tokens"])

    def stream_chat(self, messages: list[Message], gen: GenerationConfig | None = None) -> ChatStream:
        self.engine.ensure_running()
        return super().stream_chat(messages, gen)

    def _generate(self, messages: list[Message], gen: GenerationConfig, usage: Usage) -> Iterator[str]:
        try:
            yield from super()._generate(messages, gen, usage)
        except BackendError as err:
            if self.engine.exited():
                raise EngineUnavailable("llama-server stopped mid-reply; it restarts on the next request") from err
            raise

    def warm(self, system_prompt: str) -> str:
        """Evaluate the system prompt once, so the engine's prompt cache holds it for new conversations."""
        self.chat([{"role": "system", "content": system_prompt}, {"role": "user", "content": "你好"}],
                  GenerationConfig(max_tokens=1))
        return "cached by llama-server"

    def close(self) -> None:
        self._http.close()
        self.client.close()
        self.engine.close()
