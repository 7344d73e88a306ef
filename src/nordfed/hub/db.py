"""Hub persistence: engine and session factory for SQLite (default) or PostgreSQL.

PostgreSQL URLs may carry ``?schema=name`` (the house convention, as in ``open_cdm``): the hub then creates that
schema and pins ``search_path`` to it on every pooled connection, so several hubs or test runs can share a server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from nordfed.hub.models import Base

_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
T = TypeVar("T")


class HubDBError(ValueError):
    """The hub database URL is unusable."""


@dataclass(frozen=True)
class HubDB:
    engine: Engine
    sessions: sessionmaker[Session]
    dialect: str
    #: for reads only: on SQLite a plain (deferred) BEGIN, so readers never queue behind the writer lock
    reader: Engine
    read_sessions: sessionmaker[Session]

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Blocking database work from async code: inline for SQLite, whose short transactions cost less than a
        hop to a worker thread and back (about 1 ms here); in the thread pool for a server (network round trips).
        """
        if self.dialect == "sqlite":
            return fn(*args)
        return await run_in_threadpool(fn, *args)


def _split_schema(url: str) -> tuple[str, str | None]:
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    schema = query.pop("schema", [None])[0]
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise HubDBError(f"invalid schema name {schema!r} in hub database URL")
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True))), schema


_READ_ONLY = "nordfed_read_only"


def _sqlite_engine(url: str) -> Engine:
    memory = url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url
    kwargs: dict = {"connect_args": {"check_same_thread": False, "timeout": 30}}
    if memory:
        kwargs["poolclass"] = StaticPool
    engine = create_engine(url, **kwargs)

    # pysqlite opens transactions lazily and cannot upgrade a read snapshot to a write lock without SQLITE_BUSY;
    # BEGIN IMMEDIATE serialises writers up front (short transactions, busy timeout above) so nothing fails under load.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_con, _record) -> None:  # pragma: no cover - driver callback
        dbapi_con.isolation_level = None
        if not memory:
            dbapi_con.execute("PRAGMA journal_mode=WAL")
        dbapi_con.execute("PRAGMA foreign_keys=ON")
        dbapi_con.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # pragma: no cover - driver callback
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def _postgres_engine(url: str) -> Engine:
    base, schema = _split_schema(url)
    scheme, rest = base.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        base = f"postgresql+psycopg://{rest}"
    connect_args = {"options": f"-csearch_path={schema}"} if schema else {}
    engine = create_engine(
        base, connect_args=connect_args, pool_size=20, max_overflow=30, pool_pre_ping=False, pool_recycle=3600
    )
    if schema:
        with engine.begin() as con:
            con.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    return engine


def open_hub_db(url: str, create: bool = True) -> HubDB:
    """Open (and by default create the tables of) the hub database at ``url``."""
    if not isinstance(url, str) or "://" not in url:
        raise HubDBError(f"hub database URL {url!r} is not a URL: use sqlite:///hub.sqlite or postgresql://host/db")
    scheme = url.split("://", 1)[0]
    if scheme.startswith("sqlite"):
        engine, dialect = _sqlite_engine(url), "sqlite"
    elif scheme.startswith("postgres"):
        engine, dialect = _postgres_engine(url), "postgresql"
    else:
        raise HubDBError(f"unsupported hub database URL {url!r}: use sqlite:///hub.sqlite or postgresql://host/db")
    if create:
        Base.metadata.create_all(engine)
    reader = engine.execution_options(**{_READ_ONLY: True})
    return HubDB(engine, sessionmaker(engine, expire_on_commit=False), dialect, reader,
                 sessionmaker(reader, expire_on_commit=False))
