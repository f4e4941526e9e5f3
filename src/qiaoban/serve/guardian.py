"""The guardian view: safety events (and, if the server stores them, transcripts) behind a start-up token.

    GET  /api/guardian/events?limit=&session_id=   Authorization: Bearer TOKEN
    GET  /api/guardian/sessions?limit=             transcripts; 403 unless started with --store-transcripts
    GET  /guardian                                 the page (a sign-in form until the cookie is set)
    POST /guardian/login   (form: token)           sets the cookie; /guardian?token=... does the same
    POST /guardian/logout

No token configured: everything here is 404, never open. A missing or wrong token: 401 and nothing else.
Tokens are compared in constant time; the cookie holds an HMAC of the token, not the token.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import asdict
from functools import cache
from typing import Annotated, Any
from urllib.parse import parse_qs

import jinja2
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from qiaoban.serve.deps import PAGE_HEADERS, Server, ServerDep
from qiaoban.serve.errors import ApiError

router = APIRouter(tags=["guardian"])

COOKIE = "qiaoban_guardian"
COOKIE_MAX_AGE_S = 8 * 3600


@cache
def templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("qiaoban.serve", "templates"),
                              autoescape=jinja2.select_autoescape(default=True))


def token_matches(configured: str, given: str | None) -> bool:
    # Digests first: compare_digest is constant-time only for inputs of equal length.
    expected = hashlib.sha256(configured.encode()).digest()
    return hmac.compare_digest(expected, hashlib.sha256((given or "").encode()).digest()) and bool(given)


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"qiaoban-guardian-cookie", hashlib.sha256).hexdigest()


def enabled_token(server: Server) -> str:
    token = server.settings.guardian_token
    if not token:
        raise ApiError(404, "Not Found")
    return token


def authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token_matches(token, given.strip()):
        return True
    return hmac.compare_digest(cookie_value(token), request.cookies.get(COOKIE, ""))


def require_guardian(request: Request, server: ServerDep) -> Server:
    if not authorized(request, enabled_token(server)):
        raise ApiError(401, "a guardian token is required", code="unauthorized")
    return server


GuardianDep = Annotated[Server, Depends(require_guardian)]


@router.get("/api/guardian/events")
def guardian_events(server: GuardianDep, limit: int = Query(100, ge=1, le=1000),
                    session_id: str | None = None) -> dict[str, Any]:
    return {"events": [asdict(e) for e in server.events.list(limit, session_id)],
            "transcripts_stored": server.settings.store_transcripts}


@router.get("/api/guardian/sessions")
def guardian_sessions(server: GuardianDep, limit: int = Query(50, ge=1, le=500)) -> dict[str, Any]:
    if not server.settings.store_transcripts:
        raise ApiError(403, "transcripts are not shown: the server was started without --store-transcripts",
                       code="transcripts_disabled")
    return {"sessions": [s.to_dict() for s in server.store.list_sessions(limit)]}


@router.get("/guardian", response_class=HTMLResponse, include_in_schema=False)
def guardian_page(request: Request, server: ServerDep, token: str | None = None) -> Response:
    configured = server.settings.guardian_token
    if not configured:
        return HTMLResponse(page("disabled"), status_code=404, headers=PAGE_HEADERS)
    if token is not None:
        return sign_in(configured, token)
    if not authorized(request, configured):
        return HTMLResponse(page("login"), status_code=401, headers={"WWW-Authenticate": "Bearer", **PAGE_HEADERS})
    settings = server.settings
    events = server.events.list(200)
    sessions = server.store.list_sessions(50) if settings.store_transcripts else []
    return HTMLResponse(page("events", events=events, sessions=sessions,
                             transcripts_stored=settings.store_transcripts), headers=PAGE_HEADERS)


@router.post("/guardian/login", include_in_schema=False)
async def guardian_login(request: Request, server: ServerDep) -> Response:
    configured = enabled_token(server)
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    return sign_in(configured, (form.get("token") or [""])[0])


@router.post("/guardian/logout", include_in_schema=False)
def guardian_logout() -> Response:
    response = RedirectResponse("/guardian", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def sign_in(configured: str, given: str) -> Response:
    if not token_matches(configured, given):
        return HTMLResponse(page("login", wrong=True), status_code=401,
                            headers={"WWW-Authenticate": "Bearer", **PAGE_HEADERS})
    response = RedirectResponse("/guardian", status_code=303)  # the token leaves the address bar
    response.set_cookie(COOKIE, cookie_value(configured), max_age=COOKIE_MAX_AGE_S, httponly=True,
                        samesite="strict", path="/")
    return response


def page(view: str, **context: Any) -> str:
    return templates().get_template("guardian.html").render(view=view, clock=_clock, **context)


def _clock(unix_time: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(unix_time))
