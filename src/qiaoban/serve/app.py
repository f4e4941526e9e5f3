"""The FastAPI application: `create_app(backend, settings)` wires the store, the safety layer, the generation
queue and the routes (OpenAI API, session API, child page, guardian page) around one loaded backend.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from qiaoban.backends import Backend, GenerationConfig
from qiaoban.chat import ChatEngine, Guard, Persona
from qiaoban.config import home
from qiaoban.safety import EventStore, SafetyGuard
from qiaoban.serve.errors import ApiError, install_error_handlers
from qiaoban.serve.jobs import JobRunner
from qiaoban.serve.queue import GenerationQueue
from qiaoban.serve.store import SessionStore

log = logging.getLogger("qiaoban.serve")

STATIC = resources.files("qiaoban.serve").joinpath("static")
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


class BodyLimit:
    """Refuse bodies over the limit from their Content-Length, before anything reads or parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_bytes:
                await ApiError(413, f"the request body is larger than {self.max_bytes} bytes",
                               code="body_too_large").response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(backend: Backend, settings: ServeSettings | None = None) -> FastAPI:
    from qiaoban.serve import guardian, openai_api, sessions_api

    settings = settings or ServeSettings()
    store = SessionStore(settings.db_path)
    guard = SafetyGuard()
    server = Server(
        backend=backend,
        settings=settings,
        store=store,
        events=EventStore(settings.db_path),
        guard=guard,
        runner=JobRunner(GenerationQueue(settings.slots, settings.queue_size), settings.request_timeout_s),
    )

    server.persona()  # a bad default age band fails here, at start-up
    guard.preload()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        left = server.runner.drain(settings.request_timeout_s)
        if left:
            log.warning("%d replies were still being generated at shutdown", left)
        store.close()

    app = FastAPI(title="qiaoban", summary="An emotion-coaching companion for children", lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.server = server
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.include_router(openai_api.router)
    app.include_router(sessions_api.router)
    app.include_router(guardian.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(STATIC.joinpath("index.html").read_text("utf-8"), headers=PAGE_HEADERS)

    @app.get("/healthz")
    def healthz() -> dict[str, object]:
        return {"status": "ok", "model": settings.model_id, "queue": server.runner.queue.stats()}

    return app
