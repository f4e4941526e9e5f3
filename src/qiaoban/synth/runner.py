"""The synthesis run: ask a teacher for dialogues, parse, gate, dedup, and append them to a JSONL file.

    report = run_synth(backend, SynthConfig(n=100, out=Path("synth.jsonl"), workers=4, seed=7))

Built to be killed and resumed. Item `index` of a run with seed `seed` always has id `syn-s{seed}-{index:06d}`
and the same request (scenario, persona, shape). Accepted dialogues go to OUT, rejected ones (with the reason
and the raw reply) to OUT.rejected.jsonl; each record is one `write` of a whole line, so a kill leaves at most
one partial last line, which the next start cuts off. On start the run reads both files, skips every id they
hold and loads the accepted dialogues into the near-duplicate index: the same command picks up where it
stopped, losing and repeating nothing. Teacher errors are retried with exponential backoff up to a cap; an item
that still fails is counted but not recorded, so a later resume tries it again.

Workers (threads) only build a request, call the teacher and parse the reply, each for its own item; the main
thread gates, dedups and writes, so the index and the files have a single writer.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qiaoban.backends import Backend, BackendError, ChatResult, GenerationConfig
from qiaoban.data import GateConfig, NearDuplicateIndex, check_dialogue, dialogue_text
from qiaoban.dialogue import Dialogue, DialogueFormatError, Turn, iter_json_lines, iter_jsonl
from qiaoban.synth.parse import parse_dialogue
from qiaoban.synth.prompts import Request, build_messages, make_request, persona_parts, prompt_templates
from qiaoban.synth.topics import Scenario, iter_scenarios, load_scenarios

RAW_KEEP_CHARS = 4000  # of a rejected reply, kept in the sidecar for inspection


class SynthError(RuntimeError):
    """A run that cannot start or cannot go on (unreadable output file, teacher down ...)."""


class TeacherTimeout(BackendError):
    """The teacher did not finish a reply within the per-call timeout."""


@dataclass
class SynthConfig:
    n: int
    out: Path
    seed: int = 0
    workers: int = 1
    rpm: float = 0.0  # requests per minute over all workers; 0 = no limit
    max_retries: int = 3  # per item, for teacher errors and timeouts
    timeout_s: float = 180.0  # per teacher call
    backoff_s: float = 2.0  # first retry delay; doubles each retry, with jitter
    backoff_max_s: float = 60.0
    max_items: int | None = None  # items to try at most (default 3 × n): the run ends even if all are rejected
    max_consecutive_failures: int = 0  # 0 = max(5, 2 × workers); then the run stops: the teacher is down
    topics: str | None = None
    prompts: str | None = None  # a prompts.yaml of our shape; None: the packaged one
    gen: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_tokens=1024, temperature=0.8,
                                                                           top_p=0.95, repeat_penalty=1.1))
    gates: GateConfig = field(default_factory=GateConfig)
    dedup_threshold: float = 0.85
    # Teachers often let the child have the last word ("好的，谢谢你"); drop that turn rather than the dialogue.
    trim_trailing_child: bool = True
    # Small teachers fall into a loop, repeating earlier turns word for word; keep the dialogue up to the first
    # repeat (the gates still decide whether what is left is long enough).
    cut_at_repeat: bool = True
    price_in: float = 0.0  # per 1M prompt tokens
    price_out: float = 0.0  # per 1M completion tokens
    progress: bool = True

    @property
    def rejected_path(self) -> Path:
        return self.out.with_name(self.out.name + ".rejected.jsonl")

    @property
    def report_path(self) -> Path:
        return self.out.with_name(self.out.name + ".report.json")


def item_id(seed: int, index: int) -> str:
    return f"syn-s{seed}-{index:06d}"


@dataclass
class Outcome:
    """What a worker brings back for one item."""

    request: Request
    id: str
    text: str = ""
    turns: list[Turn] | None = None
    reason: str | None = None  # parse rejection, "truncated", or the failure ("timeout", "backend_error")
    failed: bool = False  # a teacher failure after all retries: counted, not recorded
    error: str = ""
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gen_s: float = 0.0
    tokens_per_s: float = 0.0
    dropped: list[str] = field(default_factory=list)


class RateLimiter:
    """At most `rpm` request starts per minute, spaced evenly, shared by all workers."""

    def __init__(self, rpm: float):
        self.interval = 60.0 / rpm if rpm > 0 else 0.0
        self._next = time.monotonic()
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        stop.wait(max(0.0, start - now))


def call_teacher(backend: Backend, messages: list[dict[str, str]], gen: GenerationConfig, timeout_s: float,
                 stop: threading.Event) -> ChatResult:
    """One streamed call with a wall-clock limit that holds for every backend (we stop reading and close the
    stream, which releases the model); raises TeacherTimeout or BackendError."""
    stream = backend.stream_chat(messages, GenerationConfig(**{**asdict(gen), "timeout_s": timeout_s}))
    deadline = time.monotonic() + timeout_s
    for _ in stream:
        if time.monotonic() > deadline:
            raise TeacherTimeout(f"no complete reply within {timeout_s:.0f} s")
        if stop.is_set():
            raise BackendError("run stopped")
    return stream.result


def generate_item(backend: Backend, request: Request, config: SynthConfig, limiter: RateLimiter,
                  stop: threading.Event, seed: int) -> Outcome:
    """Build the prompt, call the teacher (retrying errors up to the cap), parse the reply. Runs in a worker."""
    outcome = Outcome(request=request, id=item_id(seed, request.index))
    messages = build_messages(request)
    jitter = random.Random(outcome.id)
    for attempt in range(config.max_retries + 1):
        if stop.is_set():
            outcome.failed, outcome.reason, outcome.error = True, "stopped", "run stopped"
            return outcome
        limiter.wait(stop)
        outcome.attempts = attempt + 1
        started = time.monotonic()
        try:
            result = call_teacher(backend, messages, config.gen, config.timeout_s, stop)
        except BackendError as err:
            outcome.gen_s += time.monotonic() - started
            outcome.failed = True
            outcome.reason = "timeout" if isinstance(err, TeacherTimeout) else "backend_error"
            outcome.error = str(err)
            if attempt < config.max_retries:
                delay = min(config.backoff_max_s, config.backoff_s * 2**attempt) * (0.5 + jitter.random())
                stop.wait(delay)
            continue
        outcome.failed, outcome.error = False, ""
        outcome.text = result.text
        outcome.prompt_tokens += result.prompt_tokens
        outcome.completion_tokens += result.completion_tokens
        outcome.gen_s += result.total_s
        outcome.tokens_per_s = result.tokens_per_s
        prompts = prompt_templates(request.prompts)
        parsed = parse_dialogue(result.text, child_names=(request.persona.name, prompts["child_tag"],
                                                          *persona_parts()["names"]),
                                companion_names=(prompts["companion_tag"], prompts["companion_name"]))
        outcome.turns, outcome.reason, outcome.dropped = parsed.turns, parsed.reason, parsed.dropped
        if result.finish_reason == "length":  # kept parsed: a loop cut before the limit drops the cut-off tail
            outcome.reason = "truncated"
        return outcome
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Append-only JSONL files


def repair_tail(path: Path) -> int:
    """Cut a partial last line (a run killed mid-write); returns the bytes removed. A last line that is complete
    JSON but lacks its newline (a file written by hand) gets the newline instead."""
    if not path.is_file() or path.stat().st_size == 0:
        return 0
    size = path.stat().st_size
    with open(path, "rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        keep, chunk = 0, 1 << 16
        pos = size
        while pos > 0:  # scan back for the last newline
            start = max(0, pos - chunk)
            handle.seek(start)
            cut = handle.read(pos - start).rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            pos = start
        handle.seek(keep)
        tail = handle.read()
        try:
            json.loads(tail)
        except ValueError:
            handle.truncate(keep)
            return size - keep
        handle.seek(size)
        handle.write(b"\n")
        return 0


class RunLock:
    """An exclusive flock on OUT.lock: two runs appending to the same files would each redo the other's items.
    The kernel drops the lock when the process dies, even by SIGKILL, so a resume never finds a stale one."""

    def __init__(self, out: Path):
        import fcntl

        self.path = out.with_name(out.name + ".lock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self._fd, 64).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise SynthError(f"another run (pid {holder}) is writing {out}; wait for it or stop it first") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, str(os.getpid()).encode())

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self._fd)


class AppendLog:
    """One JSON record per line, each written with a single os.write of the whole line."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self._fd, data)
        while written < len(data):  # regular files write everything at once; be safe anyway
            written += os.write(self._fd, data[written:])

    def close(self) -> None:
        os.close(self._fd)


