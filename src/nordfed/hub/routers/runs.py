"""The node side of tasks: long-poll for the next run, report progress, logs and the (encrypted) result."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from nordfed.hub.deps import CurrentNode, Hub, PathId, forbidden, not_found
from nordfed.hub.dispatch import wait_for
from nordfed.hub.models import Run
from nordfed.hub.schemas import RunAssignment, RunPatch, RunState

router = APIRouter(prefix="/runs", tags=["runs"])


@router.get("/next", response_model=RunAssignment, responses={204: {"description": "no run within timeout"}})
async def next_run(
    request: Request, hub: Hub, node: CurrentNode, timeout: Annotated[float, Query(ge=0, le=600)] = 30.0
) -> RunAssignment | Response:
    """Long-poll: claim this node's oldest pending run (it becomes active), or 204 after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    dispatcher = hub.dispatcher
    dispatcher.polling[node.id] += 1
    try:
        with dispatcher.waiting(("node", node.id)) as current_event:
            woken = False
            while True:
                dispatcher.seen(node.id)
                event = current_event()
                # A poll whose node hung up must not claim: the run would sit active until the node restarts.
                if dispatcher.closing or (woken and await request.is_disconnected()):
                    return Response(status_code=204)
                run = await hub.claimer.claim(node.id)
                if run is not None:
                    return run
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return Response(status_code=204)
                await wait_for(event, remaining)
                woken = True
    finally:
        dispatcher.polling[node.id] -= 1
        if dispatcher.polling[node.id] <= 0:
            del dispatcher.polling[node.id]
        dispatcher.seen(node.id)


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
