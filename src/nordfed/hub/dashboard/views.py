"""What each dashboard page shows, read with the same permission checks as the REST API (blocking database work;
routes call it through ``hub.db.run``). Never reads run inputs or results: those columns stay deferred."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from fastapi import HTTPException
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from nordfed.hub.auth import Principal
from nordfed.hub.deps import CollabInfo, HubState, forbidden, not_found
from nordfed.hub.models import Collaboration, LedgerEntry, Node, Organization, Run, Study, Task, as_utc
from nordfed.hub.permissions import can_see_collaboration, require_collaboration_member
from nordfed.hub.routers.ledger import current_epoch
from nordfed.hub.routers.nodes import node_out
from nordfed.hub.routers.tasks import load_task, run_views, task_out
from nordfed.hub.schemas import MAX_ID

RECENT_TASKS = 25  # on a collaboration page
RUNS_INLINE = 20  # a task's runs listed on the collaboration page (more: see the task page)
TASK_PAGE_RUNS = 1000
NODE_RECENT_RUNS = 20

_ID = re.compile(r"[0-9]{1,10}")


def parse_id(text: str, kind: str) -> int:
    """A path id as the API accepts it (1..MAX_ID, ASCII digits); anything else is a 404 page, never a 5xx."""
    if not _ID.fullmatch(text) or not 1 <= int(text) <= MAX_ID:
        raise HTTPException(404, f"{kind} {text[:40]!r} not found")
    return int(text)


def _org_names(s: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(s.execute(select(Organization.id, Organization.name).where(Organization.id.in_(sorted(ids)))).all())


def _nodes(hub: HubState, s: Session, collaboration_ids: list[int]) -> list[Any]:
    query = select(Node).where(Node.collaboration_id.in_(collaboration_ids)).order_by(Node.id)
    return [node_out(hub, n) for n in s.scalars(query)] if collaboration_ids else []


def overview(hub: HubState, caller: Principal) -> dict[str, Any]:
    """The collaborations the caller can see, each with its nodes and its tasks counted by status."""
    with hub.snapshot() as s:
        collabs = [c for c in s.scalars(select(Collaboration).order_by(Collaboration.id))
                   if can_see_collaboration(caller, c)]
        ids = [c.id for c in collabs]
        nodes = _nodes(hub, s, ids)
        counts: dict[int, dict[str, int]] = {i: {} for i in ids}
        if ids:
            rows = s.execute(select(Task.collaboration_id, Task.status, func.count())
                             .where(Task.collaboration_id.in_(ids)).group_by(Task.collaboration_id, Task.status))
            for cid, status, n in rows:
                counts[cid][status] = n
        names = _org_names(s, {o for c in collabs for o in c.organization_ids})
        return {"collaborations": [
            {"id": c.id, "name": c.name, "organizations": [names.get(o, str(o)) for o in c.organization_ids],
             "nodes": [n for n in nodes if n.collaboration_id == c.id], "counts": counts[c.id],
             "total": sum(counts[c.id].values())}
            for c in collabs]}


def _visible_collaboration(hub: HubState, s: Session, collaboration_id: int, caller: Principal) -> CollabInfo:
    collab = hub.collaboration(s, collaboration_id)  # 404 when unknown
    require_collaboration_member(caller, collab)  # 403 as GET /collaborations/{id}
    return collab


def collaboration(hub: HubState, caller: Principal, collaboration_id: int) -> dict[str, Any]:
    """A collaboration's nodes (disabled included), studies and recent tasks with their runs' status and logs."""
    with hub.snapshot() as s:
        collab = _visible_collaboration(hub, s, collaboration_id, caller)
        nodes = _nodes(hub, s, [collab.id])
        studies = list(s.scalars(select(Study).where(Study.collaboration_id == collab.id).order_by(Study.id)))
        names = _org_names(s, set(collab.organization_ids) | {o for st in studies for o in st.organization_ids})
        tasks = list(s.scalars(select(Task).where(Task.collaboration_id == collab.id)
                               .order_by(Task.id.desc()).limit(RECENT_TASKS)))
        runs = run_views(s, [t.id for t in tasks])
        total = s.scalar(select(func.count()).select_from(Task).where(Task.collaboration_id == collab.id)) or 0
        return {
            "collab": collab,
            "organizations": [names.get(o, str(o)) for o in sorted(collab.organization_ids)],
            "nodes": nodes,
            "studies": [{"id": st.id, "name": st.name, "description": st.description,
                         "organizations": [names.get(o, str(o)) for o in st.organization_ids],
                         "created_at": as_utc(st.created_at)} for st in studies],
            "tasks": [{"task": task_out(s, t, runs[t.id]), "run_counts": Counter(r.status for r in runs[t.id])}
                      for t in tasks],
            "task_total": total,
            "runs_inline": RUNS_INLINE,
        }


def task(hub: HubState, caller: Principal, task_id: int) -> dict[str, Any]:
    """One task with its runs (status, progress, attempts, timings, log) as GET /tasks/{id} shows them."""
    with hub.snapshot() as s:
        row, collab = load_task(hub, s, task_id, caller)  # 404 / 403 as the API
        out = task_out(s, row)
        study = s.get(Study, row.study_id) if row.study_id is not None else None
        return {"task": out, "collab": collab, "mine": row.owner_id == caller.id,
                "study": study.name if study is not None else None,
                "runs": out.runs[:TASK_PAGE_RUNS], "runs_hidden": max(0, len(out.runs) - TASK_PAGE_RUNS),
                "run_counts": Counter(r.status for r in out.runs)}


def _ledger_summary(hub: HubState, node_id: int) -> dict[str, Any]:
    """The hub copy of the node's ledger in its current epoch: entries, head seq and hash, and the epoch."""
    with hub.read() as con:
        epoch = current_epoch(con, node_id)
        count, head, last = con.execute(
            select(func.count(), func.max(LedgerEntry.seq), func.max(LedgerEntry.received_at))
            .where(LedgerEntry.node_id == node_id, LedgerEntry.epoch == epoch)).one()
        head_hash = None
        if head is not None:
            head_hash = con.scalar(select(LedgerEntry.entry_hash).where(
                LedgerEntry.node_id == node_id, LedgerEntry.epoch == epoch, LedgerEntry.seq == head))
    return {"entries": count, "head": head or 0, "hash": head_hash, "received": as_utc(last), "epoch": epoch}