def read_rejected(path: Path) -> tuple[set[str], Counter[str]]:
    """Ids in the rejected sidecar, and its records counted by primary reason."""
    ids: set[str] = set()
    reasons: Counter[str] = Counter()
    if not path.is_file():
        return ids, reasons
    for number, record in iter_json_lines(path, hint="; not a rejected-item record"):
        try:
            ids.add(record["id"])
            reasons[record["reason"]] += 1
        except (KeyError, TypeError) as err:
            raise DialogueFormatError(f"not a rejected-item record ({err})", path=path, line=number) from None
    return ids, reasons


# ---------------------------------------------------------------------------------------------------------
# The run


@dataclass
class RunStats:
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # by primary reason, one per item
    reasons: Counter[str] = field(default_factory=Counter)  # every gate reason, several per item possible
    failed: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    gen_s: float = 0.0
    decode_rates: list[float] = field(default_factory=list)
    repaired: Counter[str] = field(default_factory=Counter)  # accepted items that needed a cut or trim

    def note_example(self, reason: str, item: str) -> None:
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(item)


def check_gates_available(gates: GateConfig) -> None:
    """Fail before any teacher call if a gate cannot run (the safety screen needs qiaoban.safety)."""
    probe = Dialogue("probe", [Turn("child", "你好"), Turn("assistant", "你好呀")])
    try:
        check_dialogue(probe, gates)
    except RuntimeError as err:
        raise SynthError(f"{err} (or use --no-safety-screen)") from None


