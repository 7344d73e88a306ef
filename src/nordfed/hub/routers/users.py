"""Users, their roles and their public keys (X25519 for encryption, Ed25519 for signing); listing, editing,
disabling and deleting users, and revoking their tokens."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from nordfed.hub.auth import hash_secret, revoke_tokens, verify_secret
from nordfed.hub.deps import CurrentPrincipal, CurrentUser, Hub, HubState, PathId, forbidden, not_found
from nordfed.hub.lifecycle import cancel_owner_tasks
from nordfed.hub.models import Organization, Task, User
from nordfed.hub.permissions import ORG_ADMIN_GRANTABLE, can_manage_user, require_org_admin
from nordfed.hub.routers.auth import CallerToken
from nordfed.hub.schemas import MAX_ID, KeysOut, KeysUpdate, RevokedOut, UserCreate, UserOut, UserPatch

router = APIRouter(prefix="/users", tags=["users"])


def _out(u: User) -> UserOut:
    return UserOut(
        id=u.id,
        username=u.username,
        organization_id=u.organization_id,
        roles=u.role_list,
        encryption_key=u.encryption_key,
        signing_key=u.signing_key,
        disabled=u.disabled,
    )


def _load(s, user_id: int) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise not_found("user", user_id)
    return user


def _require_manager(caller, user: User, action: str) -> None:
    if not can_manage_user(caller, user.organization_id, user.role_list):
        raise forbidden(f"only root or an organization_admin of organization {user.organization_id} may {action}")


def _grantable(caller, roles: list[str]) -> str:
    if not caller.is_root and not set(roles) <= ORG_ADMIN_GRANTABLE:
        raise forbidden(f"only root may grant the roles {sorted(set(roles) - ORG_ADMIN_GRANTABLE)}")
    return ",".join(dict.fromkeys(roles))


@router.post("", response_model=UserOut, status_code=201)
async def create_user(body: UserCreate, hub: Hub, caller: CurrentUser) -> UserOut:
    require_org_admin(caller, body.organization_id, "create users in it")
    roles = _grantable(caller, body.roles)
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


@router.get("", response_model=list[UserOut])
def list_users(
    hub: Hub, caller: CurrentUser, organization_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None
) -> list[UserOut]:
    """Root sees every user; everyone else the users of their own organization."""
    if not caller.is_root:
        if organization_id not in (None, caller.organization_id):
            raise forbidden(f"you may list only the users of your own organization ({caller.organization_id})")
        organization_id = caller.organization_id
    with hub.tx() as s:
        query = select(User).order_by(User.id)
        if organization_id is not None:
            query = query.where(User.organization_id == organization_id)
        return [_out(u) for u in s.scalars(query)]


@router.get("/me", response_model=UserOut)
def me(hub: Hub, caller: CurrentUser) -> UserOut:
    with hub.tx() as s:
        return _out(_load(s, caller.id))


@router.put("/me/keys", response_model=KeysOut)
def put_my_keys(body: KeysUpdate, hub: Hub, caller: CurrentUser) -> KeysOut:
    with hub.tx() as s:
        user = _load(s, caller.id)
        user.encryption_key, user.signing_key = body.encryption_key, body.signing_key
        return KeysOut(id=user.id, encryption_key=user.encryption_key, signing_key=user.signing_key)


@router.get("/{user_id}", response_model=UserOut)
def get_user(user_id: PathId, hub: Hub, caller: CurrentUser) -> UserOut:
    with hub.tx() as s:
        user = _load(s, user_id)
        if user.id != caller.id and not caller.is_root and caller.organization_id != user.organization_id:
            raise HTTPException(403, f"user {user_id} belongs to another organization")
        return _out(user)


def _check_patch(caller, user: User, body: UserPatch) -> None:
    """Users may change their own password (giving the current one); the rest needs a manager of that user, and
    nobody changes their own roles or disables themselves (no accidental lock-out of the last root)."""
    if user.id != caller.id:
        _require_manager(caller, user, f"change user {user.id}")
        return
    if body.roles is not None or body.disabled is not None:
        raise HTTPException(400, "you cannot change your own roles or disable yourself; ask another administrator")
    if body.password is not None and body.current_password is None:
        raise HTTPException(400, "current_password is required to change your own password")


@router.patch("/{user_id}", response_model=UserOut)
async def patch_user(user_id: PathId, body: UserPatch, hub: Hub, caller: CurrentUser, digest: CallerToken) -> UserOut:
    """Roles, password or disabled. A new password revokes the user's other tokens; disabling revokes them all;
    new roles apply from the very next request."""
    roles = _grantable(caller, body.roles) if body.roles is not None else None

    def check() -> str:
        with hub.tx() as s:
            user = _load(s, user_id)
            _check_patch(caller, user, body)
            return user.password_hash

    stored_hash = await run_in_threadpool(check)
    if body.password is not None and user_id == caller.id:
        ok = await run_in_threadpool(verify_secret, stored_hash, body.current_password or "")
        if not ok:
            raise HTTPException(401, "current_password is wrong")
    new_hash = await run_in_threadpool(hash_secret, body.password) if body.password is not None else None

    def store() -> tuple[UserOut, bool, list[int]]:
        cancelled: list[int] = []
        with hub.tx() as s:
            user = _load(s, user_id)
            _check_patch(caller, user, body)  # again: the user may have changed meanwhile
            changed = False
            if roles is not None and roles != user.roles:
                user.roles, changed = roles, True
            if new_hash is not None:
                user.password_hash = new_hash
                revoke_tokens(s, user_id=user.id, keep=digest if user.id == caller.id else None)
                changed = True
            if body.disabled is not None and body.disabled != user.disabled:
                user.disabled, changed = body.disabled, True
                if body.disabled:
                    revoke_tokens(s, user_id=user.id)
                    cancelled = cancel_owner_tasks(s, user.id)
            return _out(user), changed, cancelled

    out, changed, cancelled = await run_in_threadpool(store)
    if changed:
        hub.forget_tokens(principals=[("user", user_id)])
    if cancelled:
        hub.dispatcher.notify("task", cancelled)  # wake their waiters: the tasks finished
    return out


def _forget_user(hub: HubState, user_id: int) -> None:
    hub.forget_tokens(principals=[("user", user_id)])


@router.delete("/{user_id}", response_model=UserOut)
def delete_user(user_id: PathId, hub: Hub, caller: CurrentUser) -> UserOut:
    """Delete a user who owns no tasks (a task's owner is part of its record: disable such users instead)."""
    if user_id == caller.id:
        raise HTTPException(400, "you cannot delete yourself; ask another administrator")
    with hub.tx() as s:
        user = _load(s, user_id)
        _require_manager(caller, user, f"delete user {user_id}")
        owned = s.scalar(select(Task.id).where(Task.owner_id == user_id).limit(1))
        if owned is not None:
            raise HTTPException(409, f"user {user_id} owns tasks; disable the user instead (PATCH disabled=true)")
        out = _out(user)
        revoke_tokens(s, user_id=user_id)
        s.delete(user)
    _forget_user(hub, user_id)
    return out


@router.delete("/{user_id}/tokens", response_model=RevokedOut)
def revoke_user_tokens(user_id: PathId, hub: Hub, caller: CurrentUser) -> RevokedOut:
    """Log a user out everywhere (users may do it for themselves)."""
    with hub.tx() as s:
        user = _load(s, user_id)
        if user.id != caller.id:
            _require_manager(caller, user, f"revoke the tokens of user {user_id}")
        revoked = revoke_tokens(s, user_id=user_id)
    _forget_user(hub, user_id)
    return RevokedOut(revoked=revoked)


@router.get("/{user_id}/keys", response_model=KeysOut)
def get_user_keys(user_id: PathId, hub: Hub, _: CurrentPrincipal) -> KeysOut:
    # Public keys are public: nodes need the task owner's signing key, clients need each other's.
    with hub.tx() as s:
        user = _load(s, user_id)
        return KeysOut(id=user.id, encryption_key=user.encryption_key, signing_key=user.signing_key)
