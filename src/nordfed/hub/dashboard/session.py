"""Dashboard sessions: the user token in a cookie, CSRF tokens for the login and logout forms, form parsing.

CSRF uses a double-submit cookie whose value is also HMAC-signed with a per-process key, so a cookie planted by
another site (or a sibling subdomain) without the key is refused too. A hub restart only invalidates open forms.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import parse_qs

from fastapi import HTTPException, Request, Response

from nordfed.hub.auth import Principal
from nordfed.hub.deps import HubState, principal_for_token

SESSION_COOKIE = "nordfed_session"
CSRF_COOKIE = "nordfed_csrf"
CSRF_FIELD = "csrf_token"
MAX_FORM_BYTES = 16 * 1024


class LoginRequired(Exception):
    """No usable session (missing, garbage, expired or revoked token): send the browser to the login form."""


def _key(request: Request) -> bytes:
    state = request.app.state
    key = getattr(state, "dashboard_csrf_key", None)
    if key is None:
        key = state.dashboard_csrf_key = secrets.token_bytes(32)
    return key


def _sign(request: Request, nonce: str) -> str:
    return hmac.new(_key(request), nonce.encode(), hashlib.sha256).hexdigest()[:32]


def _well_formed(request: Request, value: str | None) -> bool:
    if not value or len(value) > 100 or value.count(".") != 1:
        return False
    nonce, sig = value.split(".")
    return hmac.compare_digest(_sign(request, nonce), sig)


def csrf_token(request: Request) -> tuple[str, bool]:
    """The CSRF token for this browser's forms and whether it is new (then the cookie must be set)."""
    current = request.cookies.get(CSRF_COOKIE)
    if _well_formed(request, current):
        return current, False  # type: ignore[return-value]
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_sign(request, nonce)}", True


def csrf_ok(request: Request, form: dict[str, str]) -> bool:
    cookie, sent = request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)
    return bool(cookie and sent) and hmac.compare_digest(cookie, sent) and _well_formed(request, cookie)  # type: ignore[arg-type]


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_csrf_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, path="/dashboard", httponly=True, samesite="strict",
                        secure=_secure(request))


def set_session_cookie(response: Response, request: Request, token: str, max_age: int) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=_secure(request))


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_secure(request))


async def read_form(request: Request) -> dict[str, str]:
    """A small urlencoded form (first value per field); 415 for another type, 413 when over 16 KiB."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("", "application/x-www-form-urlencoded"):  # an empty form may come without a type
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=20, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, "malformed form") from exc
    return {name: values[0] for name, values in fields.items()}


async def current_user(request: Request, hub: HubState) -> Principal:
    """The user behind the session cookie; LoginRequired without a usable one, 403 for a node's token."""
    token = request.cookies.get(SESSION_COOKIE)
    try:
        principal = await principal_for_token(hub, token)
    except HTTPException as exc:
        raise LoginRequired from exc
    if principal.kind != "user":
        raise HTTPException(403, "nodes cannot use the dashboard; log in as a user")
    return principal
