"""Users, their roles and their public keys (X25519 for encryption, Ed25519 for signing)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from nordfed.hub.auth import hash_secret
from nordfed.hub.deps import CurrentPrincipal, CurrentUser, Hub, PathId, not_found
from nordfed.hub.models import Organization, User
from nordfed.hub.permissions import ORG_ADMIN_GRANTABLE, require_org_admin
from nordfed.hub.schemas import KeysOut, KeysUpdate, UserCreate, UserOut

router = APIRouter(prefix="/users", tags=["users"])


def _out(u: User) -> UserOut:
    return UserOut(
        id=u.id,
        username=u.username,
        organization_id=u.organization_id,
        roles=u.role_list,
        encryption_key=u.encryption_key,
        signing_key=u.signing_key,
    )


@router.post("", response_model=UserOut, status_code=201)
async def create_user(body: UserCreate, hub: Hub, caller: CurrentUser) -> UserOut:
    require_org_admin(caller, body.organization_id, "create users in it")
    if not caller.is_root and not set(body.roles) <= ORG_ADMIN_GRANTABLE:
        denied = sorted(set(body.roles) - ORG_ADMIN_GRANTABLE)
        raise HTTPException(403, f"only root may grant the roles {denied}")
    roles = ",".join(dict.fromkeys(body.roles))
    # argon2 takes ~50 ms: hash off the event loop, outside the transaction.
    password_hash = await run_in_threadpool(hash_secret, body.password)

    def store() -> UserOut:
        with hub.tx() as s:
            if s.get(Organization, body.organization_id) is None:
                raise not_found("organization", body.organization_id)
            if s.scalar(select(User.id).where(User.username == body.username)) is not None:
                raise HTTPException(409, f"a user named {body.username!r} already exists")
            user = User(
                username=body.username, password_hash=password_hash, organization_id=body.organization_id, roles=roles
            )
            s.add(user)
            s.flush()
            return _out(user)

    return await run_in_threadpool(store)


@router.get("/me", response_model=UserOut)
def me(hub: Hub, caller: CurrentUser) -> UserOut:
    with hub.tx() as s:
        user = s.get(User, caller.id)
        if user is None:
            raise not_found("user", caller.id)
        return _out(user)


@router.put("/me/keys", response_model=KeysOut)
def put_my_keys(body: KeysUpdate, hub: Hub, caller: CurrentUser) -> KeysOut:
    with hub.tx() as s:
        user = s.get(User, caller.id)
        if user is None:
            raise not_found("user", caller.id)
        user.encryption_key, user.signing_key = body.encryption_key, body.signing_key
        return KeysOut(id=user.id, encryption_key=user.encryption_key, signing_key=user.signing_key)


@router.get("/{user_id}", response_model=UserOut)
def get_user(user_id: PathId, hub: Hub, caller: CurrentUser) -> UserOut:
    with hub.tx() as s:
        user = s.get(User, user_id)
        if user is None:
            raise not_found("user", user_id)
        if user.id != caller.id and not caller.is_root and caller.organization_id != user.organization_id:
            raise HTTPException(403, f"user {user_id} belongs to another organization")
        return _out(user)


@router.get("/{user_id}/keys", response_model=KeysOut)
def get_user_keys(user_id: PathId, hub: Hub, _: CurrentPrincipal) -> KeysOut:
    # Public keys are public: nodes need the task owner's signing key, clients need each other's.
    with hub.tx() as s:
        user = s.get(User, user_id)
        if user is None:
            raise not_found("user", user_id)
        return KeysOut(id=user.id, encryption_key=user.encryption_key, signing_key=user.signing_key)
