"""Work tables in a PostgreSQL ``scratch`` schema (the CDM URL's ``?scratch=``) that never outlive their owner.

A work table is named ``<prefix>_<12 hex digits>``; while it exists, the connection that made it holds a
session-level advisory lock keyed by those digits. PostgreSQL releases such a lock when the connection ends,
however it ends (a killed process included), so a table whose lock is free is an orphan: :func:`claim` drops
those before it names a new table.

>>> name = claim(con, "work", "nf_population")   # doctest: +SKIP
>>> release(con, "work", name)                    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from typing import Any

log = logging.getLogger(__name__)

#: the high bits of the keys ("nf"), keeping them apart from other applications' bigint advisory locks
_LOCK_SPACE = 0x6E66 << 48


def _pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"{re.escape(prefix)}_[0-9a-f]{{12}}")


def lock_key(name: str) -> int:
    """The advisory lock key of a work table (its unqualified name, ``<prefix>_<12 hex digits>``)."""
    return _LOCK_SPACE | int(name.rsplit("_", 1)[-1], 16)


def _try_lock(con: Any, key: int) -> bool:
    # session level, not pg_try_advisory_xact_lock: the connection runs in autocommit, so a transaction-level
    # lock would end with this very statement
    ((taken,),) = con.execute("SELECT pg_try_advisory_lock(%s::bigint)", [key]).fetchall()
    return bool(taken)


def _unlock(con: Any, key: int) -> None:
    con.execute("SELECT pg_advisory_unlock(%s::bigint)", [key])


def claim(con: Any, schema: str, prefix: str) -> str:
    """A new work table name in ``schema`` (created if missing), its lock held by ``con``; orphans are dropped
    first. Create the table next, and :func:`release` it when done."""
    con.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    sweep(con, schema, prefix)
    # the lock before the table: a sweep that sees the table must find it taken
    while True:
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        if _try_lock(con, lock_key(name)):
            return name


def release(con: Any, schema: str, name: str) -> None:
    """Drop a claimed work table, then its lock (while the table exists, its lock says it is in use)."""
    key = lock_key(name)
    try:
        con.execute(f'DROP TABLE IF EXISTS "{schema}"."{name}"')
    except BaseException:
        # released all the same: the next sweep drops the table; in a failed transaction this fails too, and the
        # lock goes with the connection; the drop's error is the one to report
        with contextlib.suppress(Exception):
            _unlock(con, key)
        raise
    _unlock(con, key)


def sweep(con: Any, schema: str, prefix: str) -> None:
    """Drop the ``prefix`` work tables in ``schema`` whose owners are gone: their lock is free.

    A live owner holds its table's lock, so taking it fails; a lock this connection holds itself would be taken
    again (advisory locks are re-entrant), so those tables are skipped. Taking the lock before the drop also keeps
    two sweeps from dropping one table at once. A table that cannot be dropped (another role's, or locked by
    someone else) is left for a later sweep rather than failing the caller."""
    import psycopg

    pattern = _pattern(prefix)
    names = con.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = %s AND c.relkind = 'r'", [schema]).fetchall()
    # a bigint key is shown as its high and low 32 bits (objsubid 1 marks the bigint key space)
    mine = {key for (key,) in con.execute(
        "SELECT (classid::bigint << 32) | objid::bigint FROM pg_locks "
        "WHERE locktype = 'advisory' AND objsubid = 1 AND pid = pg_backend_pid()").fetchall()}
    for (name,) in names:
        if not pattern.fullmatch(name):
            continue
        key = lock_key(name)
        if key in mine or not _try_lock(con, key):
            continue
        try:
            # a savepoint when the caller is in a transaction: a failed drop must not abort it
            with con.transaction():
                con.execute("SET LOCAL lock_timeout = '2s'")  # not behind, say, a running pg_dump
                con.execute(f'DROP TABLE IF EXISTS "{schema}"."{name}"')
        except psycopg.Error as exc:
            log.warning("could not drop the orphaned work table %s.%s: %s", schema, name, exc)
        finally:
            _unlock(con, key)
