"""Synthesis throughput: N concurrent workers versus one request at a time (QiaoBan's sequential loop), against
the same local OpenAI-compatible server (llama-cpp-python's, started here on loopback).

    .venv/bin/python bench/synth_throughput.py --items 8 --workers 4            # fixture model, ~1 minute
    .venv/bin/python bench/synth_throughput.py --model default --items 6        # the 1.5B teacher (slow)
    .venv/bin/python bench/synth_throughput.py --engine llama-server            # llama.cpp's server, N slots

Both runs ask for the same items (same seed, same requests) into fresh files, and go through the whole
pipeline: HTTP streaming, parsing, gates, dedup, append. Reported: items/min and accepted dialogues/min for each,
their ratio, acceptance rates and rejection reasons.

What to expect: llama-cpp-python's server holds one global lock around the model and has no parallel slots
(its settings have no n_parallel), so concurrent requests queue and the generation itself is never batched.
Workers can only overlap the client-side work (prompt building, parsing, gating, writing) and the HTTP round
trips with generation, which is a small share here. The server must run with interrupt_requests=False:
by default it cuts a streaming reply short whenever another request is waiting, which truncates concurrent
replies. Against a server with real parallel slots (vLLM, llama.cpp's own llama-server -np N) or a hosted API,
the same workers multiply throughput up to the server's capacity and the --rpm limit. `--engine llama-server`
measures that locally: llama.cpp's own server (`make engine`) with --workers slots, as `qiaoban synth --backend
llama-server --workers N` starts it; both runs go to the same engine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qiaoban.backends import GenerationConfig  # noqa: E402
from qiaoban.backends.openai_http import OpenAIBackend  # noqa: E402
from qiaoban.data import GateConfig  # noqa: E402
from qiaoban.models import ensure_model  # noqa: E402
from qiaoban.synth.runner import SynthConfig, run_synth  # noqa: E402
from tests.helpers import free_port  # noqa: E402


def start_server(model_path: Path, threads: int, n_ctx: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--model_alias", "teacher",
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
         "--interrupt_requests", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return proc, base_url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def start_engine(args: argparse.Namespace, model_path: Path) -> tuple[Callable[[], None], str, str]:
    """The engine both runs talk to: (stop, base URL, description)."""
    if args.engine == "llama-server":
        from qiaoban.backends.llama_server import LlamaServerBackend

        engine = LlamaServerBackend(model_path, parallel=args.workers, n_ctx=args.n_ctx, threads=args.threads,
                                    timeout_s=args.timeout)
        return engine.close, engine.base_url, f"llama-server, {args.workers} slots, {args.threads} threads"
    proc, base_url = start_server(model_path, args.threads, args.n_ctx)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()

    return stop, base_url, f"llama_cpp.server, n_threads={args.threads}, interrupt_requests=False (one request at a time)"


def one_run(base_url: str, workers: int, args: argparse.Namespace, workdir: Path) -> dict:
    teacher = OpenAIBackend(base_url, "teacher", max_retries=0, timeout_s=args.timeout)
    gates = GateConfig(safety_screen=not args.no_safety_screen)
    cfg = SynthConfig(
        n=args.items, max_items=args.items, out=workdir / f"workers{workers}.jsonl", seed=args.seed, workers=workers,
        timeout_s=args.timeout, prompts=args.prompts, gates=gates, progress=False,
        gen=GenerationConfig(max_tokens=args.max_tokens, temperature=0.8, top_p=0.95, repeat_penalty=1.1),
    )
    report = run_synth(teacher, cfg)
    teacher.close()
    run, t = report["run"], report["time"]
    return {
        "workers": workers,
        "items": run["items"],
        "accepted": run["accepted"],
        "acceptance_rate": run["acceptance_rate"],
        "rejected_by_reason": run["rejected_by_reason"],
        "failed": run["failed"],
        "elapsed_s": t["elapsed_s"],
        "items_per_min": t["items_per_min"],
        "dialogues_per_min": t["dialogues_per_min"],
        "completion_tokens": report["tokens"]["completion"],
        "completion_tokens_per_s": report["tokens"]["completion_tokens_per_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fixture", help="known model name or GGUF path (default: fixture)")
    parser.add_argument("--items", type=int, default=8, help="items per run")
    parser.add_argument("--workers", type=int, default=4, help="workers of the concurrent run")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="server threads")
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--prompts", default=None, help="prompt file (default: the packaged Chinese prompts)")
    parser.add_argument("--no-safety-screen", action="store_true")
    parser.add_argument("--rounds", type=int, default=1,
                        help="alternate sequential and concurrent runs this many times (a shared machine's load "
                             "drifts; the median ratio over rounds is reported)")
    parser.add_argument("--engine", choices=("llama-cpp-python", "llama-server"), default="llama-cpp-python",
                        help="the local server both runs use")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()

    model_path = ensure_model(args.model)
    stop, base_url, server = start_engine(args, model_path)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # Warm the server (model pages, first prompt) so neither measured run pays for it.
            OpenAIBackend(base_url, "teacher", max_retries=0).chat(
                [{"role": "user", "content": "你好"}], GenerationConfig(max_tokens=4))
            rounds = []
            for r in range(args.rounds):
                workdir = Path(tmp) / f"round{r}"
                rounds.append((one_run(base_url, 1, args, workdir), one_run(base_url, args.workers, args, workdir)))
    finally:
        stop()

    def ratio(key: str) -> float | None:
        values = sorted(c[key] / s[key] for s, c in rounds if c[key] and s[key])
        return round(values[len(values) // 2], 3) if values else None

    result = {
        "bench": "synth_throughput",
        "model": model_path.name,
        "server": server,
        "items": args.items,
        "max_tokens": args.max_tokens,
        "rounds": [{"baseline": s, "concurrent": c} for s, c in rounds],
        "ratio_items_per_min": ratio("items_per_min"),
        "ratio_dialogues_per_min": ratio("dialogues_per_min"),
        "ratio_completion_tokens_per_s": ratio("completion_tokens_per_s"),
    }
    text = json.dumps(result, ensure_ascii=False, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
