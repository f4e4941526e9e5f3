"""Guardian events: each detection, stored in SQLite for the guardian view. The child's words only on request."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from qiaoban.safety.detect import Verdict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS safety_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    session_id TEXT,
    category TEXT NOT NULL,
    severity TEXT NOT NULL,
    score REAL NOT NULL,
    text TEXT
);
CREATE INDEX IF NOT EXISTS safety_events_session ON safety_events (session_id, id);
"""


@dataclass
class SafetyEvent:
    category: str
    severity: str
    score: float
    created_at: float  # unix time
    session_id: str | None
    text: str | None  # the child's words, only when the store was asked to keep them


class EventStore:
    """`EventStore(path).record(verdict, session_id, text, store_text=False)`; `.list(limit, session_id)`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # One short-lived connection per call: safe from any thread of a server.
        db = sqlite3.connect(self.path, timeout=10)
        try:
            with db:  # commits, or rolls back on error
                yield db
        finally:
            db.close()

    def record(self, verdict: Verdict, session_id: str | None = None, text: str | None = None,
               store_text: bool = False) -> SafetyEvent:
        if not verdict.risk or verdict.category is None or verdict.severity is None:
            raise ValueError("only a risky verdict is a safety event")
        event = SafetyEvent(verdict.category, verdict.severity, float(verdict.score), time.time(), session_id,
                            text if store_text else None)
        with self._connect() as db:
            db.execute(
                "INSERT INTO safety_events (created_at, session_id, category, severity, score, text) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (event.created_at, event.session_id, event.category, event.severity, event.score, event.text),
            )
        return event

    def list(self, limit: int = 100, session_id: str | None = None) -> list[SafetyEvent]:
        """Newest first."""
        query = "SELECT category, severity, score, created_at, session_id, text FROM safety_events"
        args: tuple = ()
        if session_id is not None:
            query += " WHERE session_id = ?"
            args = (session_id,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id DESC LIMIT ?", (*args, int(limit))).fetchall()
        return [SafetyEvent(*row) for row in rows]
