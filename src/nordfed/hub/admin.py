"""Bootstrapping outside the API: the first root user (everything else is done through the API as root)."""

from __future__ import annotations

from pydantic import ValidationError
from sqlalchemy import select

from nordfed.hub.auth import hash_secret
from nordfed.hub.db import HubDB
from nordfed.hub.models import Organization, User
from nordfed.hub.schemas import UserCreate

HUB_ORGANIZATION = "nordfed hub"


class AdminError(ValueError):
    """A bootstrap request that cannot be honoured (duplicate user, weak password, ...)."""


def create_root(
    db: HubDB,
    username: str,
    password: str,
    exist_ok: bool = False,
    organization: str = HUB_ORGANIZATION,
    country: str = "--",
) -> int:
    """Create a root user (and the hub operator's organization if needed); returns its id.

    With ``exist_ok`` an existing user of that name is left untouched, so a hub can be restarted with the same
    bootstrap settings.
    """
    try:  # the same rules as POST /api/users
        UserCreate(username=username, password=password, organization_id=1, roles=["root"])
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise AdminError(f"invalid root user: {problems}") from exc
    with db.sessions.begin() as s:
        existing = s.scalar(select(User).where(User.username == username))
        if existing is not None:
            if exist_ok:
                return existing.id
            raise AdminError(f"a user named {username!r} already exists")
        org = s.scalar(select(Organization).where(Organization.name == organization))
        if org is None:
            org = Organization(name=organization, country=country)
            s.add(org)
            s.flush()
        user = User(username=username, password_hash=hash_secret(password), organization_id=org.id, roles="root")
        s.add(user)
        s.flush()
        return user.id
