"""The guardian view: off without a token, 401 without the right one, events and transcripts with it."""

from __future__ import annotations

import dataclasses

import httpx

from qiaoban.serve.guardian import token_matches
from tests.serve.conftest import GUARDIAN_TOKEN, send_message

RISKY = "我已经决定了，药都准备好了"  # an emergency: a vetted template answers, the model is not called


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_auth_on_api_and_page(base_url):
    session = httpx.post(f"{base_url}/api/sessions").json()["id"]
    send_message(base_url, session, RISKY)

    for headers in ({}, bearer("wrong-token-0000000000"), {"Authorization": "Bearer"},
                    {"Authorization": GUARDIAN_TOKEN},
                    bearer(GUARDIAN_TOKEN + "x")):
        response = httpx.get(f"{base_url}/api/guardian/events", headers=headers)
        assert response.status_code == 401
        assert "self_harm" not in response.text and session not in response.text
    page = httpx.get(f"{base_url}/guardian")
    assert page.status_code == 401 and "self_harm" not in page.text and session[:12] not in page.text
    assert httpx.get(f"{base_url}/guardian", params={"token": "nope"}).status_code == 401
    assert httpx.post(f"{base_url}/guardian/login", data={"token": "nope"}).status_code == 401

    events = httpx.get(f"{base_url}/api/guardian/events", headers=bearer(GUARDIAN_TOKEN)).json()
    assert [(e["category"], e["severity"], e["session_id"]) for e in events["events"]] == [
        ("self_harm", "emergency", session)]
    assert events["events"][0]["text"] is None  # transcripts were not enabled
    assert httpx.get(f"{base_url}/api/guardian/sessions", headers=bearer(GUARDIAN_TOKEN)).status_code == 403

    with httpx.Client(base_url=base_url) as browser:  # the sign-in form sets a cookie
        signed_in = browser.post("/guardian/login", data={"token": GUARDIAN_TOKEN})
        assert signed_in.status_code == 303 and GUARDIAN_TOKEN not in signed_in.headers["set-cookie"]
        page = browser.get("/guardian")
        assert page.status_code == 200
        assert "自伤或轻生念头" in page.text and "危急" in page.text and session[:12] in page.text
        assert RISKY not in page.text


def test_transcripts_when_enabled(serve, settings):
    with serve(dataclasses.replace(settings, store_transcripts=True)) as url:
        session = httpx.post(f"{url}/api/sessions").json()["id"]
        send_message(url, session, RISKY)
        events = httpx.get(f"{url}/api/guardian/events", headers=bearer(GUARDIAN_TOKEN)).json()["events"]
        assert events[0]["text"] == RISKY
        sessions = httpx.get(f"{url}/api/guardian/sessions", headers=bearer(GUARDIAN_TOKEN)).json()["sessions"]
        assert sessions[0]["id"] == session and sessions[0]["messages"][0]["text"] == RISKY
        page = httpx.get(f"{url}/guardian", params={"token": GUARDIAN_TOKEN}, follow_redirects=True)
        assert page.status_code == 200 and RISKY in page.text


def test_no_token_configured_means_no_guardian_view(serve, settings):
    with serve(dataclasses.replace(settings, guardian_token=None)) as url:
        for path in ("/guardian", "/api/guardian/events", "/api/guardian/sessions"):
            assert httpx.get(f"{url}{path}").status_code == 404
            assert httpx.get(f"{url}{path}", headers=bearer("anything")).status_code == 404


def test_token_compare():
    assert token_matches("s3cret-token", "s3cret-token")
    assert not token_matches("s3cret-token", "s3cret-toke")
    assert not token_matches("s3cret-token", "")
    assert not token_matches("s3cret-token", None)
