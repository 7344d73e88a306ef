"""Run and task state changes. Lock order is always task row(s) first, then run rows, so concurrent claims,
patches, cancels and crash recoveries never deadlock on PostgreSQL (SQLite serialises writers anyway)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, func, select, update
from sqlalchemy.orm import Session

from nordfed.hub.models import Run, Task, utcnow
from nordfed.hub.schemas import FINISHED, MAX_LOG

MAX_ATTEMPTS = 3


def task_status(run_statuses: list[str], cancelled: bool = False) -> str:
    """pending (nothing started) → active → completed (all completed) | failed (any failed/refused) | cancelled."""
    if cancelled:
        return "cancelled"
    if run_statuses and all(s in FINISHED for s in run_statuses):
        if all(s == "completed" for s in run_statuses):
            return "completed"
        return "cancelled" if all(s == "cancelled" for s in run_statuses) else "failed"
    return "pending" if all(s == "pending" for s in run_statuses) else "active"


def append_log(log: str, more: str) -> str:
    combined = f"{log}{more}" if not log or log.endswith("\n") else f"{log}\n{more}"
    return combined[-MAX_LOG:]


def lock_task(s: Session, task_id: int) -> Task | None:
    return s.scalar(select(Task).where(Task.id == task_id).with_for_update().execution_options(populate_existing=True))


def refresh_task(s: Session, task: Task) -> str:
    """Recompute a (locked) task's status from its runs."""
    statuses = list(s.scalars(select(Run.status).where(Run.task_id == task.id)))
    status = task_status(statuses, task.cancelled)
    # Once started a task stays active: runs requeued after a crash do not make it "pending" again.
    task.status = "active" if status == "pending" and task.status == "active" else status
    return task.status


@dataclass(frozen=True)
class TaskMeta:
    """The immutable part of a task a node needs with each run (cached by the hub)."""

    collaboration_id: int
    algorithm: str
    version: str
    code_hash: str
    owner_id: int


def task_meta(con: Connection, task_ids: Iterable[int]) -> dict[int, TaskMeta]:
    cols = (Task.id, Task.collaboration_id, Task.algorithm, Task.version, Task.code_hash, Task.owner_id)
    return {row[0]: TaskMeta(*row[1:]) for row in con.execute(select(*cols).where(Task.id.in_(list(task_ids))))}


def claim_runs(con: Connection, node_ids: list[int]) -> dict[int, tuple[int, int, str]]:
    """Atomically take the oldest pending run of each node (pending → active) in one statement.

    Returns node id → (run id, task id, input) for the nodes that had one. Claims are issued by one in-process
    batcher at a time, and ``status = 'pending'`` is re-checked by the UPDATE, so a run is never handed out twice.
    """
    oldest = (
        select(func.min(Run.id))
        .where(Run.node_id.in_(node_ids), Run.status == "pending")
        .group_by(Run.node_id)
        .scalar_subquery()
    )
    rows = con.execute(
        update(Run)
        .where(Run.id.in_(oldest), Run.status == "pending")
        .values(status="active", started_at=utcnow())
        .returning(Run.node_id, Run.id, Run.task_id, Run.input)
    )
    return {node_id: (run_id, task_id, data) for node_id, run_id, task_id, data in rows}


def activate_tasks(con: Connection, task_ids: list[int]) -> None:
    """pending → active for tasks with a claimed run. Run in its own transaction after the claim: holding run
    locks while waiting for task locks would invert the lock order."""
    con.execute(update(Task).where(Task.id.in_(task_ids), Task.status == "pending").values(status="active"))


@dataclass(frozen=True)
class Recovery:
    requeued: int
    failed: int
    task_ids: list[int]


def recover_node(s: Session, node_id: int) -> Recovery:
    """A node (re)started: its runs left active by a crash go back to pending, or fail after MAX_ATTEMPTS."""
    task_ids = sorted(set(s.scalars(select(Run.task_id).where(Run.node_id == node_id, Run.status == "active"))))
    requeued = failed = 0
    for task_id in task_ids:
        task = lock_task(s, task_id)
        runs = s.scalars(
            select(Run).where(Run.task_id == task_id, Run.node_id == node_id, Run.status == "active").with_for_update()
        )
        for run in runs:
            run.attempts += 1
            if run.attempts >= MAX_ATTEMPTS:
                run.status, run.finished_at = "failed", utcnow()
                run.log = append_log(run.log, f"node crashed {MAX_ATTEMPTS} times")
                failed += 1
            else:
                run.status, run.started_at, run.progress = "pending", None, 0.0
                requeued += 1
        s.flush()
        if task is not None:
            refresh_task(s, task)
    return Recovery(requeued, failed, task_ids)


def cancel_task(s: Session, task: Task) -> None:
    """Cancel a (locked) task and every run not yet finished."""
    task.cancelled = True
    s.execute(
        update(Run)
        .where(Run.task_id == task.id, Run.status.in_(("pending", "active")))
        .values(status="cancelled", finished_at=utcnow())
    )
    task.status = "cancelled"
