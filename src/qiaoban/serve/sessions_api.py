"""The session API behind the child's page: conversations kept in SQLite.

    POST   /api/sessions                  {"name"?, "age_band"?} -> 201 {"id", "persona", "messages": []}
    GET    /api/sessions/{id}             the session and its messages
    POST   /api/sessions/{id}/messages    {"text", "stream"?: true} -> server-sent events:
               accepted {"message_id", "position"}   the child's message is stored
               queued   {"position"}                 waiting for the model (1 = next)
               delta    {"text"}                     a piece of the reply
               done     {"message_id", "reply", "safety", "helpline", "replaced"}   the reply is stored
               error    {"error": {"message", "type", "code"}}
           with "stream": false, one JSON object like "done" (or an error status).
    GET    /api/sessions/{id}/export      the conversation as one line of Dialogue JSONL
    DELETE /api/sessions/{id}             forget it (204)

A session id is a 128-bit random token: whoever holds it can read that conversation, nobody can list them
(only the guardian view, with its token). One message at a time per session (409 while a reply is written).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from qiaoban.backends import GenerationConfig
from qiaoban.chat import Persona, Reply
from qiaoban.dialogue import Turn, merged_turns, with_pending
from qiaoban.serve.deps import Server, ServerDep
from qiaoban.serve.errors import ApiError
from qiaoban.serve.jobs import Job
from qiaoban.serve.queue import Ticket
from qiaoban.serve.store import Session, StoredMessage
from qiaoban.serve.streaming import SSE_HEADERS, job_events, sse, wait_reply
from qiaoban.serve.verdicts import RecordingGuard, helpline_card, safety_view

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


class NewSession(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=20, description="the companion's name")
    age_band: str | None = Field(None, description="the child's age band: 6-8, 9-12, 13-15, 16-18")


class NewMessage(BaseModel):
    text: str
    stream: bool = True


@router.post("", status_code=201)
def create_session(server: ServerDep, body: NewSession | None = None) -> dict[str, Any]:
    body = body or NewSession()
    try:
        persona = server.persona(body.name, body.age_band)
    except ValueError as err:
        raise ApiError(422, str(err), code="invalid_value", param="age_band") from None
    return server.store.create_session(persona.name, persona.age_band, server.settings.model_id).to_dict()


@router.get("/{session_id}")
def get_session(session_id: str, server: ServerDep) -> dict[str, Any]:
    return load(server, session_id).to_dict()


@router.get("/{session_id}/export")
def export_session(session_id: str, server: ServerDep) -> Response:
    dialogue = load(server, session_id).to_dialogue()
    return Response(dialogue.to_json() + "\n", media_type="application/x-ndjson",
                    headers={"Content-Disposition": f'attachment; filename="qiaoban-{session_id}.jsonl"'})


@router.delete("/{session_id}", status_code=204)
def delete_session(session_id: str, server: ServerDep) -> Response:
    if session_id in server.busy_sessions:
        raise ApiError(409, "a reply is still being written; try again when it is done", code="session_busy")
    if not server.store.delete_session(session_id):
        raise ApiError(404, "no such session", code="session_not_found")
    return Response(status_code=204)


@router.post("/{session_id}/messages", response_model=None)
async def post_message(session_id: str, body: NewMessage, server: ServerDep) -> StreamingResponse | JSONResponse:
    settings = server.settings
    text = body.text.strip()
    if not text:
        raise ApiError(422, "the message is empty", code="empty_message", param="text")
    if len(text) > settings.max_message_chars:
        raise ApiError(413, f"the message has {len(text)} characters; at most {settings.max_message_chars}",
                       code="message_too_long", param="text")
    session = await run_in_threadpool(load, server, session_id, settings.max_history_messages)
    if session_id in server.busy_sessions:
        raise ApiError(409, "a reply is still being written; wait for it before sending more", code="session_busy")
    ticket = server.runner.admit()
    server.busy_sessions.add(session_id)
    try:
        message_id = await run_in_threadpool(server.store.add_message, session_id, "child", text)
    except BaseException:
        ticket.release()
        server.busy_sessions.discard(session_id)
        raise
    position = ticket.position
    job = start_reply(server, session, message_id, text, ticket)
    if not body.stream:
        reply = await wait_reply(job)
        return JSONResponse(done_event(message_id, reply, job))
    return StreamingResponse(reply_events(job, message_id, position), media_type="text/event-stream",
                             headers=SSE_HEADERS)


def load(server: Server, session_id: str, last_messages: int | None = None) -> Session:
    session = server.store.get_session(session_id, last_messages)
    if session is None:
        raise ApiError(404, "no such session", code="session_not_found")
    return session


def history(messages: list[StoredMessage]) -> list[Turn]:
    """Stored messages as engine turns, starting with the child's. A child message left unanswered (a failed
    or interrupted reply) is joined with the next one, so the model sees everything the child said."""
    first_child = next((i for i, m in enumerate(messages) if m.role == "child"), len(messages))
    # the window of recent messages may begin with a reply
    return merged_turns(Turn(m.role, m.text) for m in messages[first_child:])  # type: ignore[arg-type]


def start_reply(server: Server, session: Session, message_id: int, text: str, ticket: Ticket) -> Job:
    settings = server.settings

    def on_verdict(verdict: Any) -> None:
        server.store.set_safety(message_id, safety_view(verdict) or {})
        if verdict.risk:
            server.events.record(verdict, session.id, text, settings.store_transcripts)

    turns, text = with_pending(history(session.messages), text)
    gen = GenerationConfig(max_tokens=settings.reply_tokens, temperature=settings.reply_temperature, top_p=0.9,
                           repeat_penalty=1.1, seed=settings.reply_seed, timeout_s=settings.request_timeout_s)
    engine = server.engine(Persona(session.persona_name, session.age_band), gen,
                           RecordingGuard(server.guard, on_verdict))
    engine.turns = turns
    return server.runner.start(
        ticket, engine, text,
        on_reply=lambda reply: server.store.add_message(session.id, "assistant", reply.text),
        on_end=lambda: server.busy_sessions.discard(session.id),
    )


def done_event(message_id: int, reply: Reply, job: Job) -> dict[str, Any]:
    return {"message_id": message_id, "reply_id": job.saved, "reply": reply.text,
            "safety": safety_view(reply.verdict), "helpline": helpline_card(reply.verdict),
            "replaced": reply.replaced}


async def reply_events(job: Job, message_id: int, position: int) -> AsyncIterator[str]:
    yield sse({"message_id": message_id, "position": position}, "accepted")
    async for event in job_events(job):
        if event.kind == "queued":
            yield sse({"position": event.value}, "queued")
        elif event.kind == "piece":
            yield sse({"text": event.value}, "delta")
        elif event.kind == "done":
            yield sse(done_event(message_id, event.value, job), "done")
        else:
            yield sse(event.value.body(), "error")
