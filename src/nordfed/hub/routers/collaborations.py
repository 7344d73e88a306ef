"""Collaborations: a set of organizations that run studies together, and the nodes they registered.

Membership changes drop the hub's cached view of the collaboration at once (HubState.forget_collaboration): an
organization removed from a collaboration loses access on the very next request, its nodes there are disabled and
it leaves the collaboration's studies.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from nordfed.hub.auth import revoke_tokens
from nordfed.hub.deps import CollabInfo, CurrentPrincipal, CurrentUser, Hub, PathId, forbidden, not_found
from nordfed.hub.lifecycle import OWNER_ORG_REMOVED_LOG, cancel_unfinished_tasks
from nordfed.hub.models import Collaboration, Node, Organization, Study, Task, User, study_organization
from nordfed.hub.permissions import can_see_collaboration, require_collaboration_admin, require_collaboration_member
from nordfed.hub.routers.nodes import disable_nodes, node_out
from nordfed.hub.schemas import CollaborationCreate, CollaborationOut, CollaborationPatch, NodeOut

router = APIRouter(prefix="/collaborations", tags=["collaborations"])


def _out(c: Collaboration | CollabInfo) -> CollaborationOut:
    return CollaborationOut(id=c.id, name=c.name, organization_ids=sorted(c.organization_ids))


def _organizations(s: Session, ids: list[int]) -> list[Organization]:
    orgs = list(s.scalars(select(Organization).where(Organization.id.in_(ids))))
    missing = sorted(set(ids) - {o.id for o in orgs})
    if missing:
        raise HTTPException(404, f"organizations {missing} not found")
    return orgs


def _refuse_taken_name(s: Session, name: str) -> None:
    if s.scalar(select(Collaboration.id).where(Collaboration.name == name)) is not None:
        raise HTTPException(409, f"a collaboration named {name!r} already exists")


@router.post("", response_model=CollaborationOut, status_code=201)
def create_collaboration(body: CollaborationCreate, hub: Hub, caller: CurrentUser) -> CollaborationOut:
    if not caller.has("collaboration_admin"):
        raise forbidden("only root or a collaboration_admin may create collaborations")
    with hub.tx() as s:
        orgs = _organizations(s, sorted(set(body.organization_ids)))
        _refuse_taken_name(s, body.name)
        collab = Collaboration(name=body.name, organizations=orgs)
        s.add(collab)
        s.flush()
        return _out(collab)


@router.get("", response_model=list[CollaborationOut])
def list_collaborations(hub: Hub, caller: CurrentPrincipal) -> list[CollaborationOut]:
    with hub.tx() as s:
        collabs = s.scalars(select(Collaboration).order_by(Collaboration.id))
        return [_out(c) for c in collabs if can_see_collaboration(caller, c)]


@router.get("/{collaboration_id}", response_model=CollaborationOut)
def get_collaboration(collaboration_id: PathId, hub: Hub, caller: CurrentPrincipal) -> CollaborationOut:
    with hub.tx() as s:
        collab = hub.collaboration(s, collaboration_id)
        require_collaboration_member(caller, collab)
        return _out(collab)


@router.get("/{collaboration_id}/nodes", response_model=list[NodeOut])
def collaboration_nodes(
    collaboration_id: PathId, hub: Hub, caller: CurrentPrincipal, include_disabled: Annotated[bool, Query()] = False
) -> list[NodeOut]:
    """The collaboration's nodes; disabled nodes only with ``include_disabled`` (clients fan tasks out to this)."""
    with hub.tx() as s:
        collab = hub.collaboration(s, collaboration_id)
        require_collaboration_member(caller, collab)
        query = select(Node).where(Node.collaboration_id == collab.id).order_by(Node.id)
        if not include_disabled:
            query = query.where(Node.disabled.is_(False))
        return [node_out(hub, n) for n in s.scalars(query)]


