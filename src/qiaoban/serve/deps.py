"""What every route needs, as FastAPI dependencies: the server's settings and state (`ServerDep`).

    @router.get("/v1/models")
    def models(server: ServerDep) -> ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request

from qiaoban.backends import Backend, GenerationConfig
from qiaoban.chat import ChatEngine, Guard, Persona
from qiaoban.config import home
from qiaoban.safety import EventStore
from qiaoban.serve.jobs import JobRunner
from qiaoban.serve.store import SessionStore

# The pages load nothing from elsewhere, and may not be framed or leak their address (session ids) onwards.
PAGE_HEADERS = {"Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


@dataclass
class ServeSettings:
    db_path: Path = field(default_factory=lambda: home() / "serve.db")
    model_id: str = "qiaoban"  # what clients send as "model" (the backend's own name is accepted too)
    guardian_token: str | None = None  # None: the guardian view is disabled
    store_transcripts: bool = False  # guardians see message text (events and whole sessions)
    queue_size: int = 16  # requests that may wait for the model; the next one gets 503
    slots: int = 1  # generations at once: 1 for llama.cpp on the CPU, more in front of a vLLM cluster
    max_message_chars: int = 2000
    max_history_messages: int = 64
    max_tokens: int = 512  # the most any request may ask for
    reply_tokens: int = 160  # replies on the child's page
    reply_temperature: float = 0.7
    reply_seed: int | None = None  # set for reproducible replies on the page (tests, demos)
    request_timeout_s: float = 120.0
    max_body_bytes: int = 1 << 20
    age_band: str | None = None  # default persona for new sessions
    persona_name: str | None = None


@dataclass
class Server:
    """Everything a route needs; `request.app.state.server`."""

    backend: Backend
    settings: ServeSettings
    store: SessionStore
    events: EventStore
    guard: Guard
    runner: JobRunner
    busy_sessions: set[str] = field(default_factory=set)

    @property
    def model_ids(self) -> list[str]:
        return list(dict.fromkeys([self.settings.model_id, self.backend.name, "qiaoban"]))

    def persona(self, name: str | None = None, age_band: str | None = None) -> Persona:
        """The companion for a new conversation; unset fields fall back to the server's, then the defaults."""
        chosen = {"name": name or self.settings.persona_name, "age_band": age_band or self.settings.age_band}
        return Persona(**{k: v for k, v in chosen.items() if v})

    def engine(self, persona: Persona, gen: GenerationConfig, guard: Guard) -> ChatEngine:
        return ChatEngine(self.backend, persona, gen, guard=guard)


def server_of(request: Request) -> Server:
    return request.app.state.server


ServerDep = Annotated[Server, Depends(server_of)]
