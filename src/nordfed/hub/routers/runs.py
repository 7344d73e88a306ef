"""The node side of tasks: long-poll for the next run, report progress, logs and the (encrypted) result."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from sqlalchemy import select

from nordfed.hub.deps import CurrentNode, Hub, PathId, forbidden, not_found
from nordfed.hub.dispatch import wait_for
from nordfed.hub.lifecycle import append_log, lock_task, refresh_task
from nordfed.hub.models import Run, utcnow
from nordfed.hub.schemas import FINISHED, RunAssignment, RunPatch, RunState

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
def patch_run(run_id: PathId, body: RunPatch, hub: Hub, node: CurrentNode) -> RunState:
    with hub.tx() as s:
        task_id = _load_own_run(s, run_id, node.id).task_id
        # Task before run (the lock order of lifecycle.py); progress and log updates need no task lock.
        task = lock_task(s, task_id) if body.status is not None else None
        run = s.scalar(select(Run).where(Run.id == run_id).with_for_update().execution_options(populate_existing=True))
        if run.status != "active":
            raise HTTPException(409, f"run {run_id} is {run.status}; only an active run can be updated")
        if body.progress is not None:
            run.progress = body.progress
        if body.log:
            run.log = append_log(run.log, body.log)
        if body.result is not None:
            run.result = body.result
        if body.status is not None:
            run.status, run.finished_at = body.status, utcnow()
            if body.status == "completed":
                run.progress = 1.0
        s.flush()
        if body.status is not None and task is not None:
            refresh_task(s, task)
        out = RunState(id=run.id, task_id=run.task_id, status=run.status, progress=run.progress, attempts=run.attempts)
    hub.dispatcher.seen(node.id)
    if out.status in FINISHED:
        hub.dispatcher.notify("task", [task_id])
    return out
