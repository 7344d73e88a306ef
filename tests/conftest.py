"""Shared fixtures: CDM URLs for DuckDB (always) and PostgreSQL (when NORDFED_TEST_POSTGRES_URL is set)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_ENV = "NORDFED_TEST_POSTGRES_URL"


def _pg_base() -> str | None:
    return os.environ.get(PG_ENV) or None


@pytest.fixture
def duckdb_url(tmp_path) -> str:
    """A fresh, empty DuckDB file URL (SQLAlchemy style: four slashes for an absolute path)."""
    return f"duckdb:///{tmp_path / 'cdm.duckdb'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema on the test server, dropped afterwards.

    Skipped with a reason when NORDFED_TEST_POSTGRES_URL is unset; in CI (.ci/run sets it) an unreachable
    server fails the test loudly instead.
    """
    base = _pg_base()
    if base is None:
        pytest.skip(f"{PG_ENV} is not set (no PostgreSQL server configured)")
    import psycopg

    schema = f"nf_test_{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}schema={schema}"
    with psycopg.connect(base, autocommit=True) as con:
        con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["duckdb", "postgres"])
def cdm_url(request, tmp_path) -> Iterator[str]:
    """Run a test on DuckDB and on PostgreSQL."""
    if request.param == "duckdb":
        yield f"duckdb:///{tmp_path / 'cdm.duckdb'}"
    else:
        yield request.getfixturevalue("pg_url")