def plan(scenarios: list[Scenario], seed: int, prompts: str | None = None) -> Iterator[Request]:
    for index, scenario in enumerate(iter_scenarios(scenarios, seed)):
        yield make_request(scenario, seed, index, prompts)


def dry_run(config: SynthConfig, echo: Callable[[str], None] = print) -> None:
    """Print the first n requests' prompts without calling a model."""
    scenarios = load_scenarios(config.topics)
    for request, _ in zip(plan(scenarios, config.seed, config.prompts), range(config.n), strict=False):
        echo(f"### {item_id(config.seed, request.index)}  [{request.scenario.category_id} / {request.scenario.topic}]")
        for message in build_messages(request):
            echo(f"--- {message['role']}\n{message['content']}")
        echo("")


def run_synth(backend: Backend, config: SynthConfig) -> dict[str, Any]:
    """Generate until OUT holds n accepted dialogues (or max_items have been tried); returns the report, which
    is also printed by the CLI and saved as OUT.report.json."""
    if config.n < 1 or config.workers < 1 or config.max_retries < 0:
        raise SynthError("n and workers must be at least 1 and max_retries at least 0")
    check_gates_available(config.gates)
    scenarios = load_scenarios(config.topics)
    out, rejected_path = Path(config.out), config.rejected_path
    lock = RunLock(out)
    try:
        return _run_locked(backend, config, scenarios, out, rejected_path)
    finally:
        lock.release()


