"""The node side of tasks: claim the next run (long-poll), report progress, logs and the (encrypted) result.

Two transports for the same two operations: HTTP (``GET /runs/next``, ``PATCH /runs/{id}``) and one WebSocket per
node (``/runs/channel``), which nodes use: a run update costs the hub about 2.5x the CPU over HTTP (framing, routing,
dependencies; see bench/roundtrip.py), and a task to n nodes needs 2n of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, WebSocket, WebSocketDisconnect
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError

from nordfed.hub.auth import Principal
from nordfed.hub.deps import CurrentNode, Hub, HubState, PathId, forbidden, not_found, principal_for_token
from nordfed.hub.dispatch import wait_for
from nordfed.hub.models import Run
from nordfed.hub.routers.ledger import ledger_op
from nordfed.hub.schemas import MAX_ID, RunAssignment, RunPatch, RunState, clipped, validation_errors

log = logging.getLogger("nordfed.hub")
router = APIRouter(prefix="/runs", tags=["runs"])

MAX_WAIT = 600.0  # seconds a claim may wait
# A revocation wakes the node's parked polls (HubState.forget_tokens), which re-check their token and answer 401.
# They also re-check this often (a token-cache hit: no database work), for a token revoked without being cached.
RECHECK = 5.0


async def claim_or_wait(
    hub: HubState,
    node_id: int,
    timeout: float,
    gone: Callable[[], Awaitable[bool]],
    authorized: Callable[[], Awaitable[object]],
) -> RunAssignment | None:
    """Claim this node's oldest pending run (it becomes active), waiting up to ``timeout`` seconds for one.
    None after the timeout, at shutdown, or when ``gone()`` says the node hung up (a run claimed for a closed
    connection would sit active until the node restarts). ``authorized()`` raises (401) once the caller's token is
    revoked or expired; it is awaited on every wake, so a poll never claims with a token revoked while it waited."""
    deadline = time.monotonic() + timeout
    dispatcher = hub.dispatcher
    dispatcher.polling[node_id] += 1
    try:
        with dispatcher.waiting(("node", node_id)) as current_event:
            woken = False
            while True:
                dispatcher.seen(node_id)
                event = current_event()
                if dispatcher.closing or (woken and await gone()):
                    return None
                if woken:  # the first round was authorized by the request itself
                    await authorized()
                run = await hub.claimer.claim(node_id)
                if run is not None:
                    return run
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                await wait_for(event, min(remaining, RECHECK))
                woken = True
    finally:
        dispatcher.polling[node_id] -= 1
        if dispatcher.polling[node_id] <= 0:
            del dispatcher.polling[node_id]
        dispatcher.seen(node_id)


def bearer_token(headers: Mapping[str, str]) -> str:
    """The token of an ``Authorization: Bearer …`` header ("" when there is none)."""
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


@router.get(
    "/next",
    response_model=RunAssignment,
    responses={204: {"description": "no run within timeout"}, 401: {"description": "token revoked while waiting"}},
)
async def next_run(
    request: Request, hub: Hub, node: CurrentNode, timeout: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 30.0
) -> RunAssignment | Response:
    """Long-poll: claim this node's oldest pending run (it becomes active), or 204 after ``timeout`` seconds;
    401 as soon as the token is revoked or expires while the poll waits (checked every few seconds)."""
    token = bearer_token(request.headers)
    run = await claim_or_wait(hub, node.id, timeout, request.is_disconnected, lambda: principal_for_token(hub, token))
    return run if run is not None else Response(status_code=204)


def _load_own_run(s, run_id: int, node_id: int) -> Run:
    run = s.get(Run, run_id)
    if run is None:
        raise not_found("run", run_id)
    if run.node_id != node_id:
        raise forbidden(f"run {run_id} belongs to another node")
    return run


@router.get("/{run_id}", response_model=RunState)
def get_run(run_id: PathId, hub: Hub, node: CurrentNode) -> RunState:
    with hub.tx() as s:
        run = _load_own_run(s, run_id, node.id)
        return RunState(id=run.id, task_id=run.task_id, status=run.status, progress=run.progress, attempts=run.attempts)


@router.patch("/{run_id}", response_model=RunState)
async def patch_run(run_id: PathId, body: RunPatch, hub: Hub, node: CurrentNode) -> RunState:
    """Progress, log lines, the encrypted result and the final status of an active run (batched: updates.py)."""
    out = await hub.updater.update(node.id, run_id, body)
    hub.dispatcher.seen(node.id)
    return out


# ------------------------------------------------------------------------------------------------ the channel
class ChannelError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


def _node_of(principal: Principal) -> Principal:
    if principal.kind != "node":
        raise HTTPException(403, "the run channel is for nodes (use a node token from POST /api/token/node)")
    return principal


@router.websocket("/channel")
async def channel(ws: WebSocket) -> None:
    """One WebSocket per node, ``Authorization: Bearer <node token>`` on the handshake. Text frames of JSON, each
    request answered in order (see API.md): ``{"op": "next", "timeout": s}`` → ``{"op": "run", "run": …}`` or
    ``{"op": "idle"}``; ``{"op": "update", "run_id": n, …RunPatch}`` → ``{"op": "updated", "state": …}``;
    a refused request → ``{"op": "error", "status": 4xx, "detail": …}``. The token is checked on every request."""
    hub: HubState = ws.app.state.hub
    token = bearer_token(ws.headers)
    try:
        node = _node_of(await principal_for_token(hub, token))
    except HTTPException as exc:
        await ws.close(code=1008, reason=str(exc.detail)[:120])  # before accept: the handshake gets 403
        return
    await ws.accept()
    inbox: asyncio.Queue[str | None] = asyncio.Queue()
    reader = asyncio.create_task(_read(ws, inbox))

    async def gone() -> bool:
        await asyncio.sleep(0)  # let the reader see a close that already arrived
        return reader.done()

    try:
        while (text := await inbox.get()) is not None:
            reply = await _answer(hub, token, node, text, gone)
            await ws.send_text(json.dumps(reply))
            if reply.get("status") == 401 or hub.dispatcher.closing:
                await ws.close(code=1008 if reply.get("status") == 401 else 1012)
                break
    except (WebSocketDisconnect, RuntimeError):  # the node went away while we answered
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await reader


async def _read(ws: WebSocket, inbox: asyncio.Queue[str | None]) -> None:
    """Move incoming frames to ``inbox``; None once the node disconnected."""
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None and message.get("bytes") is not None:
                text = message["bytes"].decode("utf-8", "replace")
            await inbox.put(text or "")
    finally:
        inbox.put_nowait(None)


def _parse(text: str) -> Any:
    """One message as JSON; 400 for whatever ``json`` refuses. Not only JSONDecodeError: an integer of over 4300
    digits raises ValueError, deep nesting RecursionError (a RuntimeError, which the channel loop would take for a
    closed connection and drop the node without a word)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChannelError(400, "message is not valid JSON") from exc
    except RecursionError as exc:
        raise ChannelError(400, "message is not valid JSON: nested too deeply") from exc
    except ValueError as exc:  # int() refuses the digits
        raise ChannelError(400, "message is not valid JSON: an integer has too many digits") from exc


