"""Request-scoped helpers shared by the routers: hub state, short transactions, the calling principal."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from nordfed.hub.auth import Principal, PrincipalKey, TokenCache, lookup_token, token_digest
from nordfed.hub.claims import Claimer
from nordfed.hub.db import HubDB
from nordfed.hub.dispatch import Dispatcher
from nordfed.hub.models import Collaboration, collaboration_organization
from nordfed.hub.schemas import MAX_ID
from nordfed.hub.updates import RunUpdater

_SNAPSHOT = {"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
_COLLAB_NAME = select(Collaboration.name).where(Collaboration.id == bindparam("id"))
_COLLAB_MEMBERS = select(collaboration_organization.c.organization_id).where(
    collaboration_organization.c.collaboration_id == bindparam("id")
)


@dataclass
class HubState:
    db: HubDB
    dispatcher: Dispatcher = field(default_factory=Dispatcher)
    tokens: TokenCache = field(default_factory=TokenCache)
    user_token_ttl: timedelta = timedelta(hours=12)
    node_token_ttl: timedelta = timedelta(hours=24)
    online_window: timedelta = timedelta(seconds=90)
    claimer: Claimer = field(init=False)
    updater: RunUpdater = field(init=False)
    collab_cache: dict[int, tuple[CollabInfo, float]] = field(default_factory=dict)
    collab_ttl: float = 30.0  # seconds; membership changes call forget_collaboration
    collab_held: dict[int, float] = field(default_factory=dict)  # id → monotonic time until reads are not cached

    def __post_init__(self) -> None:
        self.claimer = Claimer(self.db, self.dispatcher)
        self.updater = RunUpdater(self.db, self.dispatcher)

    def forget_tokens(self, digests: Collection[str] = (), principals: Collection[PrincipalKey] = ()) -> None:
        """After a revocation committed: drop the tokens from the cache and wake the affected nodes' parked long
        polls, which re-check their token and answer 401 at once."""
        affected = self.tokens.forget(digests=digests, principals=principals)
        self.dispatcher.notify("node", [i for kind, i in affected if kind == "node"])

    @contextmanager
    def tx(self) -> Iterator[Session]:
        """One short transaction: commit on success, roll back on error; duplicates become 409."""
        with _conflict_is_409(), self.db.sessions.begin() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """:meth:`tx` without the ORM, for the hot paths (a Session costs more CPU than their statements)."""
        with _conflict_is_409(), self.db.engine.begin() as con:
            yield con

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only transaction that sees one consistent snapshot (a task and its runs as of one instant).

        PostgreSQL's default READ COMMITTED takes a new snapshot per statement, so a task read before and its runs
        read after a concurrent update would disagree; a SQLite read transaction in WAL mode is one snapshot.
        """
        with self.db.read_sessions.begin() as session:
            if self.db.dialect == "postgresql":
                session.connection(execution_options=_SNAPSHOT)
            yield session

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """:meth:`snapshot` without the ORM."""
        with self.db.reader.connect() as con:
            if self.db.dialect == "postgresql":
                con = con.execution_options(**_SNAPSHOT)
            with con.begin():
                yield con

    def collaboration(self, db: Session | Connection, collaboration_id: int) -> CollabInfo:
        """A collaboration's id, name and member organizations (cached briefly); 404 when unknown."""
        cached = self.collab_cache.get(collaboration_id)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        name = db.execute(_COLLAB_NAME, {"id": collaboration_id}).scalar()
        if name is None:
            raise not_found("collaboration", collaboration_id)
        members = frozenset(db.execute(_COLLAB_MEMBERS, {"id": collaboration_id}).scalars())
        info = CollabInfo(collaboration_id, name, members)
        held = self.collab_held.get(collaboration_id)
        if held is None or held < time.monotonic():
            if len(self.collab_cache) > 10_000:
                self.collab_cache.clear()
            self.collab_cache[collaboration_id] = (info, time.monotonic() + self.collab_ttl)
        return info

    def forget_collaboration(self, collaboration_id: int, hold: float = 60.0) -> None:
        """After a membership change committed: drop the cached view and do not cache reads for ``hold`` seconds
        (a transaction whose snapshot predates the change could otherwise put the old membership back)."""
        now = time.monotonic()
        if len(self.collab_held) > 10_000:
            self.collab_held = {k: t for k, t in self.collab_held.items() if t > now}
        self.collab_held[collaboration_id] = now + hold
        self.collab_cache.pop(collaboration_id, None)


@contextmanager
def _conflict_is_409() -> Iterator[None]:
    try:
        yield
    except IntegrityError as exc:
        raise HTTPException(409, "conflicts with existing data (duplicate name or unknown reference)") from exc


@dataclass(frozen=True)
class CollabInfo:
    id: int
    name: str
    organization_ids: frozenset[int]


async def get_hub(request: Request) -> HubState:
    # async on purpose: FastAPI runs a plain ``def`` dependency in the thread pool, a thread hop per request
    return request.app.state.hub


Hub = Annotated[HubState, Depends(get_hub)]
PathId = Annotated[int, Path(ge=1, le=MAX_ID)]

_bearer = HTTPBearer(auto_error=False, description="token from POST /api/token or POST /api/token/node")


async def get_principal(
    hub: Hub, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    return await principal_for_token(hub, credentials.credentials if credentials is not None else None)


async def principal_for_token(hub: HubState, token: str | None) -> Principal:
    """Who holds ``token`` (cached look-up); 401 when missing, unknown, expired or revoked."""
    if not token:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    if len(token) > 200:
        raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
    digest = token_digest(token)
    principal = hub.tokens.get(digest)
    if principal is None:

        def load():
            with hub.db.read_sessions() as session:
                return lookup_token(session, digest)

        found = await hub.db.run(load)
        if found is None:
            raise HTTPException(401, "invalid or expired token", headers={"WWW-Authenticate": "Bearer"})
        principal = found[0]
        hub.tokens.put(digest, principal, found[1])
    return principal


async def get_user(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if principal.kind != "user":
        raise HTTPException(403, "this endpoint is for users; nodes may not call it")
    return principal


async def get_node(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if principal.kind != "node":
        raise HTTPException(403, "this endpoint is for nodes (use a node token from POST /api/token/node)")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
CurrentUser = Annotated[Principal, Depends(get_user)]
CurrentNode = Annotated[Principal, Depends(get_node)]


def not_found(kind: str, ident: int) -> HTTPException:
    return HTTPException(404, f"{kind} {ident} not found")


def forbidden(message: str) -> HTTPException:
    return HTTPException(403, message)
