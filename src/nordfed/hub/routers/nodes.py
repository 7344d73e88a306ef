"""Node registration (api key shown once), node keys and node sessions (crash recovery); listing, renaming,
disabling and deleting nodes, api key rotation and token revocation."""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from nordfed.hub.auth import hash_secret, new_api_key, revoke_tokens
from nordfed.hub.deps import CurrentNode, CurrentPrincipal, CurrentUser, Hub, HubState, PathId, forbidden, not_found
from nordfed.hub.lifecycle import append_log, lock_task, recover_node, refresh_task
from nordfed.hub.models import (
    Collaboration,
    Node,
    NodeSigningKey,
    Organization,
    Run,
    as_utc,
    collaboration_organization,
    utcnow,
)
from nordfed.hub.permissions import can_see_collaboration, require_org_admin
from nordfed.hub.schemas import (
    MAX_ID,
    KeysUpdate,
    NodeCreate,
    NodeCreated,
    NodeOut,
    NodePatch,
    RevokedOut,
    SessionOut,
)

router = APIRouter(prefix="/nodes", tags=["nodes"])

DISABLED_LOG = "node disabled by an administrator"


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
        status="online" if online and not n.disabled else "offline",
        last_seen=last_seen,
        disabled=n.disabled,
    )


def disable_nodes(s: Session, nodes: Collection[Node]) -> list[int]:
    """Disable nodes: revoke their tokens and fail their unfinished runs, so no task waits for them forever.

    Returns the ids of the tasks whose runs changed (their waiters must be woken after the commit); the caller
    also drops the nodes from the token cache after the commit.
    """
    node_ids = [n.id for n in nodes]
    for node in nodes:
        node.disabled = True
        revoke_tokens(s, node_id=node.id)
    unfinished = (Run.node_id.in_(node_ids), Run.status.in_(("pending", "active")))
    task_ids = sorted(set(s.scalars(select(Run.task_id).where(*unfinished))))
    for task_id in task_ids:  # lock order of lifecycle.py: the task row first, then its runs
        task = lock_task(s, task_id)
        for run in s.scalars(select(Run).where(Run.task_id == task_id, *unfinished).with_for_update()):
            run.status, run.finished_at = "failed", utcnow()
            run.log = append_log(run.log, DISABLED_LOG)
        s.flush()
        if task is not None:
            refresh_task(s, task)
    return task_ids


def _after_disable(hub: HubState, node_ids: Collection[int], task_ids: list[int]) -> None:
    hub.forget_tokens(principals=[("node", n) for n in node_ids])
    hub.dispatcher.notify("task", task_ids)


def _refuse_taken_name(s: Session, collaboration_id: int, name: str) -> None:
    if s.scalar(select(Node.id).where(Node.collaboration_id == collaboration_id, Node.name == name)) is not None:
        raise HTTPException(409, f"collaboration {collaboration_id} already has a node named {name!r}")


def _managed_node(s: Session, node_id: int, caller, action: str) -> Node:
    node = s.get(Node, node_id)
    if node is None:
        raise not_found("node", node_id)
    require_org_admin(caller, node.organization_id, action)
    return node


def _created(node: Node, api_key: str) -> NodeCreated:
    """The node with its new api key (shown this once)."""
    return NodeCreated(id=node.id, name=node.name, organization_id=node.organization_id,
                       collaboration_id=node.collaboration_id, api_key=api_key)


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
            _refuse_taken_name(s, collab.id, body.name)
            node = Node(
                name=body.name,
                organization_id=body.organization_id,
                collaboration_id=collab.id,
                key_id=key_id,
                api_key_hash=key_hash,
            )
            s.add(node)
            s.flush()
            return _created(node, api_key)

    return await run_in_threadpool(store)


