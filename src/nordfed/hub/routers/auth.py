"""Tokens for users (username + password) and nodes (api key), logout (token revocation), and the health check."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import delete, select

from nordfed import __version__
from nordfed.hub.auth import DUMMY_HASH, api_key_id, issue_token, token_digest, verify_secret
from nordfed.hub.deps import CurrentPrincipal, Hub, HubState
from nordfed.hub.models import Node, Token, User
from nordfed.hub.schemas import HealthOut, NodeTokenOut, NodeTokenRequest, RevokedOut, TokenOut, TokenRequest

router = APIRouter(tags=["auth"])
_bearer = HTTPBearer(auto_error=False)


async def caller_token_digest(
    _: CurrentPrincipal, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The digest of the (already authenticated) token of this request: what logout revokes or a password change
    keeps."""
    if credentials is None:  # not reached: the principal dependency refuses requests without a token
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return token_digest(credentials.credentials)


CallerToken = Annotated[str, Depends(caller_token_digest)]


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
        if user.disabled:
            raise HTTPException(403, f"user {user.username!r} is disabled; ask an administrator")
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
        if node.disabled:
            raise HTTPException(403, f"node {node.id} is disabled; ask its organization admin")
        token = issue_token(s, hub.node_token_ttl, node_id=node.id)
        return NodeTokenOut(
            access_token=token,
            node_id=node.id,
            name=node.name,
            organization_id=node.organization_id,
            collaboration_id=node.collaboration_id,
        )


def revoke_token(hub: HubState, digest: str) -> int:
    """Delete one token (by digest) and drop it from the cache, so the very next request with it is refused."""
    with hub.tx() as s:
        revoked = s.execute(delete(Token).where(Token.token_hash == digest)).rowcount or 0
    hub.forget_tokens(digests=[digest])
    return revoked


@router.post("/token/revoke", response_model=RevokedOut)
def revoke_own_token(hub: Hub, digest: CallerToken) -> RevokedOut:
    """Logout: the token of this request stops working at once (users and nodes)."""
    return RevokedOut(revoked=revoke_token(hub, digest))
