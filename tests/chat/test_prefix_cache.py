"""Interleaved conversations on one llama.cpp context (the fixture model): each session's next turn resumes from
its own kept state instead of prefilling its whole history again."""

from qiaoban.backends.base import GenerationConfig
from qiaoban.backends.llama_cpp import LlamaCppBackend
from qiaoban.backends.prefix_cache import PrefixCache

GREEDY = GenerationConfig(max_tokens=12, temperature=0.0, seed=0)


def opening(name: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "You are a kind friend to a child. " * 8},
            {"role": "user", "content": f"I am {name}. Tell me about day 0 of my holiday."}]


def test_interleaved_sessions_resume_their_own_prefix(fixture_model_path):
    backend = LlamaCppBackend(fixture_model_path, n_ctx=1024)
    fresh = LlamaCppBackend(fixture_model_path, n_ctx=1024, prefix_cache_bytes=0)
    try:
        fresh.chat(opening("Ana"), GREEDY)
        sessions = {name: opening(name) for name in ("Ana", "Ben")}
        for day in range(1, 4):
            for history in sessions.values():  # the two children take turns on one context
                got = backend.chat(history, GREEDY)
                prompt = backend.render_prompt(history)[0]
                # What the reply was generated after is this child's own prompt, never the other's; the exact text
                # is not compared with a fresh context's, since evaluating in other batches may round differently.
                assert list(backend.llm.input_ids[: len(prompt)]) == prompt and got.text.strip()
                history += [{"role": "assistant", "content": got.text},
                            {"role": "user", "content": f"And day {day}?"}]
        assert backend.prefix_cache.hits >= 4  # every turn after each child's first resumed from its own state
        assert len(backend.prefix_cache) == 2  # one state per conversation: each turn's supersedes the last
        assert fresh.prefix_cache.hits == 0 and len(fresh.prefix_cache) == 0  # capacity 0 keeps nothing
    finally:
        backend.close()
        fresh.close()


def test_the_cache_stays_within_its_bytes_and_drops_the_least_recent(fixture_model_path):
    backend = LlamaCppBackend(fixture_model_path, n_ctx=1024)
    try:
        backend.chat(opening("Ana"), GREEDY)
        one = backend.prefix_cache.size_bytes
        small = PrefixCache(capacity_bytes=int(one * 2.5))
        backend.prefix_cache = small
        for name in ("Ana", "Ben", "Cai"):
            backend.chat(opening(name), GREEDY)
        assert len(small) == 2 and small.size_bytes <= small.capacity_bytes
        state, shared = small.best(backend.render_prompt(opening("Ana"))[0])
        assert shared < len(backend.render_prompt(opening("Ana"))[0]) - 5  # Ana's was evicted first
    finally:
        backend.close()
