"""Collaborations: a set of organizations that run studies together, and the nodes they registered."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from nordfed.hub.deps import CollabInfo, CurrentPrincipal, CurrentUser, Hub, HubState, PathId, forbidden
from nordfed.hub.models import Collaboration, Node, Organization, as_utc, utcnow
from nordfed.hub.permissions import can_see_collaboration, require_collaboration_member
from nordfed.hub.schemas import CollaborationCreate, CollaborationOut, NodeOut

router = APIRouter(prefix="/collaborations", tags=["collaborations"])


def _out(c: Collaboration | CollabInfo) -> CollaborationOut:
    return CollaborationOut(id=c.id, name=c.name, organization_ids=sorted(c.organization_ids))


def node_out(hub: HubState, n: Node) -> NodeOut:
    seen = [t for t in (as_utc(n.last_seen), hub.dispatcher.last_seen.get(n.id)) if t is not None]
    last_seen = max(seen) if seen else None
    online = hub.dispatcher.polling[n.id] > 0 or (last_seen is not None and utcnow() - last_seen < hub.online_window)
    return NodeOut(
        id=n.id,
        name=n.name,
        organization_id=n.organization_id,
        collaboration_id=n.collaboration_id,
        encryption_key=n.encryption_key,
        signing_key=n.signing_key,
        status="online" if online else "offline",
        last_seen=last_seen,
    )


@router.post("", response_model=CollaborationOut, status_code=201)
def create_collaboration(body: CollaborationCreate, hub: Hub, caller: CurrentUser) -> CollaborationOut:
    if not caller.has("collaboration_admin"):
        raise forbidden("only root or a collaboration_admin may create collaborations")
    ids = sorted(set(body.organization_ids))
    with hub.tx() as s:
        orgs = list(s.scalars(select(Organization).where(Organization.id.in_(ids))))
        missing = sorted(set(ids) - {o.id for o in orgs})
        if missing:
            raise HTTPException(404, f"organizations {missing} not found")
        if s.scalar(select(Collaboration.id).where(Collaboration.name == body.name)) is not None:
            raise HTTPException(409, f"a collaboration named {body.name!r} already exists")
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
def collaboration_nodes(collaboration_id: PathId, hub: Hub, caller: CurrentPrincipal) -> list[NodeOut]:
    with hub.tx() as s:
        collab = hub.collaboration(s, collaboration_id)
        require_collaboration_member(caller, collab)
        nodes = s.scalars(select(Node).where(Node.collaboration_id == collab.id).order_by(Node.id))
        return [node_out(hub, n) for n in nodes]
