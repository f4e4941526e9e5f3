"""What does qiaoban's chat engine cost over raw llama-cpp-python?

Same model file, context size, threads, prompt (the engine's own system prompt + one child message) and greedy
sampling on both sides, so both generate the same tokens. Runs alternate (raw, ours, raw, ours, ...) and the
KV cache is reset before each run so every run pays for its prompt. Reports decode tokens/s, time to first
token, and the ratios; for ours also the time until the first text is shown (the engine releases a sentence at a
time, after the safety guard has checked each clause and the sentence does not parrot the child).

    .venv/bin/python bench/chat_overhead.py [--model default] [--runs 5] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from llama_cpp import Llama

from qiaoban.backends import GenerationConfig
from qiaoban.backends.llama_cpp import LlamaCppBackend
from qiaoban.chat import ChatEngine
from qiaoban.chat.history import build_messages
from qiaoban.config import default_threads
from qiaoban.dialogue import Turn
from qiaoban.models import ensure_model

PROMPT = "我今天在学校被同学起外号了，我很生气，也有点难过。"
FOLLOW_UP = "他们叫我小胖子，大家都在笑。"


def decode_rate(tokens: int, ttft: float, total: float) -> float:
    return (tokens - 1) / (total - ttft) if tokens > 1 and total > ttft else 0.0


def run_raw(llm: Llama, messages, gen: GenerationConfig) -> dict:
    llm.reset()
    start = time.perf_counter()
    first = None
    text = ""
    for chunk in llm.create_chat_completion(messages, max_tokens=gen.max_tokens, temperature=gen.temperature,
                                            top_p=gen.top_p, top_k=gen.top_k, repeat_penalty=gen.repeat_penalty,
                                            seed=gen.seed, stream=True):
        delta = chunk["choices"][0]["delta"].get("content")
        if delta:
            first = first if first is not None else time.perf_counter() - start
            text += delta
    total = time.perf_counter() - start
    tokens = len(llm.tokenize(text.encode(), add_bos=False, special=False)) + 1  # + the end-of-turn token
    return {"text": text, "tokens": tokens, "ttft": first, "total": total,
            "tps": decode_rate(tokens, first, total)}


def run_ours(engine: ChatEngine, gen: GenerationConfig) -> dict:
    engine.reset()
    engine.backend.llm.reset()
    start = time.perf_counter()
    stream = engine.stream(PROMPT)
    first_shown = None
    for _ in stream:
        first_shown = first_shown if first_shown is not None else time.perf_counter() - start
    result = stream.reply.result
    return {"text": result.text, "tokens": result.completion_tokens, "ttft": result.ttft_s,
            "total": result.total_s, "tps": result.tokens_per_s, "first_shown": first_shown}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=4096)
    args = parser.parse_args()

    path = ensure_model(args.model)
    threads = default_threads()
    gen = GenerationConfig(max_tokens=args.max_tokens, temperature=0.0, seed=0)
    backend = LlamaCppBackend(path, n_ctx=args.n_ctx, n_threads=threads)
    from qiaoban.safety import SafetyGuard

    engine = ChatEngine(backend, gen=gen, guard=SafetyGuard())
    messages = build_messages(engine.system_prompt, [Turn("child", PROMPT)])
    raw = Llama(model_path=str(path), n_ctx=args.n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)

    print(f"model {path.name}, {threads} threads, n_ctx {args.n_ctx}, greedy, max_tokens {args.max_tokens}")
    run_raw(raw, messages, gen), run_ours(engine, gen)  # warm-up, not counted
    raws, ours = [], []
    for i in range(args.runs):
        raws.append(run_raw(raw, messages, gen))
        ours.append(run_ours(engine, gen))
        print(f"run {i + 1}: raw {raws[-1]['tps']:.1f} tok/s ttft {raws[-1]['ttft']:.3f}s | "
              f"ours {ours[-1]['tps']:.1f} tok/s ttft {ours[-1]['ttft']:.3f}s first text "
              f"{ours[-1]['first_shown']:.3f}s ({ours[-1]['tokens']} vs {raws[-1]['tokens']} tokens)")

    def med(rows, key):
        return statistics.median(r[key] for r in rows)

    print("\nmedian of", args.runs, "runs")
    print(f"  raw llama-cpp-python : {med(raws, 'tps'):6.2f} tok/s   ttft {med(raws, 'ttft'):.3f} s")
    print(f"  qiaoban engine       : {med(ours, 'tps'):6.2f} tok/s   ttft {med(ours, 'ttft'):.3f} s   "
          f"first text shown {med(ours, 'first_shown'):.3f} s")
    print(f"  ratio tokens/s (ours/raw): {med(ours, 'tps') / med(raws, 'tps'):.3f}   (target >= 0.95)")
    print(f"  ratio ttft (ours/raw):     {med(ours, 'ttft') / med(raws, 'ttft'):.3f}   (target <= 1.10)")
    # The engine stops the model at the first sentence end past 60 characters; up to there the tokens must agree.
    same = sum(bool(o["text"]) and r["text"].startswith(o["text"]) for o, r in zip(ours, raws, strict=True))
    print(f"  the engine's text is the start of raw's in {same}/{args.runs} run pairs (greedy, same prompt)")
    print()
    first_message_report(engine, args.runs)


def first_message(engine: ChatEngine, cache_dir: str) -> dict:
    """TTFT of a conversation's first reply (cold, and after restoring the cached system prompt) and of its
    second reply; each from a reset KV cache."""
    backend = engine.backend
    engine.reset()
    backend.llm.reset()
    cold = engine.stream(PROMPT)
    cold.collect()
    later = engine.stream(FOLLOW_UP)
    later.collect()
    engine.reset()
    backend.llm.reset()
    start = time.perf_counter()
    backend.warm(engine.system_prompt, cache_dir)
    restore = time.perf_counter() - start
    cached = engine.stream(PROMPT).collect()
    return {"cold": cold.reply.result.ttft_s, "later": later.reply.result.ttft_s,
            "cached": restore + cached.result.ttft_s, "restore": restore}


def first_message_report(engine: ChatEngine, runs: int) -> None:
    with tempfile.TemporaryDirectory() as cache_dir:
        engine.backend.llm.reset()
        engine.backend.warm(engine.system_prompt, cache_dir)  # builds the cache once, not counted
        rows = []
        for i in range(runs):
            rows.append(first_message(engine, cache_dir))
            r = rows[-1]
            print(f"first message run {i + 1}: today {r['cold']:.3f}s | cached {r['cached']:.3f}s "
                  f"(restore {r['restore']:.3f}s) | later reply {r['later']:.3f}s")
    cold, cached, later = (statistics.median(r[k] for r in rows) for k in ("cold", "cached", "later"))
    print(f"\nfirst reply, median of {runs}: today {cold:.3f} s, with the prompt cache {cached:.3f} s, "
          f"a later reply {later:.3f} s")
    print(f"  ratio cached first / later reply: {cached / later:.3f}   (target <= 1.2)")
    print(f"  ratio cached first / today's first: {cached / cold:.3f}   (target <= 0.35)")


if __name__ == "__main__":
    main()
