"""Tasks: one algorithm call fanned out as runs to nodes of a collaboration. Inputs and results are opaque
ciphertext strings; the hub stores and forwards them and never decrypts."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from nordfed.hub.auth import Principal
from nordfed.hub.deps import (
    CollabInfo,
    CurrentPrincipal,
    CurrentUser,
    Hub,
    HubState,
    PathId,
    not_found,
    principal_for_token,
)
from nordfed.hub.dispatch import wait_for
from nordfed.hub.lifecycle import TASK_FINISHED, TaskMeta, cancel_task, lock_task, retention_note
from nordfed.hub.models import Node, Run, Task, as_utc, collaboration_organization, utcnow
from nordfed.hub.permissions import (
    require_results_reader,
    require_task_canceller,
    require_task_creator,
    require_task_reader,
)
from nordfed.hub.routers.runs import RECHECK, bearer_token
from nordfed.hub.routers.studies import check_task_targets
from nordfed.hub.schemas import MAX_ID, ResultOut, RunOut, TaskCreate, TaskOut, TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"])


# The hot statements are built once: constructing a SQLAlchemy statement costs more CPU than running it.
_RUN_VIEWS = (
    select(
        Run.task_id,
        Run.id,
        Run.node_id,
        Node.name,
        Run.status,
        Run.progress,
        Run.log,
        Run.attempts,
        Run.started_at,
        Run.finished_at,
        Run.result.is_not(None),
    )
    .join(Node, Node.id == Run.node_id)
    .where(Run.task_id.in_(bindparam("task_ids", expanding=True)))
    .order_by(Run.id)
)
_NODES = select(Node.id, Node.collaboration_id, Node.name, Node.organization_id, Node.disabled).where(
    Node.id.in_(bindparam("node_ids", expanding=True))
)
_NEW_TASK = insert(Task).returning(Task.id, Task.created_at)
_NEW_RUNS = insert(Run).returning(Run.id, Run.node_id, sort_by_parameter_order=True)
_TASK_STATUS = select(Task.status).where(Task.id == bindparam("task_id"))
# what the permission checks need of a task (the ORM row costs more to load than the query itself)
_TASK_ACCESS = select(Task.id, Task.collaboration_id, Task.owner_id, Task.status).where(Task.id == bindparam("task_id"))
_RESULTS = (
    select(Run.id, Run.node_id, Node.name, Run.status, Run.log, Run.result)
    .join(Node, Node.id == Run.node_id)
    .where(Run.task_id == bindparam("task_id"))
    .order_by(Run.id)
)


def run_views(s: Session, task_ids: list[int]) -> dict[int, list[RunOut]]:
    """The runs of some tasks with node names and has_result, in one query (results themselves are not read)."""
    rows = s.execute(_RUN_VIEWS, {"task_ids": list(task_ids)}) if task_ids else []
    out: dict[int, list[RunOut]] = {t: [] for t in task_ids}
    for task_id, run_id, node_id, name, status, progress, log, attempts, started, finished, has_result in rows:
        out[task_id].append(
            RunOut(
                id=run_id,
                node_id=node_id,
                node_name=name,
                status=status,
                progress=progress,
                log=log,
                attempts=attempts,
                started_at=as_utc(started),
                finished_at=as_utc(finished),
                has_result=bool(has_result),
            )
        )
    return out


def task_out(s: Session, task: Task, runs: list[RunOut] | None = None) -> TaskOut:
    runs = runs if runs is not None else run_views(s, [task.id])[task.id]
    return TaskOut(
        id=task.id,
        collaboration_id=task.collaboration_id,
        algorithm=task.algorithm,
        version=task.version,
        code_hash=task.code_hash,
        description=task.description,
        owner_id=task.owner_id,
        status=task.status,
        created_at=as_utc(task.created_at),
        runs=runs,
        study_id=task.study_id,
    )


def load_task(hub: HubState, s: Session, task_id: int, caller: Principal) -> tuple[Task, CollabInfo]:
    task = s.get(Task, task_id)
    if task is None:
        raise not_found("task", task_id)
    collab = hub.collaboration(s, task.collaboration_id)
    require_task_reader(caller, task, collab)
    return task, collab


@router.post("", response_model=TaskOut, status_code=201)
async def create_task(body: TaskCreate, hub: Hub, caller: CurrentUser) -> TaskOut:
    return await hub.db.run(_create_task, body, hub, caller)


def _create_task(body: TaskCreate, hub: HubState, caller: Principal) -> TaskOut:
    node_ids = [r.node_id for r in body.runs]
    if len(set(node_ids)) != len(node_ids):
        raise HTTPException(400, "each node may appear only once in runs")
    with hub.write() as con:
        collab = hub.collaboration(con, body.collaboration_id)
        require_task_creator(caller, collab)
        listed = con.execute(_NODES, {"node_ids": node_ids})
        found = {i: (c, name, org, disabled) for i, c, name, org, disabled in listed}
        missing = sorted(set(node_ids) - set(found))
        if missing:
            raise HTTPException(404, f"nodes {missing} not found")
        foreign = sorted(n for n, (c, *_) in found.items() if c != collab.id)
        if foreign:
            raise HTTPException(400, f"nodes {foreign} are not in collaboration {collab.id}")
        nodes = {n: (c, name) for n, (c, name, *_) in found.items()}
        # enabled nodes, of the study's organizations
        check_task_targets(con, collab.id, {n: (org, off) for n, (_, _, org, off) in found.items()}, body.study_id)
        meta = TaskMeta(collab.id, body.algorithm, body.version, body.code_hash, caller.id)
        values = {
            **asdict(meta),
            "description": body.description,
            "study_id": body.study_id,
            "status": "pending",
            "cancelled": False,
        }
        task_id, created_at = con.execute(_NEW_TASK, {**values, "created_at": utcnow()}).one()
        rows = con.execute(
            _NEW_RUNS,
            [
                {
                    "task_id": task_id,
                    "node_id": r.node_id,
                    "input": r.input,
                    "status": "pending",
                    "progress": 0.0,
                    "log": "",
                    "attempts": 0,
                }
                for r in body.runs
            ],
        ).all()
        runs = [
            RunOut(
                id=run_id,
                node_id=node_id,
                node_name=nodes[node_id][1],
                status="pending",
                progress=0.0,
                log="",
                attempts=0,
                started_at=None,
                finished_at=None,
                has_result=False,
            )
            for run_id, node_id in rows
        ]
        out = TaskOut(
            id=task_id,
            **asdict(meta),
            description=body.description,
            status="pending",
            created_at=as_utc(created_at),
            runs=runs,
            study_id=body.study_id,
        )
    hub.claimer.remember(out.id, meta)
    hub.dispatcher.notify("node", node_ids)
    return out


@router.get("", response_model=list[TaskOut])
def list_tasks(
    hub: Hub,
    caller: CurrentPrincipal,
    collaboration_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    status: TaskStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    study_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> list[TaskOut]:
    with hub.snapshot() as s:
        query = select(Task).order_by(Task.id.desc()).limit(limit)
        if collaboration_id is not None:
            query = query.where(Task.collaboration_id == collaboration_id)
        if study_id is not None:
            query = query.where(Task.study_id == study_id)
        if status is not None:
            query = query.where(Task.status == status)
        if caller.kind == "node":
            query = query.where(Task.collaboration_id == caller.collaboration_id)
        elif not caller.has("collaboration_admin"):
            member_of = select(collaboration_organization.c.collaboration_id).where(
                collaboration_organization.c.organization_id == caller.organization_id
            )
            query = query.where(Task.collaboration_id.in_(member_of) | (Task.owner_id == caller.id))
        tasks = list(s.scalars(query))
        runs = run_views(s, [t.id for t in tasks])
        return [task_out(s, t, runs[t.id]) for t in tasks]


@router.get("/{task_id}", response_model=TaskOut)
def get_task(task_id: PathId, hub: Hub, caller: CurrentPrincipal) -> TaskOut:
    with hub.snapshot() as s:
        task, _ = load_task(hub, s, task_id, caller)
        return task_out(s, task)


@router.post("/{task_id}/cancel", response_model=TaskOut)
def cancel(task_id: PathId, hub: Hub, caller: CurrentUser) -> TaskOut:
    with hub.tx() as s:
        task, collab = load_task(hub, s, task_id, caller)
        require_task_canceller(caller, task, collab)
        task = lock_task(s, task_id)
        if task.status in ("completed", "failed", "cancelled"):
            raise HTTPException(409, f"task {task_id} is already {task.status}")
        cancel_task(s, task)
        s.flush()
        out = task_out(s, task)
    hub.dispatcher.notify("task", [task_id])
    return out


def _finished_task(hub: HubState, task_id: int, caller) -> tuple[TaskOut, bool]:
    with hub.snapshot() as s:
        task, _ = load_task(hub, s, task_id, caller)
        out = task_out(s, task)
    return out, out.status in TASK_FINISHED


def _if_finished(hub: HubState, task_id: int, caller, final: bool) -> TaskOut | None:
    """The task once finished (or when ``final``), else None after a one-column read: the stored status is kept
    current with the runs in the same transaction as every run change."""
    if not final:
        with hub.db.reader.connect() as con:
            status = con.scalar(_TASK_STATUS, {"task_id": task_id})
        if status is not None and status not in TASK_FINISHED:  # a vanished task: the full load answers 404
            return None
    return _finished_task(hub, task_id, caller)[0]


async def _still_authorized(hub: HubState, token: str) -> None:
    """401 when the caller's token was revoked (or expired) while its long poll waited: a researcher logged out
    everywhere or disabled must not be handed her task, let alone its sealed results, when it finishes later."""
    await principal_for_token(hub, token)


@router.get("/{task_id}/wait", response_model=TaskOut)
async def wait_task(
    request: Request,
    task_id: PathId,
    hub: Hub,
    caller: CurrentPrincipal,
    timeout: Annotated[float, Query(ge=0, le=600)] = 30.0,
) -> TaskOut:
    """Long-poll until every run of the task is finished or ``timeout`` seconds passed; returns the task.
    The token is checked again after every wake (at least every RECHECK seconds): 401 once it is revoked."""
    token = bearer_token(request.headers)
    deadline = time.monotonic() + timeout
    with hub.dispatcher.waiting(("task", task_id)) as current_event:
        event = current_event()
        out, done = await hub.db.run(_finished_task, hub, task_id, caller)  # also checks read permission
        # Each wake (a run of this task finished) costs one status read; the whole task, with every run, is
        # loaded again only for the answer: re-serialising it per finished run would be quadratic in the nodes.
        waited = False
        while not done:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or hub.dispatcher.closing:
                if not waited:
                    return out
                return await hub.db.run(_if_finished, hub, task_id, caller, True)
            await wait_for(event, min(remaining, RECHECK))
            await _still_authorized(hub, token)
            waited = True
            event = current_event()
            found = await hub.db.run(_if_finished, hub, task_id, caller, False)
            if found is not None:
                return found
        return out


def _results(hub: HubState, task_id: int, caller: Principal, finished_only: bool) -> list[ResultOut] | None:
    """Every run's status, log and sealed result, after checking the caller may read them; None when
    ``finished_only`` and the task is still running (one short read then, as on every wake-up of a long poll)."""
    with hub.read() as con:
        task = con.execute(_TASK_ACCESS, {"task_id": task_id}).one_or_none()
        if task is None:
            raise not_found("task", task_id)
        require_task_reader(caller, task, hub.collaboration(con, task.collaboration_id))
        require_results_reader(caller, task)
        if finished_only and task.status not in TASK_FINISHED:
            return None
        rows = [
            ResultOut(run_id=run_id, node_id=node_id, node_name=name, status=status, log=log, result=result)
            for run_id, node_id, name, status, log, result in con.execute(_RESULTS, {"task_id": task_id})
        ]
    _refuse_removed(task_id, rows)
    return rows


def _refuse_removed(task_id: int, rows: list[ResultOut]) -> None:
    """410 once the hub's result retention removed the results: answering the runs without them would read as
    "the node sent nothing" (which a client must treat as an error of that node)."""
    for row in rows:
        note = retention_note(row.log) if row.result is None else None
        if note is not None:
            raise HTTPException(
                410, f"task {task_id}: {note}; run statuses and logs remain at GET /api/tasks/{task_id}"
            )


@router.get("/{task_id}/results", response_model=list[ResultOut])
async def task_results(
    request: Request,
    task_id: PathId,
    hub: Hub,
    caller: CurrentUser,
    wait: Annotated[float, Query(ge=0, le=600)] = 0.0,
) -> list[ResultOut]:
    """Every run's status, log and sealed result. With ``wait``, long-poll first (like ``/wait``) until every run
    finished or ``wait`` seconds passed: one request instead of ``/wait`` then ``/results`` for a researcher.
    As for ``/wait``, a token revoked meanwhile answers 401, never the results."""
    token = bearer_token(request.headers)
    deadline = time.monotonic() + wait
    with hub.dispatcher.waiting(("task", task_id)) as current_event:
        event = current_event()
        rows = await hub.db.run(_results, hub, task_id, caller, wait > 0)
        while rows is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or hub.dispatcher.closing:
                return await hub.db.run(_results, hub, task_id, caller, False)  # as they are now
            await wait_for(event, min(remaining, RECHECK))
            await _still_authorized(hub, token)
            event = current_event()
            rows = await hub.db.run(_results, hub, task_id, caller, True)
        return rows