def _load(s: Session, collaboration_id: int) -> Collaboration:
    collab = s.get(Collaboration, collaboration_id)
    if collab is None:
        raise not_found("collaboration", collaboration_id)
    return collab


@router.patch("/{collaboration_id}", response_model=CollaborationOut)
def patch_collaboration(
    collaboration_id: PathId, body: CollaborationPatch, hub: Hub, caller: CurrentUser
) -> CollaborationOut:
    """Rename, add or remove organizations. A removed organization's nodes in this collaboration are disabled
    (their unfinished runs fail), its researchers' unfinished tasks here are cancelled, and it leaves the
    collaboration's studies."""
    add, remove = set(body.add_organization_ids or ()), set(body.remove_organization_ids or ())
    if add & remove:
        raise HTTPException(400, f"organizations {sorted(add & remove)} are both added and removed")
    disabled: list[int] = []
    task_ids: list[int] = []
    with hub.tx() as s:
        collab = _load(s, collaboration_id)
        require_collaboration_admin(caller, collab, "change")
        if body.name is not None and body.name != collab.name:
            _refuse_taken_name(s, body.name)
            collab.name = body.name
        current = set(collab.organization_ids)
        strangers = sorted(remove - current)
        if strangers:
            raise HTTPException(400, f"organizations {strangers} are not members of collaboration {collaboration_id}")
        if remove and not (current - remove) | add:
            raise HTTPException(400, "a collaboration needs at least one organization")
        new = _organizations(s, sorted(add - current))
        collab.organizations = [o for o in collab.organizations if o.id not in remove] + new
        if remove:
            nodes = list(
                s.scalars(
                    select(Node).where(
                        Node.collaboration_id == collaboration_id,
                        Node.organization_id.in_(remove),
                        Node.disabled.is_(False),
                    )
                )
            )
            disabled = [n.id for n in nodes]
            task_ids = disable_nodes(s, nodes) if nodes else []
            # its researchers' queued tasks must not run at the remaining sites: they no longer take part
            members = select(User.id).where(User.organization_id.in_(remove))
            task_ids += cancel_unfinished_tasks(s, [Task.collaboration_id == collaboration_id,
                                                    Task.owner_id.in_(members)], OWNER_ORG_REMOVED_LOG)
            studies = select(Study.id).where(Study.collaboration_id == collaboration_id)
            s.execute(
                delete(study_organization).where(
                    study_organization.c.study_id.in_(studies), study_organization.c.organization_id.in_(remove)
                )
            )
        s.flush()
        out = _out(collab)
    hub.forget_collaboration(collaboration_id)
    hub.forget_tokens(principals=[("node", n) for n in disabled])
    hub.dispatcher.notify("task", task_ids)
    return out


@router.delete("/{collaboration_id}", response_model=CollaborationOut)
def delete_collaboration(collaboration_id: PathId, hub: Hub, caller: CurrentUser) -> CollaborationOut:
    """Delete a collaboration without tasks, with its studies and nodes (tasks are records: 409 when any exist)."""
    with hub.tx() as s:
        collab = _load(s, collaboration_id)
        require_collaboration_admin(caller, collab, "delete")
        if s.scalar(select(Task.id).where(Task.collaboration_id == collaboration_id).limit(1)) is not None:
            raise HTTPException(409, f"collaboration {collaboration_id} has tasks and cannot be deleted")
        out = _out(collab)
        node_ids = list(s.scalars(select(Node.id).where(Node.collaboration_id == collaboration_id)))
        for node_id in node_ids:
            revoke_tokens(s, node_id=node_id)
        s.execute(delete(Node).where(Node.collaboration_id == collaboration_id))
        s.execute(delete(Study).where(Study.collaboration_id == collaboration_id))
        s.delete(collab)
    hub.forget_collaboration(collaboration_id)
    hub.forget_tokens(principals=[("node", n) for n in node_ids])
    return out
