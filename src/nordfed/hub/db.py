"""Hub persistence: engine and session factory for SQLite (default) or PostgreSQL.

PostgreSQL URLs may carry ``?schema=name`` (the house convention, as in ``open_cdm``): the hub then creates that
schema and pins ``search_path`` to it on every pooled connection, so several hubs or test runs can share a server.
The tables are brought to this nordfed's schema revision at open (Alembic: :mod:`nordfed.hub.migrations`).
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from nordfed.hub import migrations

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


def _sqlite_in_memory(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:") or "mode=memory" in url


def _sqlite_engine(url: str) -> Engine:
    memory = _sqlite_in_memory(url)
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
            if not dbapi_con.execute("PRAGMA page_count").fetchone()[0]:
                # a new file: deleted rows (results past their retention) can then give their pages back to the
                # file system (:func:`release_free_pages`); SQLite only takes this before the first table exists
                dbapi_con.execute("PRAGMA auto_vacuum=INCREMENTAL")
            _wal(dbapi_con)
        dbapi_con.execute("PRAGMA foreign_keys=ON")
        dbapi_con.execute("PRAGMA synchronous=NORMAL")

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # pragma: no cover - driver callback
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(_READ_ONLY) else "BEGIN IMMEDIATE")

    return engine


def _wal(dbapi_con: sqlite3.Connection, wait_s: float = 30.0) -> None:
    """Put the database in WAL mode (it stays so, in the file). Switching needs an exclusive lock, and SQLite
    answers "database is locked" at once rather than waiting when another connection is switching too (hubs
    starting together on a fresh file); so it is only done when needed, and retried."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if str(dbapi_con.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                dbapi_con.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def release_free_pages(engine: Engine) -> None:
    """Give a SQLite file's free pages back to the file system. Only a file with ``auto_vacuum=INCREMENTAL`` can:
    new hub files are made so; an older one switches with ``PRAGMA auto_vacuum=INCREMENTAL; VACUUM`` (hub stopped).
    PostgreSQL's autovacuum does the same by itself."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as con:
        if con.exec_driver_sql("PRAGMA auto_vacuum").scalar() == 2:  # INCREMENTAL
            con.commit()
            # executescript steps the pragma to the end; one execute() frees a single page per step
            con.connection.driver_connection.executescript("PRAGMA incremental_vacuum;")


def _postgres_engine(url: str, create: bool) -> Engine:
    base, schema = _split_schema(url)
    scheme, rest = base.split("://", 1)
    if scheme in ("postgresql", "postgres"):
        base = f"postgresql+psycopg://{rest}"
    connect_args = {"options": f"-csearch_path={schema}"} if schema else {}
    engine = create_engine(
        base, connect_args=connect_args, pool_size=20, max_overflow=30, pool_pre_ping=False, pool_recycle=3600
    )
    if schema and create:
        with engine.begin() as con:
            con.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    return engine


def _engine(url: str, create: bool) -> tuple[Engine, str]:
    if not isinstance(url, str) or "://" not in url:
        raise HubDBError(f"hub database URL {url!r} is not a URL: use sqlite:///hub.sqlite or postgresql://host/db")
    scheme = url.split("://", 1)[0]
    if scheme.startswith("sqlite"):
        return _sqlite_engine(url), "sqlite"
    if scheme.startswith("postgres"):
        return _postgres_engine(url, create), "postgresql"
    raise HubDBError(f"unsupported hub database URL {url!r}: use sqlite:///hub.sqlite or postgresql://host/db")


def _upgrade(engine: Engine) -> migrations.Upgraded:
    try:
        return migrations.upgrade(engine)
    except migrations.SchemaVersionError as exc:
        engine.dispose()
        raise HubDBError(str(exc)) from exc


def open_hub_db(url: str, create: bool = True) -> HubDB:
    """Open the hub database at ``url``; by default create its tables or upgrade them to this nordfed's schema
    revision (:func:`nordfed.hub.migrations.upgrade`). ``create=False`` leaves the database as it is.
    :class:`HubDBError` for an unusable URL or a database this nordfed cannot bring to its schema."""
    engine, dialect = _engine(url, create)
    if create:
        _upgrade(engine)
    reader = engine.execution_options(**{_READ_ONLY: True})
    return HubDB(engine, sessionmaker(engine, expire_on_commit=False), dialect, reader,
                 sessionmaker(reader, expire_on_commit=False))


def upgrade_hub_db(url: str) -> migrations.Upgraded:
    """Create or upgrade the hub database at ``url`` to head, as :func:`open_hub_db` does, and say what was done."""
    engine, _ = _engine(url, create=True)
    try:
        return _upgrade(engine)
    finally:
        engine.dispose()


def hub_db_status(url: str) -> migrations.SchemaStatus:
    """The schema revision of the hub database at ``url`` against this nordfed's head; changes nothing."""
    engine, dialect = _engine(url, create=False)  # connects lazily
    database = engine.url.database
    if dialect == "sqlite" and not _sqlite_in_memory(url) and database and not Path(database).exists():
        raise HubDBError(f"no hub database at {database}")  # rather than leave an empty file behind
    try:
        return migrations.status(engine.execution_options(**{_READ_ONLY: True}))
    finally:
        engine.dispose()
