"""Sessions: streamed replies, SQLite persistence across a restart, Dialogue JSONL export, help-line card."""

from __future__ import annotations

import json

import httpx

from qiaoban.dialogue import Dialogue, Turn, structure_problems
from qiaoban.serve.sessions_api import history
from qiaoban.serve.store import StoredMessage
from tests.serve.conftest import send_message

EMERGENCY = "我已经决定了，药都准备好了"


def test_conversation_survives_a_restart_and_exports(serve, settings):
    with serve(settings) as url:
        created = httpx.post(f"{url}/api/sessions", json={"age_band": "6-8"})
        assert created.status_code == 201
        session = created.json()["id"]
        events = send_message(url, session, "Hi! I made a new friend today.")
        kinds = [kind for kind, _ in events]
        assert kinds[0] == "accepted" and kinds[-1] == "done" and "delta" in kinds
        done = events[-1][1]
        assert done["reply"] == "".join(d["text"] for k, d in events if k == "delta")
        assert done["safety"]["risk"] is False and done["helpline"] is None

    with serve(settings) as url:  # a new server on the same database
        stored = httpx.get(f"{url}/api/sessions/{session}").json()
        assert [(m["role"], m["text"]) for m in stored["messages"]] == [
            ("child", "Hi! I made a new friend today."), ("assistant", done["reply"])]
        assert stored["persona"]["age_band"] == "6-8"
        assert stored["messages"][0]["safety"]["risk"] is False

        answer = httpx.post(f"{url}/api/sessions/{session}/messages", timeout=300,
                            json={"text": "We played football.", "stream": False})  # one JSON object
        assert answer.status_code == 200
        assert answer.json()["reply"].strip() and answer.json()["reply_id"] > answer.json()["message_id"]
        export = httpx.get(f"{url}/api/sessions/{session}/export")
        assert export.headers["content-type"].startswith("application/x-ndjson")
        lines = export.text.splitlines()
        assert len(lines) == 1
        dialogue = Dialogue.from_dict(json.loads(lines[0]))
        assert dialogue.id == session and len(dialogue.turns) == 4
        assert structure_problems(dialogue.turns) == []

        assert httpx.delete(f"{url}/api/sessions/{session}").status_code == 204
        assert httpx.get(f"{url}/api/sessions/{session}").status_code == 404


def test_risky_message_gets_help_line_card(base_url):
    session = httpx.post(f"{base_url}/api/sessions").json()["id"]
    done = send_message(base_url, session, EMERGENCY)[-1]
    assert done[0] == "done"
    verdict, card = done[1]["safety"], done[1]["helpline"]
    assert verdict["risk"] is True and verdict["category"] == "self_harm" and verdict["severity"] == "emergency"
    numbers = [line["number"] for line in card["lines"]]
    assert "120" in numbers and "12356" in numbers
    assert all(number in done[1]["reply"] for number in numbers)  # the card repeats what the reply says
    stored = httpx.get(f"{base_url}/api/sessions/{session}").json()["messages"]
    assert stored[0]["safety"]["severity"] == "emergency"


def test_history_joins_an_unanswered_message_and_starts_with_the_child():
    rows = [StoredMessage(1, "assistant", "(cut off by the history window)", 0.0),
            StoredMessage(2, "child", "hi", 0.0), StoredMessage(3, "assistant", "hello!", 0.0),
            StoredMessage(4, "child", "are you there?", 0.0),  # its reply was never stored
            StoredMessage(5, "child", "hello?", 0.0)]
    assert history(rows) == [Turn("child", "hi"), Turn("assistant", "hello!"),
                             Turn("child", "are you there?\nhello?")]
