"""Load test for `qiaoban serve`: N concurrent clients, a fixed count of short requests, on loopback.

    .venv/bin/python bench/serve_load.py                      # 8 clients, 48 requests, fixture model
    .venv/bin/python bench/serve_load.py --clients 16 --requests 96 --threads 1 --json out.json

Three runs against servers it starts itself, on the same model, one after the other:
  1. qiaoban sessions: POST /api/sessions/{id}/messages (the child's page: SQLite, safety, streamed SSE);
     afterwards the server is stopped and every message a client saw acknowledged is looked up in the db;
  2. qiaoban OpenAI API: POST /v1/chat/completions, stream: true (safety, no storage);
  3. baseline: llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`), sent the same
     prompt our server builds (the companion system prompt + the message), same max_tokens, streaming.
With --turns T, the sessions run instead compares conversations: each client's requests are one session of T
turns, once with the prefix cache (each session's next turn resumes from its kept KV state) and once without it
(QIAOBAN_PREFIX_CACHE_MB=0, as before), reporting time to first piece of the first and of the last turn;
--engine-slots N adds a third run, serve --backend llama-server --parallel N (llama.cpp's batching server), with
ratios against the in-process run with the prefix cache, and the resident memory of server plus engine.
Each server gets one warm-up request first (not counted). Each run prints requests/s, p50/p95 latency, p50 time to first piece, errors and (for 1) lost messages.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from qiaoban.chat import Persona  # noqa: E402
from qiaoban.models import ensure_model  # noqa: E402
from qiaoban.serve import SessionStore  # noqa: E402
from tests.helpers import free_port, wait_for_http  # noqa: E402

MESSAGES = ["Hi, how are you?", "I played with my dog today.", "School was a bit boring.",
            "My friend gave me a sticker.", "I like drawing cats.", "It rained all day."]


@dataclass
class Outcome:
    ok: bool
    latency_s: float
    ttft_s: float
    error: str = ""
    turn: int = 0  # the request's index within its client's session
    reply_chars: int = 0


@dataclass
class RunResult:
    name: str
    requests: int
    wall_s: float
    errors: int
    requests_per_s: float
    p50_s: float
    p95_s: float
    ttft_p50_s: float
    ttft_p95_s: float = 0.0
    first_turn_ttft_p50_s: float = 0.0
    last_turn_ttft_p50_s: float = 0.0
    reply_chars_per_s: float = 0.0  # aggregate over all clients: what children receive, per second
    lost_messages: int | None = None
    error_samples: list[str] = field(default_factory=list)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, 100 * q, method="nearest")) if values else float("nan")


def sse_data(response: httpx.Response):
    event = "message"
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            yield event, line[5:].strip()
            event = "message"


def drive(clients: int, total: int, one_client: Callable[[int, int, tqdm], list[Outcome]],
          name: str) -> tuple[list[Outcome], float]:
    """Run `clients` threads, client i sending its share of `total` requests one after another."""
    shares = [total // clients + (i < total % clients) for i in range(clients)]
    results: list[list[Outcome]] = [[] for _ in range(clients)]
    start_line = threading.Barrier(clients + 1)

    with tqdm(total=total, desc=name, unit="req", leave=False) as bar:
        def run(i: int) -> None:
            start_line.wait()
            results[i] = one_client(i, shares[i], bar)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        start_line.wait()
        started = time.perf_counter()
        for t in threads:
            t.join()
    return [o for r in results for o in r], time.perf_counter() - started


def max_turn(outcomes: list[Outcome]) -> int:
    return max((o.turn for o in outcomes), default=0)


def summarize(name: str, outcomes: list[Outcome], wall_s: float, lost: int | None = None) -> RunResult:
    good = [o for o in outcomes if o.ok]
    last_turn = max_turn(good)
    return RunResult(
        name=name, requests=len(outcomes), wall_s=round(wall_s, 2), errors=len(outcomes) - len(good),
        requests_per_s=round(len(good) / wall_s, 3) if wall_s else 0.0,
        p50_s=round(percentile([o.latency_s for o in good], 0.5), 3),
        p95_s=round(percentile([o.latency_s for o in good], 0.95), 3),
        ttft_p50_s=round(percentile([o.ttft_s for o in good], 0.5), 3),
        ttft_p95_s=round(percentile([o.ttft_s for o in good], 0.95), 3),
        first_turn_ttft_p50_s=round(percentile([o.ttft_s for o in good if o.turn == 0], 0.5), 3),
        last_turn_ttft_p50_s=round(percentile([o.ttft_s for o in good if o.turn == last_turn], 0.5), 3),
        reply_chars_per_s=round(sum(o.reply_chars for o in good) / wall_s, 2) if wall_s else 0.0,
        lost_messages=lost, error_samples=sorted({o.error for o in outcomes if not o.ok})[:5],
    )


def start_qiaoban(model: str, threads: int, clients: int, max_tokens: int, db: Path,
                  prefix_cache: bool = True, engine_slots: int = 0) -> tuple[subprocess.Popen, str]:
    """`qiaoban serve` on llama.cpp in process, or with engine_slots > 0 in front of llama-server."""
    port = free_port()
    env = {**os.environ, "QIAOBAN_THREADS": str(threads), **({} if prefix_cache else {"QIAOBAN_PREFIX_CACHE_MB": "0"})}
    engine = ["--backend", "llama-server", "--parallel", str(engine_slots)] if engine_slots else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "qiaoban", "serve", "--model", model, "--port", str(port), "--db", str(db),
         "--queue-size", str(max(16, 2 * clients)), "--max-tokens", str(max_tokens), "--request-timeout", "600",
         *engine],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(f"{url}/healthz", proc=proc)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run_sessions(url: str, clients: int, total: int) -> tuple[list[Outcome], float, list[tuple[str, list]]]:
    """Each client keeps one session; returns what each client saw acknowledged, to look up in the db."""
    acknowledged: list[tuple[str, list]] = [("", []) for _ in range(clients)]

    def one_client(i: int, count: int, bar: tqdm) -> list[Outcome]:
        outcomes = []
        with httpx.Client(base_url=url, timeout=600) as http:
            session = http.post("/api/sessions").json()["id"]
            seen: list[tuple[str, str]] = []
            for n in range(count):
                text = f"{MESSAGES[(i + n) % len(MESSAGES)]} (#{i}.{n})"
                start = time.perf_counter()
                first = None
                try:
                    with http.stream("POST", f"/api/sessions/{session}/messages", json={"text": text}) as response:
                        if response.status_code != 200:
                            raise RuntimeError(f"HTTP {response.status_code}")
                        done = None
                        for event, data in sse_data(response):
                            if event == "accepted":
                                seen.append(("child", text))
                            elif event == "delta" and first is None:
                                first = time.perf_counter() - start
                            elif event == "done":
                                done = json.loads(data)
                            elif event == "error":
                                raise RuntimeError(json.loads(data)["error"]["code"])
                        if done is None:
                            raise RuntimeError("stream ended without done")
                        seen.append(("assistant", done["reply"]))
                    latency = time.perf_counter() - start
                    outcomes.append(Outcome(True, latency, first or latency, turn=n, reply_chars=len(done["reply"])))
                except (httpx.HTTPError, RuntimeError) as err:
                    outcomes.append(Outcome(False, time.perf_counter() - start, 0.0, str(err) or type(err).__name__,
                                            turn=n))
                bar.update()
            acknowledged[i] = (session, seen)
        return outcomes

    outcomes, wall = drive(clients, total, one_client, "sessions")
    return outcomes, wall, acknowledged


def run_openai(url: str, model: str, clients: int, total: int, max_tokens: int,
               system_prompt: str | None) -> tuple[list[Outcome], float]:
    def one_client(i: int, count: int, bar: tqdm) -> list[Outcome]:
        outcomes = []
        with httpx.Client(base_url=url, timeout=600) as http:
            for n in range(count):
                messages = [{"role": "user", "content": MESSAGES[(i + n) % len(MESSAGES)]}]
                if system_prompt:
                    messages.insert(0, {"role": "system", "content": system_prompt})
                body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
                        "temperature": 0.7, "top_p": 0.9}
                start = time.perf_counter()
                first = None
                try:
                    with http.stream("POST", "/v1/chat/completions", json=body) as response:
                        if response.status_code != 200:
                            raise RuntimeError(f"HTTP {response.status_code}")
                        finished = False
                        for _, data in sse_data(response):
                            if data == "[DONE]":
                                finished = True
                                break
                            chunk = json.loads(data)
                            if "error" in chunk:
                                raise RuntimeError(str(chunk["error"].get("code")))
                            if first is None and any(c["delta"].get("content") for c in chunk["choices"]):
                                first = time.perf_counter() - start
                        if not finished:
                            raise RuntimeError("stream ended without [DONE]")
                    latency = time.perf_counter() - start
                    outcomes.append(Outcome(True, latency, first or latency))
                except (httpx.HTTPError, RuntimeError) as err:
                    outcomes.append(Outcome(False, time.perf_counter() - start, 0.0, str(err) or type(err).__name__))
                bar.update()
        return outcomes

    return drive(clients, total, one_client, url)


def count_lost(db: Path, acknowledged: list[tuple[str, list]]) -> int:
    """Acknowledged messages (the child's: "accepted"; replies: "done") that are not in the database."""
    store = SessionStore(db)
    try:
        lost = 0
        for session_id, seen in acknowledged:
            stored = store.get_session(session_id) if session_id else None
            rows = Counter((m.role, m.text) for m in stored.messages) if stored else Counter()
            lost += sum((Counter(seen) - rows).values())
        return lost
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48, help="total requests per run")
    parser.add_argument("--model", default="fixture", help="known model name or GGUF path")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    parser.add_argument("--no-baseline", action="store_true", help="skip llama-cpp-python's server")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--turns", type=int, default=None,
                        help="conversations of this many turns per client, with and without the prefix cache")
    parser.add_argument("--engine-slots", type=int, default=0,
                        help="with --turns: also run serve --backend llama-server --parallel N (make engine)")
    args = parser.parse_args()
    if args.turns:
        conversations(args)
        return

    from qiaoban.config import default_threads

    threads = args.threads or default_threads()
    model_path = ensure_model(args.model)
    results: list[RunResult] = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "serve.db"
        proc, url = start_qiaoban(args.model, threads, args.clients, args.max_tokens, db)
        try:
            run_openai(url, args.model, 1, 1, args.max_tokens, None)  # warm-up: load pages, fill the prompt cache
            outcomes, wall, acknowledged = run_sessions(url, args.clients, args.requests)
            openai_outcomes, openai_wall = run_openai(url, args.model, args.clients, args.requests,
                                                      args.max_tokens, None)
        finally:
            stop(proc)  # graceful: the lost-message count is taken after a real shutdown
        results.append(summarize("qiaoban sessions (SSE, SQLite, safety)", outcomes, wall,
                                 count_lost(db, acknowledged)))
        results.append(summarize("qiaoban /v1/chat/completions (stream, safety)", openai_outcomes, openai_wall))

    if not args.no_baseline:
        port = free_port()
        base = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads), "--n_threads_batch", str(threads),
             "--interrupt_requests", "False"],  # finish every request, as ours does
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/v1/models", proc=base)
            system_prompt = Persona().system_prompt()
            run_openai(f"http://127.0.0.1:{port}", args.model, 1, 1, args.max_tokens, system_prompt)  # warm-up
            outcomes, wall = run_openai(f"http://127.0.0.1:{port}", args.model, args.clients, args.requests,
                                        args.max_tokens, system_prompt)
        finally:
            stop(base)
        results.append(summarize("baseline: llama_cpp.server /v1/chat/completions (stream)", outcomes, wall))

    print(f"model {model_path.name}, {args.clients} clients, {args.requests} requests per run, "
          f"max_tokens {args.max_tokens}, {threads} llama.cpp thread(s)")
    print(f"{'run':58} {'req/s':>7} {'p50 s':>7} {'p95 s':>7} {'ttft50':>7} {'errors':>6} {'lost':>5}")
    for r in results:
        lost = "-" if r.lost_messages is None else str(r.lost_messages)
        print(f"{r.name:58} {r.requests_per_s:7.3f} {r.p50_s:7.2f} {r.p95_s:7.2f} {r.ttft_p50_s:7.2f} "
              f"{r.errors:6d} {lost:>5}")
        for sample in r.error_samples:
            print(f"    error: {sample}")
    if len(results) == 3 and results[2].requests_per_s:
        print(f"throughput vs baseline: sessions {results[0].requests_per_s / results[2].requests_per_s:.2f}x, "
              f"/v1 {results[1].requests_per_s / results[2].requests_per_s:.2f}x")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))