@router.get("", response_model=list[NodeOut])
def list_nodes(
    hub: Hub,
    caller: CurrentPrincipal,
    collaboration_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    organization_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> list[NodeOut]:
    """The nodes of the collaborations the caller can see (and of its own organization), disabled ones included."""
    with hub.tx() as s:
        query = select(Node).order_by(Node.id)
        if collaboration_id is not None:
            query = query.where(Node.collaboration_id == collaboration_id)
        if organization_id is not None:
            query = query.where(Node.organization_id == organization_id)
        if caller.kind == "node":
            query = query.where(Node.collaboration_id == caller.collaboration_id)
        elif not caller.has("collaboration_admin"):
            member_of = select(collaboration_organization.c.collaboration_id).where(
                collaboration_organization.c.organization_id == caller.organization_id
            )
            query = query.where(Node.collaboration_id.in_(member_of) | (Node.organization_id == caller.organization_id))
        return [node_out(hub, n) for n in s.scalars(query)]


@router.get("/me", response_model=NodeOut)
def my_node(hub: Hub, node: CurrentNode) -> NodeOut:
    with hub.tx() as s:
        row = s.get(Node, node.id)
        if row is None:
            raise not_found("node", node.id)
        return node_out(hub, row)


@router.put("/me/keys", response_model=NodeOut)
def put_node_keys(body: KeysUpdate, hub: Hub, node: CurrentNode) -> NodeOut:
    """Publish the node's public keys (it does at every login). A signing key it never registered before joins its
    history (``hub_node_signing_key``), so ledger entries it signed earlier keep verifying after a key change."""
    with hub.tx() as s:
        row = s.get(Node, node.id, with_for_update=True)  # serialises two logins of one node registering a key
        if row is None:
            raise not_found("node", node.id)
        row.encryption_key, row.signing_key = body.encryption_key, body.signing_key
        if s.get(NodeSigningKey, (node.id, body.signing_key)) is None:
            s.add(NodeSigningKey(node_id=node.id, signing_key=body.signing_key))
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


@router.patch("/{node_id}", response_model=NodeOut)
def patch_node(node_id: PathId, body: NodePatch, hub: Hub, caller: CurrentUser) -> NodeOut:
    """Rename, disable or re-enable a node. Disabling revokes its tokens, refuses new ones and fails its unfinished
    runs; re-enabling lets its api key log in again."""
    task_ids: list[int] = []
    with hub.tx() as s:
        node = _managed_node(s, node_id, caller, "change its nodes")
        if body.name is not None and body.name != node.name:
            _refuse_taken_name(s, node.collaboration_id, body.name)
            node.name = body.name
        disabling = body.disabled is True and not node.disabled
        if disabling:
            task_ids = disable_nodes(s, [node])
        elif body.disabled is False and node.disabled:
            collab = s.get(Collaboration, node.collaboration_id)
            if collab is None or node.organization_id not in collab.organization_ids:
                raise HTTPException(
                    400,
                    f"organization {node.organization_id} left collaboration {node.collaboration_id}; "
                    "add it again before re-enabling its node",
                )
            node.disabled = False
        out = node_out(hub, node)
    if disabling:
        _after_disable(hub, [node_id], task_ids)
    return out


@router.delete("/{node_id}", response_model=NodeOut)
def delete_node(node_id: PathId, hub: Hub, caller: CurrentUser) -> NodeOut:
    """Delete a node that never received a run (runs keep their node as part of the record: disable it instead)."""
    with hub.tx() as s:
        node = _managed_node(s, node_id, caller, "delete its nodes")
        if s.scalar(select(Run.id).where(Run.node_id == node_id).limit(1)) is not None:
            raise HTTPException(409, f"node {node_id} has runs; disable it instead (PATCH disabled=true)")
        out = node_out(hub, node)
        revoke_tokens(s, node_id=node_id)
        s.delete(node)
    hub.forget_tokens(principals=[("node", node_id)])
    return out


@router.post("/{node_id}/api-key", response_model=NodeCreated)
async def rotate_api_key(node_id: PathId, hub: Hub, caller: CurrentUser) -> NodeCreated:
    """A new api key (shown once); the old key and every token of the node stop working at once."""
    key_id, api_key = new_api_key()
    key_hash = await run_in_threadpool(hash_secret, api_key)

    def store() -> NodeCreated:
        with hub.tx() as s:
            node = _managed_node(s, node_id, caller, "rotate the api keys of its nodes")
            node.key_id, node.api_key_hash = key_id, key_hash
            revoke_tokens(s, node_id=node_id)
            return _created(node, api_key)

    out = await run_in_threadpool(store)
    hub.forget_tokens(principals=[("node", node_id)])
    return out


@router.delete("/{node_id}/tokens", response_model=RevokedOut)
def revoke_node_tokens(node_id: PathId, hub: Hub, caller: CurrentUser) -> RevokedOut:
    """Log a node out (it can log in again with its api key; rotate the key to lock it out)."""
    with hub.tx() as s:
        _managed_node(s, node_id, caller, "revoke the tokens of its nodes")
        revoked = revoke_tokens(s, node_id=node_id)
    hub.forget_tokens(principals=[("node", node_id)])
    return RevokedOut(revoked=revoked)
