"""Run and task state changes. Lock order is always task row(s) first, then run rows, so concurrent claims,
patches, cancels and crash recoveries never deadlock on PostgreSQL (SQLite serialises writers anyway)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, exists, func, or_, select, update
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


def next_task_status(current: str, run_statuses: list[str], cancelled: bool) -> str:
    """A task's new status from its runs' statuses (which occur is enough, not how often)."""
    status = task_status(run_statuses, cancelled)
    # Once started a task stays active: runs requeued after a crash do not make it "pending" again.
    return "active" if status == "pending" and current == "active" else status


def refresh_task(s: Session, task: Task) -> str:
    """Recompute a (locked) task's status from its runs."""
    statuses = list(s.scalars(select(Run.status).where(Run.task_id == task.id).distinct()))
    task.status = next_task_status(task.status, statuses, task.cancelled)
    return task.status


@dataclass(frozen=True)
class TaskMeta:
    """The immutable part of a task a node needs with each run (cached by the hub)."""

    collaboration_id: int
    algorithm: str
    version: str
    code_hash: str
    owner_id: int


# The hot statements are built once: constructing a SQLAlchemy statement costs more CPU than running it.
_TASK_META = select(Task.id, Task.collaboration_id, Task.algorithm, Task.version, Task.code_hash, Task.owner_id).where(
    Task.id.in_(bindparam("task_ids", expanding=True))
)
_OLDEST_PENDING = (
    select(func.min(Run.id))
    .where(Run.node_id.in_(bindparam("node_ids", expanding=True)), Run.status == "pending")
    .group_by(Run.node_id)
    .scalar_subquery()
)
_CLAIM = (
    update(Run)
    .where(Run.id.in_(_OLDEST_PENDING), Run.status == "pending")
    .values(status="active", started_at=bindparam("now"))
    .returning(Run.node_id, Run.id, Run.task_id, Run.input)
)
_ACTIVATE = (
    update(Task)
    .where(Task.id.in_(bindparam("task_ids", expanding=True)), Task.status == "pending")
    .values(status="active")
)


def task_meta(con: Connection, task_ids: Iterable[int]) -> dict[int, TaskMeta]:
    return {row[0]: TaskMeta(*row[1:]) for row in con.execute(_TASK_META, {"task_ids": list(task_ids)})}


def claim_runs(con: Connection, node_ids: list[int]) -> dict[int, tuple[int, int, str]]:
    """Atomically take the oldest pending run of each node (pending → active) in one statement.

    Returns node id → (run id, task id, input) for the nodes that had one. Claims are issued by one in-process
    batcher at a time, and ``status = 'pending'`` is re-checked by the UPDATE, so a run is never handed out twice.
    """
    rows = con.execute(_CLAIM, {"node_ids": list(node_ids), "now": utcnow()})
    return {node_id: (run_id, task_id, data) for node_id, run_id, task_id, data in rows}


def activate_tasks(con: Connection, task_ids: list[int]) -> None:
    """pending → active for tasks with a claimed run. On PostgreSQL in its own transaction after the claim:
    holding run locks while waiting for task locks would invert the lock order."""
    con.execute(_ACTIVATE, {"task_ids": list(task_ids)})


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


OWNER_DISABLED_LOG = "cancelled: its owner was disabled by an administrator"
OWNER_ORG_REMOVED_LOG = "cancelled: its owner's organization left the collaboration"


def cancel_owner_tasks(s: Session, user_id: int, note: str = OWNER_DISABLED_LOG) -> list[int]:
    """Cancel every unfinished task of a user who is being disabled; returns their ids (wake their waiters after
    the commit). A researcher who left must not have her queued tasks run at the sites afterwards: the nodes pin
    her signing key, not her account, so only the hub can stop them. Runs a node is executing answer its PATCH
    with 409, so their results are never stored either."""
    return cancel_unfinished_tasks(s, [Task.owner_id == user_id], note)


def cancel_unfinished_tasks(s: Session, where: list[Any], note: str) -> list[int]:
    """Cancel the unfinished tasks matching ``where`` (SQLAlchemy conditions on Task), each run's log noting why;
    returns their ids (wake their waiters after the commit)."""
    task_ids = list(s.scalars(
        select(Task.id).where(*where, Task.status.in_(("pending", "active"))).order_by(Task.id)
    ))
    for task_id in task_ids:  # lock order: the task row first, then its runs
        task = lock_task(s, task_id)
        if task is None or task.status not in ("pending", "active"):
            continue
        for run in s.scalars(
            select(Run).where(Run.task_id == task_id, Run.status.in_(("pending", "active"))).with_for_update()
        ):
            run.log = append_log(run.log, note)
        cancel_task(s, task)
    s.flush()
    return task_ids


# ------------------------------------------------------------------------------------------- result retention
TASK_FINISHED = frozenset({"completed", "failed", "cancelled"})
RETENTION_NOTE = "result removed after {days} days (hub retention) on {date}"
_RETENTION_PREFIX = RETENTION_NOTE.split("{", 1)[0]
RETENTION_BATCH = 100  # tasks per transaction: SQLite's writer lock is held briefly even on a first, large pass


def retention_note(log: str) -> str | None:
    """The line :func:`expire_results` appended to a run's log, if it did: always the last one, as a finished run's
    log never grows again (only the last line is looked at: logs run to 1 Mi characters)."""
    last = log.rstrip("\n").rsplit("\n", 1)[-1]
    return last if last.startswith(_RETENTION_PREFIX) else None


def _expired_tasks(cutoff: datetime):
    # Only ``result IS NOT NULL`` is asked of the (large) result column: SQLite answers that from the record header,
    # while any comparison of the value would read every stored result on each pass.
    recent = or_(Run.finished_at.is_(None), Run.finished_at >= cutoff)
    return (
        select(Task.id)
        .where(
            Task.status.in_(sorted(TASK_FINISHED)),
            exists().where(Run.task_id == Task.id, Run.result.is_not(None)),
            ~exists().where(Run.task_id == Task.id, recent),
        )
        .order_by(Task.id)
        .limit(RETENTION_BATCH)
    )


_CLEAR_RESULT = update(Run).where(Run.id == bindparam("b_id")).values(result=None, log=bindparam("b_log"))


def expire_results(engine: Engine, retention: timedelta, now: datetime | None = None) -> int:
    """Remove the sealed results of tasks whose runs all finished more than ``retention`` ago; returns how many
    runs lost their result. Each such run gets a :data:`RETENTION_NOTE` line in its log, which is how the results
    endpoint tells "removed by retention" (410) from "never sent". Ledger entries (hashes) are not touched.

    Finished tasks and their runs never change again, so no task lock is needed (the lock order is not at stake)."""
    now = now or utcnow()
    days = retention.total_seconds() / 86400
    note = RETENTION_NOTE.format(days=f"{days:g}", date=now.date().isoformat())
    cleared = 0
    while True:
        with engine.begin() as con:
            task_ids = list(con.scalars(_expired_tasks(now - retention)))
            if not task_ids:
                return cleared
            runs = con.execute(select(Run.id, Run.log).where(Run.task_id.in_(task_ids), Run.result.is_not(None)))
            params = [{"b_id": run_id, "b_log": append_log(log, note)} for run_id, log in runs]
            con.execute(_CLEAR_RESULT, params)
            cleared += len(params)
