"""Authentication: argon2 password/api-key hashes, random bearer tokens stored as sha256 with expiry, principals.

Tokens are 256-bit random strings, so a fast hash is enough to store them safely; passwords and api keys are
argon2id (OWASP profile: m=19 MiB, t=2, p=1). Token look-ups are cached for a few minutes (longer than a node's
long-poll interval) so polls and run updates do no database work for authentication; a token's expiry is still
checked on every request. Revoking tokens (logout, admin revocation, disabling or deleting an account) or changing
a user's roles deletes the rows and then calls :meth:`TokenCache.forget`, so the very next request is refused or
sees the new roles.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from nordfed.hub.models import Node, Token, User, as_utc, utcnow
from nordfed.hub.roles import ROLES  # noqa: F401  (kept importable from here)

API_KEY_PREFIX = "nfk"

_hasher = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified against when a username or key id is unknown, so timing does not reveal which accounts exist.
DUMMY_HASH = _hasher.hash("nordfed-dummy-password")


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(hashed: str, secret: str) -> bool:
    try:
        return _hasher.verify(hashed, secret)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_api_key() -> tuple[str, str]:
    """Return (key_id, api_key); the key id is the public lookup half, the rest is secret."""
    key_id = secrets.token_hex(8)
    return key_id, f"{API_KEY_PREFIX}.{key_id}.{secrets.token_urlsafe(32)}"


def api_key_id(api_key: str) -> str | None:
    parts = api_key.split(".")
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or len(parts[1]) != 16:
        return None
    return parts[1]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (with roles) or a node (bound to one organization and collaboration)."""

    kind: str  # "user" | "node"
    id: int
    organization_id: int
    roles: frozenset[str] = field(default_factory=frozenset)
    collaboration_id: int | None = None
    name: str = ""

    @property
    def is_root(self) -> bool:
        return self.kind == "user" and "root" in self.roles

    def has(self, *roles: str) -> bool:
        return self.kind == "user" and ("root" in self.roles or any(r in self.roles for r in roles))


def user_principal(user: User) -> Principal:
    return Principal("user", user.id, user.organization_id, frozenset(user.role_list), None, user.username)


def node_principal(node: Node) -> Principal:
    return Principal("node", node.id, node.organization_id, frozenset({"node"}), node.collaboration_id, node.name)


def issue_token(session: Session, ttl: timedelta, user_id: int | None = None, node_id: int | None = None) -> str:
    token = secrets.token_urlsafe(32)
    now = utcnow()
    # Expired tokens are swept at issue time: cheap, and keeps the table small without a background job.
    session.execute(delete(Token).where(Token.expires_at < now))
    session.add(Token(token_hash=token_digest(token), user_id=user_id, node_id=node_id, expires_at=now + ttl))
    return token


PrincipalKey = tuple[str, int]  # (kind, id)


class TokenCache:
    """token digest → (principal, expires_at), valid for ``ttl`` seconds; thread-safe.

    :meth:`forget` drops entries and, for ``hold`` seconds, refuses to cache them again: a request that read the
    token from the database just before the revocation committed must not put it back into the cache.
    """

    def __init__(self, ttl: float = 300.0, max_size: int = 10_000, hold: float = 60.0):
        self.ttl, self.max_size, self.hold = ttl, max_size, hold
        self._items: dict[str, tuple[Principal, datetime, float]] = {}
        self._held: dict[str | PrincipalKey, float] = {}  # digest or principal → monotonic time the hold ends
        self._lock = threading.Lock()

    def get(self, digest: str) -> Principal | None:
        item = self._items.get(digest)
        if item is None:
            return None
        principal, expires_at, cached_until = item
        if time.monotonic() > cached_until or utcnow() >= expires_at:
            with self._lock:
                self._items.pop(digest, None)
            return None
        return principal

    def put(self, digest: str, principal: Principal, expires_at: datetime) -> None:
        with self._lock:
            if self._held:
                now = time.monotonic()
                for key in (digest, (principal.kind, principal.id)):
                    until = self._held.get(key)
                    if until is not None and until > now:
                        return
            if len(self._items) >= self.max_size:
                self._items.clear()
            self._items[digest] = (principal, expires_at, time.monotonic() + self.ttl)

    def forget(self, digests: Collection[str] = (), principals: Collection[PrincipalKey] = ()) -> set[PrincipalKey]:
        """Drop these tokens and every token of these principals (call it after the change committed); returns
        the principals affected (those given, and those of dropped digests that were cached)."""
        keys = set(principals)
        now = time.monotonic()
        affected = set(keys)
        with self._lock:
            for digest in digests:
                item = self._items.pop(digest, None)
                if item is not None:
                    affected.add((item[0].kind, item[0].id))
            if keys:
                stale = [d for d, (p, _, _) in self._items.items() if (p.kind, p.id) in keys]
                for digest in stale:
                    del self._items[digest]
            if len(self._held) > self.max_size:
                self._held = {k: t for k, t in self._held.items() if t > now}
            for key in (*digests, *keys):
                self._held[key] = now + self.hold
        return affected

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def revoke_tokens(
    session: Session, user_id: int | None = None, node_id: int | None = None, keep: str | None = None
) -> int:
    """Delete every token of one user or node (but the one whose digest is ``keep``); returns how many."""
    query = delete(Token).where(Token.user_id == user_id if user_id is not None else Token.node_id == node_id)
    if keep is not None:
        query = query.where(Token.token_hash != keep)
    return session.execute(query).rowcount or 0


def lookup_token(session: Session, digest: str) -> tuple[Principal, datetime] | None:
    """The principal behind a token digest, or None when unknown or expired."""
    token = session.scalar(select(Token).where(Token.token_hash == digest))
    if token is None:
        return None
    expires_at = as_utc(token.expires_at)
    if expires_at is None or expires_at <= utcnow():
        return None
    if token.user_id is not None:
        user = session.get(User, token.user_id)
        return (user_principal(user), expires_at) if user and not user.disabled else None
    node = session.get(Node, token.node_id) if token.node_id is not None else None
    return (node_principal(node), expires_at) if node and not node.disabled else None
