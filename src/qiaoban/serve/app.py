"""The FastAPI application: `create_app(backend, settings)` wires the store, the safety layer, the generation
queue and the routes (OpenAI API, session API, child page, guardian page) around one loaded backend.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from qiaoban.backends import Backend
from qiaoban.safety import EventStore, SafetyGuard
from qiaoban.serve import guardian, openai_api, sessions_api
from qiaoban.serve.deps import PAGE_HEADERS, Server, ServeSettings
from qiaoban.serve.errors import ApiError, install_error_handlers
from qiaoban.serve.jobs import JobRunner
from qiaoban.serve.queue import GenerationQueue
from qiaoban.serve.store import SessionStore

log = logging.getLogger("qiaoban.serve")

STATIC = resources.files("qiaoban.serve").joinpath("static")


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

    backend.warm(server.persona().system_prompt())  # a bad default age band fails here, at start-up
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
