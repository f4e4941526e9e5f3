"""Bad input gets a clear 4xx in OpenAI's error shape, and nothing is stored for it."""

from __future__ import annotations

import httpx
import pytest

USER = {"role": "user", "content": "hello"}
HUGE = "我" * 100_000  # 100 k characters, ~300 kB of UTF-8


@pytest.mark.parametrize(("body", "status", "code"), [
    ('{"model": "fixture", "messages": [', 400, "invalid_json"),
    ("not json at all", 400, "invalid_json"),
    ({"model": "fixture"}, 422, "invalid_value"),
    ({"model": "fixture", "messages": []}, 422, "invalid_value"),
    ({"model": "fixture", "messages": [{"role": "tool", "content": "x"}]}, 422, "invalid_value"),
    ({"model": "fixture", "messages": [{"role": "child", "content": "x"}]}, 422, "invalid_value"),
    ({"model": "fixture", "messages": [USER, {"role": "assistant", "content": "hi"}]}, 422, "invalid_value"),
    ({"model": "fixture", "messages": [{"role": "user", "content": "   "}]}, 422, "empty_message"),
    ({"model": "fixture", "messages": [{"role": "user", "content": HUGE}]}, 413, "message_too_long"),
    ({"model": "fixture", "messages": [USER] * 65}, 413, "too_many_messages"),
    ({"model": "fixture", "messages": [USER], "temperature": 9}, 422, "invalid_value"),
    ({"model": "fixture", "messages": [USER], "n": 3}, 422, "invalid_value"),
    ({"model": "gpt-4o", "messages": [USER]}, 404, "model_not_found"),
])
def test_chat_completions_rejects(base_url, body, status, code):
    if isinstance(body, str):
        response = httpx.post(f"{base_url}/v1/chat/completions", content=body,
                              headers={"Content-Type": "application/json"})
    else:
        response = httpx.post(f"{base_url}/v1/chat/completions", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]  # readable, e.g. "messages.0.role: Input should be 'system', ... 'assistant'"


def test_oversized_body_is_refused_before_parsing(base_url):
    response = httpx.post(f"{base_url}/v1/chat/completions", content=b"x" * (2 << 20),
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_session_api_rejects(base_url):
    assert httpx.post(f"{base_url}/api/sessions", json={"age_band": "3-5"}).status_code == 422
    session = httpx.post(f"{base_url}/api/sessions").json()["id"]
    url = f"{base_url}/api/sessions/{session}/messages"
    assert httpx.post(url, json={"text": "  \n"}).json()["error"]["code"] == "empty_message"
    assert httpx.post(url, json={"text": HUGE}).status_code == 413
    assert httpx.post(url, json={"txt": "hi"}).status_code == 422
    assert httpx.post(url, content="{", headers={"Content-Type": "application/json"}).status_code == 400
    assert httpx.post(f"{base_url}/api/sessions/nope/messages", json={"text": "hi"}).status_code == 404
    assert httpx.get(f"{base_url}/api/sessions/nope").status_code == 404
    assert httpx.get(f"{base_url}/api/sessions/{session}").json()["messages"] == []  # nothing was stored