async def _answer(hub: HubState, token: str, node: Principal, text: str, gone) -> dict[str, Any]:
    msg: Any = None
    try:
        msg = _parse(text)
        if not isinstance(msg, dict):
            raise ChannelError(400, "each message must be a JSON object with an 'op'")
        node = _node_of(await principal_for_token(hub, token))  # revoked or expired since the handshake
        op = msg.get("op")
        if op == "next":
            timeout = msg.get("timeout", 30.0)
            if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 <= timeout <= MAX_WAIT:
                raise ChannelError(422, f"timeout: must be a number of seconds from 0 to {MAX_WAIT:g}")
            run = await claim_or_wait(hub, node.id, float(timeout), gone, lambda: principal_for_token(hub, token))
            return _with_id(msg, {"op": "run", "run": run.model_dump()} if run is not None else {"op": "idle"})
        if op == "update":
            run_id = msg.get("run_id")
            if isinstance(run_id, bool) or not isinstance(run_id, int) or not 1 <= run_id <= MAX_ID:
                raise ChannelError(422, f"run_id: must be an integer from 1 to {MAX_ID}")
            patch = RunPatch.model_validate({k: v for k, v in msg.items() if k not in ("op", "run_id", "id")})
            state = await hub.updater.update(node.id, run_id, patch)
            hub.dispatcher.seen(node.id)
            return _with_id(msg, {"op": "updated", "state": state.model_dump()})
        if op in ("ledger", "ledger_head"):  # the hub copy of the node's ledger: routers/ledger.py
            return _with_id(msg, await ledger_op(hub, node.id, msg))
        raise ChannelError(400, f"unknown op {clipped(repr(op))}; expected 'next', 'update', 'ledger' or 'ledger_head'")
    except ValidationError as exc:
        return _with_id(msg, {"op": "error", "status": 422, "detail": validation_errors(exc.errors(), "message")[0]})
    except (ChannelError, HTTPException) as exc:
        status = exc.status_code if isinstance(exc, HTTPException) else exc.status
        return _with_id(msg, {"op": "error", "status": status, "detail": str(exc.detail)})
    except OperationalError:  # as the HTTP endpoints answer 503
        return _with_id(msg, {"op": "error", "status": 503, "detail": "hub database unavailable, try again"})
    except Exception:  # a hub bug: answer (as HTTP would, 500) and keep the node's channel open
        log.exception("run channel: unexpected error answering node %s", node.id)
        return _with_id(msg, {"op": "error", "status": 500, "detail": "internal error at the hub (logged there)"})


def _with_id(msg: Any, reply: dict[str, Any]) -> dict[str, Any]:
    """Echo the request's optional ``id`` so a node can match replies."""
    if isinstance(msg, dict) and isinstance(msg.get("id"), int | str):
        reply["id"] = msg["id"]
    return reply
