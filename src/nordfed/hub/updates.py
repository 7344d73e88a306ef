"""Batched run updates (``PATCH /api/runs/{id}``): progress, log lines, the encrypted result and the final status.

Every node of a fanned-out task reports back at about the same time. One by one, each report would lock the task
row and recount all of its runs: serialised, and quadratic in the number of nodes. A batch (see batch.py) instead
locks each touched task once, updates all its runs, recounts once, in one transaction. Lock order is that of
lifecycle.py: task rows first (sorted), then run rows (sorted).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from functools import lru_cache

from fastapi import HTTPException
from sqlalchemy import Connection, Update, bindparam, select, update

from nordfed.hub.batch import KeyedBatcher
from nordfed.hub.db import HubDB
from nordfed.hub.dispatch import Dispatcher
from nordfed.hub.lifecycle import append_log, next_task_status
from nordfed.hub.models import Run, Task, utcnow
from nordfed.hub.schemas import FINISHED, RunPatch, RunState

Outcome = RunState | HTTPException

# Built once: constructing a SQLAlchemy statement costs more CPU than running it.
_OWNERS = select(Run.id, Run.task_id, Run.node_id).where(Run.id.in_(bindparam("run_ids", expanding=True)))
_LOCK_TASKS = (
    select(Task.id, Task.status, Task.cancelled)
    .where(Task.id.in_(bindparam("task_ids", expanding=True)))
    .order_by(Task.id)
    .with_for_update()
)
_LOCK_RUNS = (
    select(Run.id, Run.task_id, Run.status, Run.progress, Run.attempts, Run.log)
    .where(Run.id.in_(bindparam("run_ids", expanding=True)))
    .order_by(Run.id)
    .with_for_update()
)
_RUNS_AND_TASKS = (
    select(Run.id, Run.task_id, Run.node_id, Run.status, Run.progress, Run.attempts, Run.log,
           Task.status.label("task_status"), Task.cancelled)
    .join(Task, Task.id == Run.task_id)
    .where(Run.id.in_(bindparam("run_ids", expanding=True)))
    .order_by(Run.id)
)
# A task's status depends on which run statuses occur, not how often.
_RUN_STATUSES = select(Run.task_id, Run.status).where(Run.task_id.in_(bindparam("task_ids", expanding=True))).distinct()
_SET_TASK_STATUS = update(Task).where(Task.id == bindparam("b_id")).values(status=bindparam("b_status"))


@lru_cache(maxsize=64)
def _set_run(columns: tuple[str, ...]) -> Update:
    """UPDATE of the given run columns, by run id (one per column set a patch may touch)."""
    return update(Run).where(Run.id == bindparam("b_id")).values({c: bindparam(f"b_{c}") for c in columns})


class RunUpdater:
    def __init__(self, db: HubDB, dispatcher: Dispatcher):
        self.db, self.dispatcher = db, dispatcher
        self._batcher: KeyedBatcher[int, tuple[int, RunPatch], RunState] = KeyedBatcher(
            self._apply, self._done, run=db.run
        )

    async def update(self, node_id: int, run_id: int, patch: RunPatch) -> RunState:
        """Apply ``patch`` to ``node_id``'s run ``run_id``; 404/403/409 as HTTPException (one update per run per
        batch, so two updates of one run are applied in the order they arrived)."""
        out = await self._batcher.submit(run_id, (node_id, patch))
        assert out is not None
        return out

    def _done(self, _: Mapping[int, tuple[int, RunPatch]], results: Mapping[int, Outcome]) -> None:
        finished = {r.task_id for r in results.values() if isinstance(r, RunState) and r.status in FINISHED}
        if finished:
            self.dispatcher.notify("task", sorted(finished))

    def _apply(self, batch: dict[int, tuple[int, RunPatch]]) -> dict[int, Outcome]:
        out: dict[int, Outcome] = {}
        with self.db.engine.begin() as con:
            read = _read_sqlite if self.db.dialect == "sqlite" else _read_locking
            todo, tasks, rows = read(con, batch, out)
            changes: dict[tuple[str, ...], list[dict]] = defaultdict(list)
            now = utcnow()
            for run_id, task_id, status, progress, attempts, log in rows:
                patch = todo[run_id]
                if status != "active":
                    out[run_id] = HTTPException(409, f"run {run_id} is {status}; only an active run can be updated")
                    continue
                values: dict = {}
                if patch.progress is not None:
                    values["progress"] = progress = patch.progress
                if patch.log:
                    values["log"] = append_log(log, patch.log)
                if patch.result is not None:
                    values["result"] = patch.result
                if patch.status is not None:
                    values["status"] = status = patch.status
                    values["finished_at"] = now
                    if status == "completed":
                        values["progress"] = progress = 1.0
                if values:
                    changes[tuple(sorted(values))].append({"b_id": run_id, **{f"b_{k}": v for k, v in values.items()}})
                out[run_id] = RunState(id=run_id, task_id=task_id, status=status, progress=progress, attempts=attempts)
            for columns, params in changes.items():
                con.execute(_set_run(columns), params)
            _refresh_tasks(con, tasks)
        for run_id in todo.keys() - out.keys():  # vanished between the two reads
            out[run_id] = HTTPException(404, f"run {run_id} not found")
        return out


Read = tuple[dict[int, RunPatch], dict[int, tuple[str, bool]], list[tuple]]


def _owned(batch: dict[int, tuple[int, RunPatch]], owners: Mapping[int, tuple[int, int]],
           out: dict[int, Outcome]) -> dict[int, RunPatch]:
    """The patches of runs that exist and belong to the node sending them (404/403 into ``out`` otherwise)."""
    todo: dict[int, RunPatch] = {}
    for run_id, (node_id, patch) in batch.items():
        if run_id not in owners:
            out[run_id] = HTTPException(404, f"run {run_id} not found")
        elif owners[run_id][1] != node_id:
            out[run_id] = HTTPException(403, f"run {run_id} belongs to another node")
        else:
            todo[run_id] = patch
    return todo


def _read_locking(con: Connection, batch: dict[int, tuple[int, RunPatch]], out: dict[int, Outcome]) -> Read:
    """Owners, then the task rows (locked), then the run rows (locked): the lock order of lifecycle.py."""
    found = con.execute(_OWNERS, {"run_ids": sorted(batch)})
    owners = {run_id: (task_id, node_id) for run_id, task_id, node_id in found}
    todo = _owned(batch, owners, out)
    if not todo:
        return todo, {}, []
    # Only a status change needs the task lock (it may complete the task); progress and logs do not.
    tasks = _lock_tasks(con, sorted({owners[r][0] for r, p in todo.items() if p.status is not None}))
    return todo, tasks, list(con.execute(_LOCK_RUNS, {"run_ids": sorted(todo)}))


def _read_sqlite(con: Connection, batch: dict[int, tuple[int, RunPatch]], out: dict[int, Outcome]) -> Read:
    """SQLite's write transaction (BEGIN IMMEDIATE) already excludes every other writer: one read, no row locks."""
    found = list(con.execute(_RUNS_AND_TASKS, {"run_ids": sorted(batch)}))
    todo = _owned(batch, {r.id: (r.task_id, r.node_id) for r in found}, out)
    tasks = {r.task_id: (r.task_status, bool(r.cancelled)) for r in found
             if r.id in todo and todo[r.id].status is not None}
    rows = [(r.id, r.task_id, r.status, r.progress, r.attempts, r.log) for r in found if r.id in todo]
    return todo, tasks, rows


def _lock_tasks(con: Connection, task_ids: list[int]) -> dict[int, tuple[str, bool]]:
    """Lock tasks (in id order); task id → (status, cancelled)."""
    if not task_ids:
        return {}
    rows = con.execute(_LOCK_TASKS, {"task_ids": task_ids})
    return {task_id: (status, bool(cancelled)) for task_id, status, cancelled in rows}


def _refresh_tasks(con: Connection, tasks: dict[int, tuple[str, bool]]) -> None:
    """Recompute the status of (locked) tasks from their runs."""
    if not tasks:
        return
    statuses: dict[int, list[str]] = defaultdict(list)
    for task_id, status in con.execute(_RUN_STATUSES, {"task_ids": sorted(tasks)}):
        statuses[task_id].append(status)
    params = []
    for task_id, (current, cancelled) in tasks.items():
        new = next_task_status(current, statuses[task_id], cancelled)
        if new != current:
            params.append({"b_id": task_id, "b_status": new})
    if params:
        con.execute(_SET_TASK_STATUS, params)
