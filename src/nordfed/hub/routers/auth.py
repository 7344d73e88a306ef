"""Tokens for users (username + password) and nodes (api key), and the health check."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from sqlalchemy import select

from nordfed import __version__
from nordfed.hub.auth import DUMMY_HASH, api_key_id, issue_token, verify_secret
from nordfed.hub.deps import Hub
from nordfed.hub.models import Node, User
from nordfed.hub.schemas import HealthOut, NodeTokenOut, NodeTokenRequest, TokenOut, TokenRequest

router = APIRouter(tags=["auth"])


@router.get("/health", response_model=HealthOut)
async def health() -> HealthOut:
    return HealthOut(status="ok", version=__version__)


@router.post("/token", response_model=TokenOut)
def user_token(body: TokenRequest, hub: Hub) -> TokenOut:
    with hub.tx() as s:
        user = s.scalar(select(User).where(User.username == body.username))
        # Verify against a dummy hash for unknown users: same cost, so timing does not reveal usernames.
        ok = verify_secret(user.password_hash if user else DUMMY_HASH, body.password)
        if user is None or not ok:
            raise HTTPException(401, "wrong username or password")
        token = issue_token(s, hub.user_token_ttl, user_id=user.id)
        return TokenOut(access_token=token, user_id=user.id, organization_id=user.organization_id, roles=user.role_list)


@router.post("/token/node", response_model=NodeTokenOut)
def node_token(body: NodeTokenRequest, hub: Hub) -> NodeTokenOut:
    key_id = api_key_id(body.api_key)
    with hub.tx() as s:
        node = s.scalar(select(Node).where(Node.key_id == key_id)) if key_id else None
        ok = verify_secret(node.api_key_hash if node else DUMMY_HASH, body.api_key)
        if node is None or not ok:
            raise HTTPException(401, "invalid api key")
        token = issue_token(s, hub.node_token_ttl, node_id=node.id)
        return NodeTokenOut(
            access_token=token,
            node_id=node.id,
            name=node.name,
            organization_id=node.organization_id,
            collaboration_id=node.collaboration_id,
        )
