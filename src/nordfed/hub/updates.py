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
            found = con.execute(_OWNERS, {"run_ids": sorted(batch)})
            owners = {run_id: (task_id, node_id) for run_id, task_id, node_id in found}
            todo: dict[int, RunPatch] = {}
            for run_id, (node_id, patch) in batch.items():
                if run_id not in owners:
                    out[run_id] = HTTPException(404, f"run {run_id} not found")
                elif owners[run_id][1] != node_id:
                    out[run_id] = HTTPException(403, f"run {run_id} belongs to another node")
                else:
                    todo[run_id] = patch
            if not todo:
                return out
            # Only a status change needs the task lock (it may complete the task); progress and logs do not.
            task_ids = sorted({owners[r][0] for r, p in todo.items() if p.status is not None})
            tasks = _lock_tasks(con, task_ids)
            rows = con.execute(_LOCK_RUNS, {"run_ids": sorted(todo)})
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
