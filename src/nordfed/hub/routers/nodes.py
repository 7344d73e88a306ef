"""Node registration (api key shown once), node keys and node sessions (crash recovery)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from nordfed.hub.auth import hash_secret, new_api_key
from nordfed.hub.deps import CurrentNode, CurrentPrincipal, CurrentUser, Hub, PathId, forbidden, not_found
from nordfed.hub.lifecycle import recover_node
from nordfed.hub.models import Collaboration, Node, Organization, utcnow
from nordfed.hub.permissions import can_see_collaboration, require_org_admin
from nordfed.hub.routers.collaborations import node_out
from nordfed.hub.schemas import KeysUpdate, NodeCreate, NodeCreated, NodeOut, SessionOut

router = APIRouter(prefix="/nodes", tags=["nodes"])


@router.post("", response_model=NodeCreated, status_code=201)
async def create_node(body: NodeCreate, hub: Hub, caller: CurrentUser) -> NodeCreated:
    require_org_admin(caller, body.organization_id, "register its nodes")
    key_id, api_key = new_api_key()
    key_hash = await run_in_threadpool(hash_secret, api_key)

    def store() -> NodeCreated:
        with hub.tx() as s:
            if s.get(Organization, body.organization_id) is None:
                raise not_found("organization", body.organization_id)
            collab = s.get(Collaboration, body.collaboration_id)
            if collab is None:
                raise not_found("collaboration", body.collaboration_id)
            if body.organization_id not in collab.organization_ids:
                raise HTTPException(
                    400, f"organization {body.organization_id} is not a member of collaboration {collab.id}"
                )
            taken = select(Node.id).where(Node.collaboration_id == collab.id, Node.name == body.name)
            if s.scalar(taken) is not None:
                raise HTTPException(409, f"collaboration {collab.id} already has a node named {body.name!r}")
            node = Node(
                name=body.name,
                organization_id=body.organization_id,
                collaboration_id=collab.id,
                key_id=key_id,
                api_key_hash=key_hash,
            )
            s.add(node)
            s.flush()
            return NodeCreated(
                id=node.id,
                name=node.name,
                organization_id=node.organization_id,
                collaboration_id=node.collaboration_id,
                api_key=api_key,
            )

    return await run_in_threadpool(store)


@router.get("/me", response_model=NodeOut)
def my_node(hub: Hub, node: CurrentNode) -> NodeOut:
    with hub.tx() as s:
        row = s.get(Node, node.id)
        if row is None:
            raise not_found("node", node.id)
        return node_out(hub, row)


@router.put("/me/keys", response_model=NodeOut)
def put_node_keys(body: KeysUpdate, hub: Hub, node: CurrentNode) -> NodeOut:
    with hub.tx() as s:
        row = s.get(Node, node.id)
        if row is None:
            raise not_found("node", node.id)
        row.encryption_key, row.signing_key = body.encryption_key, body.signing_key
        return node_out(hub, row)


@router.post("/me/session", response_model=SessionOut)
def start_session(hub: Hub, node: CurrentNode) -> SessionOut:
    with hub.tx() as s:
        recovery = recover_node(s, node.id)
        row = s.get(Node, node.id)
        if row is not None:
            row.last_seen = utcnow()
    hub.dispatcher.seen(node.id)
    hub.dispatcher.notify("task", recovery.task_ids)
    hub.dispatcher.notify("node", [node.id])
    return SessionOut(requeued=recovery.requeued, failed=recovery.failed)


@router.get("/{node_id}", response_model=NodeOut)
def get_node(node_id: PathId, hub: Hub, caller: CurrentPrincipal) -> NodeOut:
    with hub.tx() as s:
        row = s.get(Node, node_id)
        if row is None:
            raise not_found("node", node_id)
        collab = s.get(Collaboration, row.collaboration_id)
        if collab is None or not can_see_collaboration(caller, collab):
            raise forbidden(f"node {node_id} is not in one of your collaborations")
        return node_out(hub, row)