def _run_locked(backend: Backend, config: SynthConfig, scenarios: list[Scenario], out: Path,
                rejected_path: Path) -> dict[str, Any]:
    cut = repair_tail(out) + repair_tail(rejected_path)

    index = NearDuplicateIndex(threshold=config.dedup_threshold)
    done: set[str] = set()
    have = 0
    if out.is_file():
        for d in iter_jsonl(out):
            done.add(d.id)
            index.add(d.id, dialogue_text(d))
            have += 1
    rejected_ids, rejected_reasons = read_rejected(rejected_path)
    done |= rejected_ids
    rejected_before = sum(rejected_reasons.values())

    max_items = config.max_items or 3 * config.n
    max_failures = config.max_consecutive_failures or max(5, 2 * config.workers)
    stats = RunStats()
    stop = threading.Event()
    limiter = RateLimiter(config.rpm)
    accepted_log, rejected_log = AppendLog(out), AppendLog(rejected_path)
    started = time.monotonic()
    skipped = 0
    consecutive_failures = 0
    aborted = ""
    teacher = backend.name

    from tqdm import tqdm

    bar = tqdm(total=config.n, initial=min(have, config.n), desc="synth", unit="dlg",
               disable=not config.progress, dynamic_ncols=True)
    requests = plan(scenarios, config.seed, config.prompts)
    pending: dict[Future[Outcome], str] = {}
    next_index = 0
    pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="synth")
    try:
        while True:
            while (not aborted and len(pending) < config.workers and have + stats.accepted + len(pending) < config.n
                   and next_index < max_items):
                request = next(requests)
                next_index += 1
                if item_id(config.seed, request.index) in done:
                    skipped += 1
                    continue
                future = pool.submit(generate_item, backend, request, config, limiter, stop, config.seed)
                pending[future] = item_id(config.seed, request.index)
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                pending.pop(future)
                outcome = future.result()
                _account(outcome, stats)
                if outcome.failed:
                    consecutive_failures += 1
                    stats.failed[outcome.reason or "backend_error"] += 1
                    stats.note_example(outcome.reason or "backend_error", f"{outcome.id}: {outcome.error}")
                    if consecutive_failures >= max_failures and not aborted:
                        aborted = (f"{consecutive_failures} items in a row failed after {config.max_retries} "
                                   f"retries each; last error: {outcome.error}")
                        stop.set()
                    continue
                consecutive_failures = 0
                if _settle(outcome, config, index, stats, accepted_log, rejected_log, teacher):
                    bar.update(1)
                bar.set_postfix(rejected=sum(stats.rejected.values()), failed=sum(stats.failed.values()),
                                refresh=True)
    except KeyboardInterrupt:
        # Stop the workers at their next streamed piece; what was written stays, the rest is redone on resume.
        stop.set()
        aborted = "interrupted"
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        accepted_log.close()
        rejected_log.close()
        report = _report(config, stats, time.monotonic() - started, have, rejected_before, skipped, cut, aborted,
                         teacher)
        config.report_path.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return report


def _account(outcome: Outcome, stats: RunStats) -> None:
    stats.attempts += outcome.attempts
    stats.prompt_tokens += outcome.prompt_tokens
    stats.completion_tokens += outcome.completion_tokens
    stats.gen_s += outcome.gen_s
    if outcome.tokens_per_s:
        stats.decode_rates.append(outcome.tokens_per_s)


def first_repeated_turn(turns: list[Turn]) -> int | None:
    """Index of the first turn that repeats an earlier turn of the same speaker word for word, or None."""
    seen: set[tuple[str, str]] = set()
    for i, turn in enumerate(turns):
        key = (turn.role, turn.text.strip())
        if key[1] and key in seen:
            return i
        seen.add(key)
    return None


