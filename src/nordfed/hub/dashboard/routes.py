"""Dashboard routes: GET / → /dashboard, login/logout forms, and the overview, collaboration, task and node pages.

Every page answers HTML: a missing or unusable session redirects to the login form, refused or unknown ids give a
403/404 page (never a 5xx), and pages are sent with a strict Content-Security-Policy (no scripts at all).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

import nordfed
from nordfed import __version__
from nordfed.hub import auth
from nordfed.hub.auth import Principal, token_digest
from nordfed.hub.dashboard import session, views
from nordfed.hub.deps import HubState
from nordfed.hub.routers.auth import revoke_token, user_token
from nordfed.hub.schemas import TokenRequest

router = APIRouter(include_in_schema=False)

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
TITLES = {400: "Bad request", 403: "Not allowed", 404: "Not found", 413: "Too large", 415: "Unsupported form"}


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value is not None else "—"


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{max(seconds, 0)} s ago"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return "—"
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    text = f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"
    return text if end is not None else f"{text} so far"


def _tail(log: str, lines: int = 3) -> list[str]:
    return [line[:300] for line in log.splitlines()[-lines:]]


# The reports' style.css.html is shared by path: importing nordfed.reports would pull matplotlib into the hub.
_REPORT_TEMPLATES = Path(nordfed.__file__).parent / "reports" / "templates"
_ENV = jinja2.Environment(
    loader=jinja2.ChoiceLoader([jinja2.PackageLoader("nordfed.hub.dashboard", "templates"),
                                jinja2.FileSystemLoader(_REPORT_TEMPLATES)]),
    autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_ENV.filters.update(when=_when, ago=_ago, tail=_tail)
_ENV.globals.update(duration=_duration, version=__version__)


def _render(request: Request, template: str, status: int = 200, user: Principal | None = None,
            **context: Any) -> HTMLResponse:
    """A page with the security headers and this browser's CSRF token (cookie set when new)."""
    csrf, new = session.csrf_token(request)
    context.setdefault("refresh", False)
    html = _ENV.get_template(template).render(user=user, csrf=csrf, csrf_field=session.CSRF_FIELD, **context)
    response = HTMLResponse(html, status_code=status, headers=HEADERS)
    if new:
        session.set_csrf_cookie(response, request, csrf)
    return response


def _error(request: Request, exc: HTTPException, user: Principal | None = None) -> HTMLResponse:
    status = exc.status_code if 400 <= exc.status_code < 500 else 400
    return _render(request, "error.html", status, user, title=TITLES.get(status, "Refused"), detail=str(exc.detail))


def _to_login(request: Request) -> RedirectResponse:
    response = RedirectResponse("/dashboard/login", status_code=303, headers=HEADERS)
    if session.SESSION_COOKIE in request.cookies:
        session.clear_session_cookie(response, request)
    return response


async def _page(request: Request, template: str, build: Callable[..., dict[str, Any]], ident: str | None = None,
                kind: str = "", refresh: bool = False) -> Response:
    """Render ``template`` with ``build(hub, user[, id])``; ``ident`` is the raw path id of a ``kind`` page."""
    hub: HubState = request.app.state.hub
    args: tuple[int, ...] = ()
    if ident is not None:
        try:
            args = (views.parse_id(ident, kind),)
        except HTTPException as exc:
            return _error(request, exc)
    try:
        user = await session.current_user(request, hub)
    except session.LoginRequired:
        return _to_login(request)
    except HTTPException as exc:
        return _error(request, exc)
    try:
        context = await hub.db.run(build, hub, user, *args)
    except HTTPException as exc:
        if exc.status_code == 401:
            return _to_login(request)
        return _error(request, exc, user)
    return _render(request, template, user=user, refresh=refresh, **context)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=307)


@router.get("/dashboard")
async def overview(request: Request) -> Response:
    return await _page(request, "overview.html", views.overview, refresh=True)


@router.get("/dashboard/collaborations/{ident}")
async def collaboration(request: Request, ident: str) -> Response:
    return await _page(request, "collaboration.html", views.collaboration, ident, "collaboration")


@router.get("/dashboard/tasks/{ident}")
async def task(request: Request, ident: str) -> Response:
    return await _page(request, "task.html", views.task, ident, "task", refresh=True)


@router.get("/dashboard/nodes/{ident}")
async def node(request: Request, ident: str) -> Response:
    return await _page(request, "node.html", views.node, ident, "node")


@router.get("/dashboard/login")
async def login_form(request: Request) -> Response:
    try:
        await session.current_user(request, request.app.state.hub)
    except (session.LoginRequired, HTTPException):
        return _render(request, "login.html", message=None, username="")
    return RedirectResponse("/dashboard", status_code=303, headers=HEADERS)


def _check_password(hub: HubState, username: str, password: str) -> str:
    """A user token, exactly as POST /api/token issues it (same argon2 work, also for malformed input)."""
    try:
        body = TokenRequest(username=username, password=password)
    except ValidationError as exc:
        auth.verify_secret(auth.DUMMY_HASH, password[:1024])  # same cost as a wrong password
        raise HTTPException(401, "wrong username or password") from exc
    return user_token(body, hub).access_token


@router.post("/dashboard/login")
async def login(request: Request) -> Response:
    hub: HubState = request.app.state.hub
    try:
        form = await session.read_form(request)
    except HTTPException as exc:
        return _error(request, exc)
    username = form.get("username", "")[:200]
    if not session.csrf_ok(request, form):
        message = "The form expired or did not come from this page; please log in again."
        return _render(request, "login.html", 403, message=message, username=username)
    try:
        token = await run_in_threadpool(_check_password, hub, username, form.get("password", ""))
    except HTTPException as exc:
        return _render(request, "login.html", exc.status_code, message=str(exc.detail), username=username)
    response = RedirectResponse("/dashboard", status_code=303, headers=HEADERS)
    session.set_session_cookie(response, request, token, int(hub.user_token_ttl.total_seconds()))
    csrf, _ = session.csrf_token(request)
    session.set_csrf_cookie(response, request, csrf)
    return response


@router.post("/dashboard/logout")
async def logout(request: Request) -> Response:
    """Revoke the session's token (as POST /api/token/revoke) and clear the cookie."""
    hub: HubState = request.app.state.hub
    try:
        form = await session.read_form(request)
    except HTTPException as exc:
        return _error(request, exc)
    if not session.csrf_ok(request, form):
        return _error(request, HTTPException(403, "logout refused: the form did not come from this page"))
    token = request.cookies.get(session.SESSION_COOKIE)
    if token:
        await hub.db.run(revoke_token, hub, token_digest(token))
    response = RedirectResponse("/dashboard/login", status_code=303, headers=HEADERS)
    session.clear_session_cookie(response, request)
    return response
