"""Chat sessions in SQLite: one row per session, one per message, written as they happen.

WAL mode with full sync: a message the server has acknowledged is on disk, so a restart (or a crash) loses no
stored message. The child's message is written before the model starts; the reply when it is complete.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qiaoban.dialogue import Dialogue, Turn

SCHEMA = """
CREATE TABLE IF NOT EXISTS chat_sessions (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    persona_name TEXT NOT NULL,
    age_band TEXT NOT NULL,
    model TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chat_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES chat_sessions(id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('child', 'assistant')),
    text TEXT NOT NULL,
    created_at REAL NOT NULL,
    safety TEXT
);
CREATE INDEX IF NOT EXISTS chat_messages_by_session ON chat_messages(session_id, id);
"""


@dataclass
class StoredMessage:
    id: int
    role: str
    text: str
    created_at: float
    safety: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "text": self.text, "created_at": self.created_at,
                "safety": self.safety}


@dataclass
class Session:
    id: str
    created_at: float
    persona_name: str
    age_band: str
    model: str
    messages: list[StoredMessage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at,
                "persona": {"name": self.persona_name, "age_band": self.age_band}, "model": self.model,
                "messages": [m.to_dict() for m in self.messages]}

    def to_dialogue(self) -> Dialogue:
        return Dialogue(
            id=self.id,
            turns=[Turn(m.role, m.text) for m in self.messages],  # type: ignore[arg-type]
            source="qiaoban-serve",
            meta={"model": self.model, "persona": self.persona_name, "age_band": self.age_band,
                  "created_at": self.created_at},
        )


class SessionStore:
    """Thread-safe: one connection behind a lock (SQLite writes are serialised anyway)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create_session(self, persona_name: str, age_band: str, model: str) -> Session:
        session = Session(secrets.token_urlsafe(16), time.time(), persona_name, age_band, model)
        with self._lock:
            self._db.execute("INSERT INTO chat_sessions VALUES (?, ?, ?, ?, ?)",
                             (session.id, session.created_at, persona_name, age_band, model))
        return session

    def get_session(self, session_id: str, last_messages: int | None = None) -> Session | None:
        """The session with its messages (only the newest `last_messages` when given), or None."""
        with self._lock:
            row = self._db.execute("SELECT id, created_at, persona_name, age_band, model FROM chat_sessions "
                                   "WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                return None
            rows = self._db.execute(
                "SELECT id, role, text, created_at, safety FROM chat_messages WHERE session_id = ? "
                "ORDER BY id DESC LIMIT ?", (session_id, -1 if last_messages is None else last_messages),
            ).fetchall()
        messages = [StoredMessage(i, role, text, at, json.loads(safety) if safety else None)
                    for i, role, text, at, safety in reversed(rows)]
        return Session(*row, messages=messages)

    def list_sessions(self, limit: int = 50) -> list[Session]:
        """The most recently active sessions, newest first, with their messages."""
        with self._lock:
            ids = [r[0] for r in self._db.execute(
                "SELECT s.id FROM chat_sessions s LEFT JOIN chat_messages m ON m.session_id = s.id "
                "GROUP BY s.id ORDER BY MAX(COALESCE(m.created_at, s.created_at)) DESC LIMIT ?", (limit,))]
        return [s for s in map(self.get_session, ids) if s is not None]

    def add_message(self, session_id: str, role: str, text: str) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO chat_messages (session_id, role, text, created_at) VALUES (?, ?, ?, ?)",
                (session_id, role, text, time.time()))
        return int(cursor.lastrowid)

    def set_safety(self, message_id: int, safety: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("UPDATE chat_messages SET safety = ? WHERE id = ?",
                             (json.dumps(safety, ensure_ascii=False), message_id))

    def delete_session(self, session_id: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM chat_sessions WHERE id = ?", (session_id,)).rowcount > 0
