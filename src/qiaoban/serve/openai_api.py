"""`POST /v1/chat/completions` and `GET /v1/models`, compatible with the `openai` client.

The companion's own system prompt always applies: a client's system messages are accepted and ignored, so no
caller can talk the model out of its persona or its safety guidance. Every request passes the safety layer
(the last user message is screened with the earlier ones as context; the reply is guarded clause by clause),
and the verdict comes back in an extra `safety` field (on the response, and on the last stream chunk).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from qiaoban.backends import GenerationConfig
from qiaoban.chat import Reply
from qiaoban.dialogue import Turn, merged_turns, with_pending
from qiaoban.serve.deps import Server, ServerDep
from qiaoban.serve.errors import ApiError
from qiaoban.serve.jobs import Job
from qiaoban.serve.streaming import SSE_HEADERS, job_events, sse, wait_reply
from qiaoban.serve.verdicts import RecordingGuard, safety_view

router = APIRouter(prefix="/v1", tags=["openai"])

# A history message other than the newest may be this many times longer than a new message (model replies).
HISTORY_LENGTH_FACTOR = 4


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # tools send many optional OpenAI fields; unknown ones are ignored
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=1, description="only one choice per request")
    user: str | None = Field(None, max_length=200)


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "qiaoban"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class SafetyView(BaseModel):
    """The safety verdict on the child's message (qiaoban's extension to the OpenAI format)."""

    risk: bool
    category: str | None
    severity: str | None
    score: float


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "content_filter"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: CompletionUsage
    safety: SafetyView | None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Literal["stop", "length", "content_filter"] | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed reply; the last content chunk carries `safety`, and with
    `stream_options.include_usage` a final chunk with no choices carries `usage`."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    safety: SafetyView | None = None
    usage: CompletionUsage | None = None


@router.get("/models")
def list_models(server: ServerDep) -> ModelList:
    return ModelList(data=[ModelCard(id=name) for name in server.model_ids])


@router.post("/chat/completions", response_model=None, responses={200: {
    "model": ChatCompletion,
    "description": "The reply; with `stream: true`, server-sent events of `ChatCompletionChunk` ending in `[DONE]`.",
    "content": {"text/event-stream": {"schema": ChatCompletionChunk.model_json_schema()}}}})
async def chat_completions(body: ChatCompletionRequest, server: ServerDep) -> JSONResponse | StreamingResponse:
    if body.model not in server.model_ids:
        raise ApiError(404, f"the model {body.model!r} does not exist; this server has {', '.join(server.model_ids)}",
                       code="model_not_found", param="model")
    history, text = conversation(body.messages, server)
    gen = generation_config(body, server)
    session_id = body.user or f"api-{uuid.uuid4().hex[:12]}"
    ticket = server.runner.admit()
    guard = RecordingGuard(server.guard, lambda verdict: record_event(server, verdict, session_id, text))
    engine = server.engine(server.persona(), gen, guard)
    engine.turns = history
    job = server.runner.start(ticket, engine, text, on_reply=lambda reply: None)
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    if not body.stream:
        reply = await wait_reply(job)
        return JSONResponse(completion(completion_id, body.model, reply))
    first = await first_piece(job)  # queue waits and early errors still get a proper status code
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    return StreamingResponse(stream_chunks(job, first, completion_id, body.model, include_usage),
                             media_type="text/event-stream", headers=SSE_HEADERS)


def conversation(messages: list[ChatMessage], server: Server) -> tuple[list[Turn], str]:
    """The earlier turns and the newest user message, checked against the limits."""
    settings = server.settings
    if len(messages) > settings.max_history_messages:
        raise ApiError(413, f"{len(messages)} messages; at most {settings.max_history_messages} per request",
                       code="too_many_messages", param="messages")
    *earlier, last = messages
    if last.role != "user":
        raise ApiError(422, f"the last message must come from the user, not {last.role!r}", code="invalid_value",
                       param="messages")
    text = last.text().strip()
    if not text:
        raise ApiError(422, "the last user message is empty", code="empty_message", param="messages")
    if len(text) > settings.max_message_chars:
        raise ApiError(413, f"the message has {len(text)} characters; at most {settings.max_message_chars}",
                       code="message_too_long", param="messages")
    turns: list[Turn] = []
    for i, message in enumerate(earlier):
        if message.role in ("system", "developer"):
            continue
        content = message.text().strip()
        if len(content) > HISTORY_LENGTH_FACTOR * settings.max_message_chars:
            raise ApiError(413, f"messages.{i} is too long ({len(content)} characters)", code="message_too_long",
                           param=f"messages.{i}")
        if not content:
            continue
        turns.append(Turn("child" if message.role == "user" else "assistant", content))
    return with_pending(merged_turns(turns), text)


def generation_config(body: ChatCompletionRequest, server: Server) -> GenerationConfig:
    settings = server.settings
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stop) > 4:
        raise ApiError(422, "at most 4 stop sequences", code="invalid_value", param="stop")
    requested = body.max_completion_tokens or body.max_tokens or settings.reply_tokens
    return GenerationConfig(
        max_tokens=min(requested, settings.max_tokens),
        temperature=0.7 if body.temperature is None else body.temperature,
        top_p=0.9 if body.top_p is None else body.top_p,
        repeat_penalty=1.1,
        seed=body.seed,
        stop=[s for s in stop if s],
        timeout_s=settings.request_timeout_s,
    )


def record_event(server: Server, verdict: Any, session_id: str, text: str) -> None:
    if verdict.risk:
        server.events.record(verdict, session_id, text, server.settings.store_transcripts)


def finish_reason(reply: Reply) -> str:
    if reply.replaced:
        return "content_filter"
    if reply.result is None:  # a vetted template answered
        return "stop"
    return "length" if reply.result.finish_reason == "length" else "stop"


def usage(reply: Reply) -> CompletionUsage:
    prompt = reply.result.prompt_tokens if reply.result else 0
    done = reply.result.completion_tokens if reply.result else 0
    return CompletionUsage(prompt_tokens=prompt, completion_tokens=done, total_tokens=prompt + done)


def safety(reply: Reply) -> SafetyView | None:
    view = safety_view(reply.verdict)
    return SafetyView(**view) if view else None


def completion(completion_id: str, model: str, reply: Reply) -> dict[str, Any]:
    return ChatCompletion(
        id=completion_id, created=int(time.time()), model=model, usage=usage(reply), safety=safety(reply),
        choices=[Choice(message=AssistantMessage(content=reply.text), finish_reason=finish_reason(reply))],
    ).model_dump()


def chunk_json(event: ChatCompletionChunk) -> dict[str, Any]:
    """A chunk as OpenAI sends it: `finish_reason` and `logprobs` always there (null), empty delta fields, `safety`
    and `usage` only on the chunks that carry them."""
    data = event.model_dump()
    for choice in data["choices"]:
        choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
    return {k: v for k, v in data.items() if v is not None}


async def first_piece(job: Job) -> str | None:
    """Wait through the queue for the first text piece (None if the reply finished without one)."""
    async for event in job_events(job):
        if event.kind == "piece":
            return event.value
        if event.kind == "error":
            raise event.value
        if event.kind == "done":
            job.events.put_nowait(event)  # let the stream see it
            return None
    return None


async def stream_chunks(job: Job, first: str | None, completion_id: str, model: str,
                        include_usage: bool) -> AsyncIterator[str]:
    created = int(time.time())

    def chunk(delta: Delta, reason: Any = None, **extra: Any) -> str:
        return sse(chunk_json(ChatCompletionChunk(id=completion_id, created=created, model=model,
                                                  choices=[ChunkChoice(delta=delta, finish_reason=reason)], **extra)))

    finished = False
    try:
        yield chunk(Delta(role="assistant", content=first or ""))
        async for event in job_events(job):
            if event.kind == "piece":
                yield chunk(Delta(content=event.value))
            elif event.kind == "error":
                finished = True
                yield sse(event.value.body())
            elif event.kind == "done":
                finished = True
                reply: Reply = event.value
                yield chunk(Delta(), finish_reason(reply), safety=safety(reply))
                if include_usage:
                    yield sse(chunk_json(ChatCompletionChunk(id=completion_id, created=created, model=model,
                                                             choices=[], usage=usage(reply))))
        yield sse("[DONE]")
    finally:
        if not finished:  # the client went away: stop generating for nobody
            job.cancelled.set()
