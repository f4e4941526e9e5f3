"""A bounded, first-come-first-served generation queue.

llama.cpp on the CPU generates one reply at a time. Requests beyond the free slots wait in line, up to
`max_waiting` of them; the next one is turned away at once (HTTP 503 with Retry-After) instead of piling up
threads and memory until the server falls over.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class QueueFull(Exception):
    def __init__(self, retry_after_s: int):
        super().__init__(f"the server is busy; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Ticket:
    """A place in line; `started` once it holds a slot. Release it exactly once when done."""

    def __init__(self, queue: GenerationQueue, started: bool):
        self.queue = queue
        self.started = started
        self.started_at = time.monotonic() if started else 0.0
        self.released = False

    @property
    def position(self) -> int:
        return self.queue.position(self)

    def wait(self, timeout_s: float) -> bool:
        return self.queue.wait(self, timeout_s)

    def release(self) -> None:
        self.queue.release(self)


class GenerationQueue:
    def __init__(self, slots: int = 1, max_waiting: int = 16):
        if slots < 1 or max_waiting < 0:
            raise ValueError("need at least one slot and a non-negative queue size")
        self.slots = slots
        self.max_waiting = max_waiting
        self._cond = threading.Condition()
        self._running = 0
        self._waiting: deque[Ticket] = deque()
        self._mean_s = 5.0  # running mean of how long a generation holds a slot, for Retry-After

    def admit(self) -> Ticket:
        """A ticket that already holds a slot or waits in line; QueueFull when the line is full."""
        with self._cond:
            if self._running < self.slots and not self._waiting:
                self._running += 1
                return Ticket(self, started=True)
            if len(self._waiting) >= self.max_waiting:
                raise QueueFull(self.retry_after_s())
            ticket = Ticket(self, started=False)
            self._waiting.append(ticket)
            return ticket

    def position(self, ticket: Ticket) -> int:
        """0 when the ticket holds a slot, else 1 for the first in line, 2 for the next..."""
        with self._cond:
            if ticket.started:
                return 0
            return self._waiting.index(ticket) + 1 if ticket in self._waiting else 0

    def wait(self, ticket: Ticket, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: ticket.started, timeout_s)

    def release(self, ticket: Ticket) -> None:
        with self._cond:
            if ticket.released:
                return
            ticket.released = True
            if ticket.started:
                self._running -= 1
                self._mean_s = 0.8 * self._mean_s + 0.2 * (time.monotonic() - ticket.started_at)
            else:
                self._waiting.remove(ticket)
            while self._running < self.slots and self._waiting:
                nxt = self._waiting.popleft()
                nxt.started, nxt.started_at = True, time.monotonic()
                self._running += 1
            self._cond.notify_all()

    def retry_after_s(self) -> int:
        """A rough wait until a place frees up: the line ahead times the mean generation time, per slot."""
        return max(1, math.ceil(self._mean_s * (len(self._waiting) + 1) / self.slots))

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {"running": self._running, "waiting": len(self._waiting), "slots": self.slots,
                    "max_waiting": self.max_waiting}
