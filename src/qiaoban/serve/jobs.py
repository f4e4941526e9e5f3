"""Replies are generated on worker threads; the request handler reads a job's events from an asyncio queue.

A job keeps going when its client goes away (a session's reply is still stored), unless the handler cancels
it (an OpenAI-API stream whose client left). Every job holds a place in the generation queue until it ends,
and shutdown waits for the running jobs, so no reply the server has started is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qiaoban.backends import BackendError, EngineUnavailable
from qiaoban.chat import ChatEngine, ContextOverflowError, Reply
from qiaoban.serve.errors import ApiError
from qiaoban.serve.queue import GenerationQueue, QueueFull, Ticket

ENGINE_RETRY_AFTER_S = 5  # a restarted llama-server is ready within seconds
log = logging.getLogger("qiaoban.serve")

# How often a waiting job looks at its place in line (and reports it when it moved).
POLL_S = 0.2


@dataclass
class Event:
    kind: str  # "queued" (value: position) | "piece" (text) | "done" (Reply) | "error" (ApiError)
    value: Any


class Job:
    def __init__(self, ticket: Ticket, timeout_s: float, loop: asyncio.AbstractEventLoop):
        self.ticket = ticket
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.saved: Any = None  # what `on_reply` returned (the stored reply's id)
        self._loop = loop

    def emit(self, kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone (shutdown): nobody listens any more
            self._loop.call_soon_threadsafe(self.events.put_nowait, Event(kind, value))

    async def next_event(self) -> Event:
        return await self.events.get()


class JobRunner:
    def __init__(self, queue: GenerationQueue, timeout_s: float):
        self.queue = queue
        self.timeout_s = timeout_s
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def admit(self) -> Ticket:
        """A place in the generation queue, taken in the request handler so that a full queue is a clean 503."""
        try:
            return self.queue.admit()
        except QueueFull as err:
            raise ApiError(503, str(err), code="queue_full", retry_after_s=err.retry_after_s) from None

    def start(self, ticket: Ticket, engine: ChatEngine, text: str, on_reply: Callable[[Reply], Any],
              on_end: Callable[[], None] | None = None) -> Job:
        """Generate `engine`'s reply to `text` on a worker thread. `on_reply` runs there before "done" (to store
        the reply); `on_end` runs when the job ends, however it ends."""
        job = Job(ticket, self.timeout_s, asyncio.get_running_loop())
        thread = threading.Thread(target=self._run, args=(job, engine, text, on_reply, on_end), daemon=True,
                                  name="qiaoban-generate")
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return job

    def drain(self, timeout_s: float) -> int:
        """Wait for running jobs (at shutdown); returns how many are still running after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return sum(t.is_alive() for t in threads)

    def _run(self, job: Job, engine: ChatEngine, text: str, on_reply: Callable[[Reply], Any],
             on_end: Callable[[], None] | None) -> None:
        outcome: Event | None = None
        try:
            outcome = self._generate(job, engine, text, on_reply)
        except ApiError as err:
            outcome = Event("error", err)
        except ContextOverflowError as err:
            outcome = Event("error", ApiError(413, str(err), code="context_length_exceeded"))
        except ValueError as err:  # the engine refused the message
            outcome = Event("error", ApiError(422, str(err), code="invalid_value"))
        except EngineUnavailable as err:
            log.warning("engine unavailable: %s", err)
            outcome = Event("error", ApiError(503, f"the model is restarting: {err}", code="engine_unavailable",
                                              retry_after_s=ENGINE_RETRY_AFTER_S))
        except BackendError as err:
            log.warning("backend error: %s", err)
            outcome = Event("error", ApiError(502, f"the model failed: {err}", code="backend_error"))
        except Exception:
            log.exception("generation failed")
            outcome = Event("error", ApiError(500, "internal error while generating the reply", code="internal_error"))
        finally:
            # Free the slot and the session before saying "done": the client may send its next message at once.
            job.ticket.release()
            if on_end is not None:
                on_end()
            with self._lock:
                self._threads.discard(threading.current_thread())
        if outcome is not None:
            job.emit(outcome.kind, outcome.value)

    def _generate(self, job: Job, engine: ChatEngine, text: str, on_reply: Callable[[Reply], Any]) -> Event | None:
        self._wait_turn(job)
        stream = engine.stream(text)
        pieces = iter(stream)
        try:
            for piece in pieces:
                if job.cancelled.is_set():
                    return None
                job.emit("piece", piece)
                if time.monotonic() > job.deadline:
                    raise ApiError(504, f"the reply took longer than {job.timeout_s:g} s and was stopped",
                                   code="timeout")
        finally:
            pieces.close()  # on an early exit this stops the model and frees the slot
        reply = stream.reply
        job.saved = on_reply(reply)
        return Event("done", reply)

    def _wait_turn(self, job: Job) -> None:
        reported = 0
        while True:
            position = job.ticket.position
            if position == 0:
                return
            if position != reported:
                job.emit("queued", position)
                reported = position
            if job.ticket.wait(POLL_S):
                return
            if job.cancelled.is_set():
                raise ApiError(499, "the client went away", code="cancelled")
            if time.monotonic() > job.deadline:
                raise ApiError(503, f"waited {job.timeout_s:g} s in the queue; the server is busy",
                               code="queue_timeout", retry_after_s=self.queue.retry_after_s())