def node(hub: HubState, caller: Principal, node_id: int) -> dict[str, Any]:
    """A node's status, its ledger copy and recent runs. Visible as in GET /nodes (members of its collaboration,
    users of its organization); the ledger as in GET /nodes/{id}/ledger; runs to members of the collaboration."""
    with hub.snapshot() as s:
        row = s.get(Node, node_id)
        if row is None:
            raise not_found("node", node_id)
        collab = hub.collaboration(s, row.collaboration_id)
        member = can_see_collaboration(caller, collab)
        own_org = caller.organization_id == row.organization_id
        if not (member or own_org):
            raise forbidden(f"node {node_id} is not in one of your collaborations")
        out = node_out(hub, row)
        org = s.get(Organization, row.organization_id)
        runs = []
        if member:
            runs = s.execute(select(Run.id, Run.task_id, Run.status, Run.progress, Run.attempts, Run.started_at,
                                    Run.finished_at).where(Run.node_id == node_id)
                             .order_by(Run.id.desc()).limit(NODE_RECENT_RUNS)).all()
    ledger_allowed = member or (own_org and caller.has("organization_admin"))
    return {"node": out, "collab": collab, "member": member, "organization": org.name if org else "",
            "ledger": _ledger_summary(hub, node_id) if ledger_allowed else None, "ledger_allowed": ledger_allowed,
            "runs": [{"id": r[0], "task_id": r[1], "status": r[2], "progress": r[3], "attempts": r[4],
                      "started_at": as_utc(r[5]), "finished_at": as_utc(r[6])} for r in runs]}