def _settle(outcome: Outcome, config: SynthConfig, index: NearDuplicateIndex, stats: RunStats,
            accepted_log: AppendLog, rejected_log: AppendLog, teacher: str) -> bool:
    """Gate, dedup and write one finished item (main thread only); True when it was accepted."""
    request = outcome.request
    meta = {**request.meta(), "seed": config.seed, "teacher": teacher, "attempts": outcome.attempts,
            "prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens,
            "teacher_s": round(outcome.gen_s, 2)}
    turns = list(outcome.turns or [])
    reason = outcome.reason
    if config.cut_at_repeat and reason in (None, "truncated") and (cut := first_repeated_turn(turns)) is not None:
        meta["cut_at_repeat"] = len(turns) - cut
        del turns[cut:]
        reason = None
    if config.trim_trailing_child and len(turns) > 2 and turns[-1].role == "child" and turns[-2].role == "assistant":
        meta["trimmed_trailing_child"] = turns.pop().text
    dialogue = Dialogue(id=outcome.id, turns=turns, topic=request.scenario.topic,
                        emotion=request.emotion, source=f"synth:{teacher}", meta=meta)
    reasons: list[str] = [reason] if reason else check_dialogue(dialogue, config.gates)
    twin = None
    if not reasons:
        twin = index.add(dialogue.id, dialogue_text(dialogue))
        if twin is not None:
            reasons = ["near_duplicate"]
    if not reasons:
        accepted_log.write(dialogue.to_dict())
        stats.accepted += 1
        stats.repaired.update(key for key in ("cut_at_repeat", "trimmed_trailing_child") if key in meta)
        return True
    stats.rejected[reasons[0]] += 1
    stats.reasons.update(reasons)
    for reason in reasons:
        stats.note_example(reason, outcome.id)
    rejected_log.write({
        "id": outcome.id, "reason": reasons[0], "reasons": reasons, "twin": twin,
        "turns": [t.to_dict() for t in outcome.turns or []], "raw": outcome.text[:RAW_KEEP_CHARS],
        "dropped": outcome.dropped, "topic": request.scenario.topic, "emotion": request.emotion, "meta": meta,
    })
    return False


def _report(config: SynthConfig, stats: RunStats, elapsed: float, had: int, rejected_before: int, skipped: int,
            cut: int, aborted: str, teacher: str) -> dict[str, Any]:
    rejected = sum(stats.rejected.values())
    settled = stats.accepted + rejected
    cost = stats.prompt_tokens * config.price_in / 1e6 + stats.completion_tokens * config.price_out / 1e6
    rates = sorted(stats.decode_rates)
    return {
        "out": str(config.out),
        "teacher": teacher,
        "target": config.n,
        "done": had + stats.accepted >= config.n,
        "stopped": aborted,
        "file": {"accepted": had + stats.accepted, "rejected": rejected_before + rejected},
        "run": {
            "items": settled + sum(stats.failed.values()),
            "accepted": stats.accepted,
            "rejected": rejected,
            "acceptance_rate": round(stats.accepted / settled, 4) if settled else None,
            "rejected_by_reason": dict(stats.rejected.most_common()),
            "all_reasons": dict(stats.reasons.most_common()),
            "failed": dict(stats.failed.most_common()),
            "examples": stats.examples,
            "accepted_after_repair": dict(stats.repaired),
            "teacher_calls": stats.attempts,
            "skipped_already_done": skipped,
            "partial_bytes_cut": cut,
        },
        "tokens": {
            "prompt": stats.prompt_tokens,
            "completion": stats.completion_tokens,
            "cost": round(cost, 6),
            "price_in_per_1m": config.price_in,
            "price_out_per_1m": config.price_out,
            "completion_tokens_per_s": round(stats.completion_tokens / elapsed, 2) if elapsed else None,
            "median_decode_tokens_per_s": round(rates[len(rates) // 2], 2) if rates else None,
        },
        "time": {
            "elapsed_s": round(elapsed, 2),
            "teacher_s": round(stats.gen_s, 2),
            "dialogues_per_min": round(stats.accepted / elapsed * 60, 3) if elapsed else None,
            "items_per_min": round(settled / elapsed * 60, 3) if elapsed else None,
        },
        "config": {"seed": config.seed, "workers": config.workers, "rpm": config.rpm,
                   "max_retries": config.max_retries, "timeout_s": config.timeout_s, "topics": config.topics,
                   "prompts": config.prompts,
                   "max_tokens": config.gen.max_tokens, "dedup_threshold": config.dedup_threshold,
                   "gates": {k: (sorted(v) if isinstance(v, frozenset) else v)
                             for k, v in asdict(config.gates).items()}},
    }