def resident_mb(proc: subprocess.Popen) -> float:
    """Resident memory of the server and its children (the engine), in MiB."""
    root = psutil.Process(proc.pid)
    return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]) / 2**20


def conversations(args: argparse.Namespace) -> None:
    from qiaoban.config import default_threads

    threads = args.threads or default_threads()
    total = args.clients * args.turns
    variants = [("sessions, no prefix cache (before)", False, 0), ("sessions, each turn resumes its prefix", True, 0)]
    if args.engine_slots:
        variants.append((f"sessions, llama-server x{args.engine_slots} slots", True, args.engine_slots))
    results: list[RunResult] = []
    memory: list[float] = []
    for name, cached, slots in variants:
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "serve.db"
            proc, url = start_qiaoban(args.model, threads, args.clients, args.max_tokens, db, prefix_cache=cached,
                                      engine_slots=slots)
            try:
                run_openai(url, args.model, 1, 1, args.max_tokens, None)  # warm-up
                outcomes, wall, acknowledged = run_sessions(url, args.clients, total)
                memory.append(resident_mb(proc))
            finally:
                stop(proc)
            results.append(summarize(name, outcomes, wall, count_lost(db, acknowledged)))
    print(f"model {ensure_model(args.model).name}, {args.clients} clients x {args.turns} turns, "
          f"max_tokens {args.max_tokens}, {threads} llama.cpp thread(s), {cpu_name()}")
    print(f"{'run':42} {'req/s':>7} {'chars/s':>7} {'ttft50':>7} {'ttft95':>7} {'turn1':>7} "
          f"{'turn' + str(args.turns):>7} {'errors':>6} {'lost':>5} {'RSS MB':>7}")
    for r, mb in zip(results, memory, strict=True):
        print(f"{r.name:42} {r.requests_per_s:7.3f} {r.reply_chars_per_s:7.2f} {r.ttft_p50_s:7.2f} "
              f"{r.ttft_p95_s:7.2f} {r.first_turn_ttft_p50_s:7.2f} {r.last_turn_ttft_p50_s:7.2f} {r.errors:6d} "
              f"{r.lost_messages:>5} {mb:7.0f}")
    before = results[1]  # today's default: llama.cpp in process, with the prefix cache
    for after in results[2:]:
        if after.first_turn_ttft_p50_s and before.ttft_p95_s and before.reply_chars_per_s:
            print(f"{after.name}: last/first turn ttft {after.last_turn_ttft_p50_s / after.first_turn_ttft_p50_s:.2f}x; "
                  f"p95 ttft {after.ttft_p95_s / before.ttft_p95_s:.2f}x in-process's; "
                  f"reply chars/s {after.reply_chars_per_s / before.reply_chars_per_s:.2f}x")
    if args.json:
        args.json.write_text(json.dumps([{**asdict(r), "resident_mb": round(mb)} for r, mb in
                                         zip(results, memory, strict=True)], indent=2))


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown CPU")
    return name + (" (AVX-512)" if "avx512f" in info else " (no AVX-512)")


if __name__ == "__main__":
    main()
