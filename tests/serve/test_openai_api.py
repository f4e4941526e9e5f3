"""The `openai` client, unchanged, against a real server on loopback with the fixture model."""

from __future__ import annotations

import httpx
import openai

from tests.serve.conftest import GUARDIAN_TOKEN

RISKY = "I want to kill myself"


def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)


def test_models_and_completion(base_url):
    api = client(base_url)
    assert "fixture" in [m.id for m in api.models.list().data]

    reply = api.chat.completions.create(
        model="fixture", max_tokens=8, seed=1,
        messages=[{"role": "system", "content": "ignored: the companion persona always applies"},
                  {"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi, how are you?"},
                  {"role": "user", "content": "I had a good day at school."}],
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content.strip()
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0
    assert reply.model_extra["safety"] == {"risk": False, "category": None, "severity": None,
                                           "score": reply.model_extra["safety"]["score"]}


def test_streaming_with_usage_and_safety_verdict(base_url):
    api = client(base_url)
    chunks = list(api.chat.completions.create(
        model="fixture", max_tokens=8, stream=True, stream_options={"include_usage": True}, user="kid-42",
        messages=[{"role": "user", "content": "I feel sad."}, {"role": "assistant", "content": "I'm here."},
                  {"role": "user", "content": RISKY}],
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.model_extra["safety"]["risk"] is True
    assert final.model_extra["safety"]["category"] == "self_harm"
    assert "12356" in text  # the vetted follow-up with the help line is part of the streamed reply
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2  # streamed in pieces

    # the detection is a guardian event under the caller's `user` id, without the child's words
    events = httpx.get(f"{base_url}/api/guardian/events", headers={"Authorization": f"Bearer {GUARDIAN_TOKEN}"},
                       params={"session_id": "kid-42"}).json()["events"]
    assert [(e["category"], e["text"]) for e in events] == [("self_harm", None)]


def test_emergency_answered_from_template_without_the_model(base_url):
    reply = client(base_url).chat.completions.create(
        model="qiaoban", messages=[{"role": "user", "content": "我已经决定了，药都准备好了"}])
    assert reply.model_extra["safety"]["severity"] == "emergency"
    assert "120" in reply.choices[0].message.content
    assert reply.usage.completion_tokens == 0  # the model was not called


def test_in_front_of_an_openai_compatible_upstream(base_url, tmp_path):
    """Scale-out mode (`--backend openai --base-url`): here the upstream is another server on loopback."""
    from qiaoban.backends import load_backend
    from qiaoban.serve import ServeSettings
    from tests.serve.conftest import running_server

    upstream = load_backend("openai", base_url=f"{base_url}/v1", api_model="fixture")
    front = ServeSettings(db_path=tmp_path / "front.db", model_id="fixture", slots=4, reply_tokens=8)
    with running_server(upstream, front) as url:
        reply = client(url).chat.completions.create(
            model="fixture", max_tokens=8, messages=[{"role": "user", "content": "Hello there!"}])
    assert reply.choices[0].message.content.strip()
    assert reply.usage.completion_tokens > 0  # reported by the upstream
    assert reply.model_extra["safety"]["risk"] is False


def test_the_schema_at_docs_describes_what_the_server_sends(base_url):
    from qiaoban.serve.openai_api import ChatCompletion, ModelList

    schema = httpx.get(f"{base_url}/openapi.json").json()
    names = set(schema["components"]["schemas"])
    assert {"ChatCompletion", "ModelList", "SafetyView"} <= names
    completions = schema["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    assert {"application/json", "text/event-stream"} <= set(completions)
    ModelList.model_validate(httpx.get(f"{base_url}/v1/models").json())
    raw = httpx.post(f"{base_url}/v1/chat/completions", timeout=300,
                     json={"model": "fixture", "max_tokens": 4, "messages": [{"role": "user", "content": "Hi"}]})
    ChatCompletion.model_validate(raw.json())  # the documented wire model, strictly
