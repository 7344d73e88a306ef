"""The hub application: ``create_app(db_url)`` → FastAPI. Run it with one uvicorn worker (long polls are
coordinated in-process with asyncio)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError, OperationalError

from nordfed import __version__
from nordfed.hub.admin import create_root
from nordfed.hub.dashboard import router as dashboard_router
from nordfed.hub.db import HubDB, open_hub_db, release_free_pages
from nordfed.hub.deps import HubState
from nordfed.hub.lifecycle import expire_results
from nordfed.hub.routers import ROUTERS
from nordfed.hub.schemas import ErrorOut, ValidationErrorOut, validation_errors

log = logging.getLogger("nordfed.hub")

MAX_BODY = 256 * 1024 * 1024  # bytes per request
RETENTION_EVERY = 3600.0  # seconds between result retention passes (retention is counted in days)
# What any endpoint may answer besides its success, as documented in /openapi.json. Without it FastAPI documents
# its own 422 body ({"detail": [...]}), which is not what _validation_error sends, and no other error at all.
ERROR_RESPONSES: dict[int | str, dict] = {
    "4XX": {"model": ErrorOut, "description": "Refused: `detail` says why (see API.md for each status)"},
    422: {"model": ValidationErrorOut, "description": "Validation error"},
    503: {"model": ErrorOut, "description": "Hub database unavailable, try again"},
}


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Pure ASGI middleware: refuse bodies over ``max_bytes`` (declared or streamed) with 413."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        detail = f"request body larger than {self.max_bytes} bytes"
        too_large = JSONResponse(status_code=413, content={"detail": detail})
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                return await too_large(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except BodyTooLarge:
            await too_large(scope, receive, send)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # One readable sentence; offending values are not echoed back (they may be huge or sensitive).
    detail, errors = validation_errors(exc.errors(), "request")
    return JSONResponse(status_code=422, content={"detail": detail, "errors": errors})


async def _integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
    return JSONResponse(status_code=409, content={"detail": "conflicts with existing data"})


async def _database_down(_: Request, exc: OperationalError) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": "hub database unavailable, try again"})


async def _retention_pass(db: HubDB, retention: timedelta) -> None:
    # Logged, never raised: a failed pass (database briefly down) must not stop the hub or the next pass.
    try:
        cleared = await db.run(expire_results, db.engine, retention)
    except Exception:
        log.exception("result retention: pass failed; next try in %g s", RETENTION_EVERY)
        return
    if cleared:
        log.info("result retention: removed the results of %d runs of tasks finished over %s ago", cleared, retention)
        try:
            await db.run(release_free_pages, db.engine)
        except Exception:
            log.exception("result retention: giving the freed space back failed")


async def _retention_job(db: HubDB, retention: timedelta) -> None:
    while True:
        await asyncio.sleep(RETENTION_EVERY)
        await _retention_pass(db, retention)


def create_app(
    db_url: str = "sqlite:///hub.sqlite",
    root_password: str | None = None,
    root_username: str = "root",
    user_token_ttl: timedelta = timedelta(hours=12),
    node_token_ttl: timedelta = timedelta(hours=24),
    result_retention: timedelta | None = None,
) -> FastAPI:
    """Build the hub. With ``root_password`` a root user is created on first start (left as is afterwards).
    With ``result_retention`` the sealed results of tasks finished longer ago are removed at start and hourly
    (:func:`nordfed.hub.lifecycle.expire_results`); None keeps them forever."""
    if result_retention is not None and result_retention < timedelta(0):
        raise ValueError(f"result_retention must not be negative, got {result_retention}")
    db = open_hub_db(db_url)
    if root_password is not None:
        create_root(db, root_username, root_password, exist_ok=True)
    state = HubState(db=db, user_token_ttl=user_token_ttl, node_token_ttl=node_token_ttl)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state.dispatcher.bind(asyncio.get_running_loop())
        job = None
        if result_retention is not None:
            await _retention_pass(db, result_retention)  # before serving: a restart applies a new setting at once
            job = asyncio.create_task(_retention_job(db, result_retention))
        yield
        if job is not None:
            job.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await job
        db.engine.dispose()

    app = FastAPI(
        title="nordfed hub",
        version=__version__,
        lifespan=lifespan,
        description="Coordination server of the nordfed federated network. See API.md.",
    )
    app.state.hub = state

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OperationalError, _database_down)
    for router in ROUTERS:
        app.include_router(router, prefix="/api", responses=ERROR_RESPONSES)
    app.include_router(dashboard_router)  # HTML pages at / and /dashboard, outside the OpenAPI schema
    return app
