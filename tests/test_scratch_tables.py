"""Scratch population tables on PostgreSQL (``?scratch=``): a table left by a killed extraction is dropped by the
next one; a live extraction's table never is, whichever connection sweeps."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pandas as pd
import psycopg
import pytest

from nordfed.features import records
from nordfed.features.covariates import CovariateSettings, extract_covariates, population_rows
from nordfed.omop.scratch import lock_key
from nordfed.omop.store import CDMUrl, open_cdm

POP = pd.DataFrame({"row_id": [10, 20, 30], "subject_id": [1, 2, 3],
                    "cohort_start_date": pd.to_datetime(["2020-01-01", "2020-06-01", "2021-01-01"])})

#: registers a population on the scratch URL in argv[1], says which table and backend, then waits to be killed
CHILD = """
import sys, time
import pandas as pd
from nordfed.features import records
from nordfed.features.covariates import population_rows
from nordfed.omop.store import open_cdm

pop = pd.DataFrame({"row_id": [1], "subject_id": [1], "cohort_start_date": pd.to_datetime(["2020-01-01"])})
cdm = open_cdm(sys.argv[1], create=True)
p = records.Population(pop, population_rows(pop)[1])
records.register(cdm, p)
print(p.table.split(".")[-1], cdm.raw_connection.info.backend_pid, flush=True)
time.sleep(600)
"""


@pytest.fixture
def scratch(pg_url) -> Iterator[tuple[str, str, psycopg.Connection]]:
    """``(CDM URL with a scratch schema, that schema, an observer connection)``; the schema is dropped after."""
    name = f"{CDMUrl.parse(pg_url).schema}_scratch"
    base = CDMUrl.parse(pg_url).target
    with psycopg.connect(base, autocommit=True) as observer:
        try:
            yield f"{pg_url}&scratch={name}", name, observer
        finally:
            observer.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def population() -> records.Population:
    return records.Population(POP, population_rows(POP)[1])


def tables(observer: psycopg.Connection, schema: str) -> set[str]:
    rows = observer.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                            [schema]).fetchall()
    return {r[0] for r in rows}


def advisory_locks(observer: psycopg.Connection, pid: int) -> int:
    ((n,),) = observer.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = %s",
                               [pid]).fetchall()
    return n


def unqualified(pop: records.Population) -> str:
    return pop.table.rsplit(".", 1)[-1]


def test_table_of_a_killed_extraction_is_dropped_by_the_next_register(scratch):
    url, schema, observer = scratch
    child = subprocess.Popen([sys.executable, "-c", CHILD, url], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = child.stdout.readline().split()
        assert len(line) == 2, f"the child did not register a population (exit {child.poll()})"
        orphan, pid = line[0], int(line[1])
        assert orphan in tables(observer, schema) and advisory_locks(observer, pid) == 1
    finally:
        child.send_signal(signal.SIGKILL)  # no finally, no atexit: what an OOM kill or power loss leaves
        child.wait()
        child.stdout.close()
    # the server notices the closed socket and ends the backend, releasing its locks
    deadline = time.monotonic() + 30
    while observer.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchall():
        assert time.monotonic() < deadline, "the killed client's backend is still there"
        time.sleep(0.05)
    observer.execute(f'CREATE TABLE "{schema}".notes (x int)')  # not a population table: never touched
    observer.execute(f'CREATE TABLE "{schema}".nf_population_keep (x int)')
    assert orphan in tables(observer, schema)  # really left behind

    with open_cdm(url, create=True) as cdm:
        pop = population()
        records.register(cdm, pop)
        assert tables(observer, schema) == {unqualified(pop), "notes", "nf_population_keep"}
        records.unregister(cdm, pop)
    assert tables(observer, schema) == {"notes", "nf_population_keep"}


def test_table_of_a_live_extraction_is_kept(scratch):
    url, schema, observer = scratch
    with open_cdm(url, create=True) as first, open_cdm(url, create=True) as second:
        live = population()
        records.register(first, live)
        other = population()
        records.register(second, other)  # its sweep finds the first's lock taken
        assert tables(observer, schema) == {unqualified(live), unqualified(other)}
        # the same connection's sweep: advisory locks are re-entrant, so its own live table must be skipped, not
        # "locked" again and dropped
        again = population()
        records.register(first, again)
        assert tables(observer, schema) == {unqualified(live), unqualified(other), unqualified(again)}
        for cdm, pop in ((first, live), (second, other), (first, again)):
            records.unregister(cdm, pop)
    assert tables(observer, schema) == set()


def test_table_locked_by_another_session_is_kept(scratch):
    # any session holding the table's key (as a live nordfed does) keeps it, whatever created the table
    url, schema, observer = scratch
    name = f"nf_population_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(CDMUrl.parse(url).target, autocommit=True) as owner:
        owner.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        owner.execute("SELECT pg_advisory_lock(%s::bigint)", [lock_key(name)])
        owner.execute(f'CREATE UNLOGGED TABLE "{schema}".{name} (k int)')
        with open_cdm(url, create=True) as cdm:
            pop = population()
            records.register(cdm, pop)
            records.unregister(cdm, pop)
            assert tables(observer, schema) == {name}
    # the owner's connection closed without dropping it: now it is an orphan
    with open_cdm(url, create=True) as cdm:
        pop = population()
        records.register(cdm, pop)
        assert tables(observer, schema) == {unqualified(pop)}
        records.unregister(cdm, pop)
    assert tables(observer, schema) == set()


def test_unregister_drops_the_table_and_releases_its_lock(scratch):
    url, schema, observer = scratch
    with open_cdm(url, create=True) as cdm:
        pid = cdm.raw_connection.info.backend_pid
        pop = population()
        records.register(cdm, pop)
        assert tables(observer, schema) == {unqualified(pop)} and advisory_locks(observer, pid) == 1
        records.unregister(cdm, pop)
        assert tables(observer, schema) == set() and advisory_locks(observer, pid) == 0
        # a whole extraction (on an empty CDM) does the same
        data = extract_covariates(cdm, POP, CovariateSettings())
        assert data.matrix.shape[0] == len(POP)
        assert tables(observer, schema) == set() and advisory_locks(observer, pid) == 0


def test_orphan_that_cannot_be_dropped_does_not_fail_the_extraction(scratch, caplog):
    # another role's orphan: this role may not drop it, so it is left (with a warning) and the extraction goes on
    url, schema, observer = scratch
    role = f"nf_test_role_{uuid.uuid4().hex[:8]}"
    orphan = f"nf_population_{uuid.uuid4().hex[:12]}"
    observer.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    observer.execute(f'CREATE UNLOGGED TABLE "{schema}".{orphan} (k int)')
    observer.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        observer.execute(f'GRANT USAGE, CREATE ON SCHEMA "{schema}" TO "{role}"')
        # CREATE SCHEMA IF NOT EXISTS checks the privilege even when the schema exists
        (db,) = observer.execute("SELECT current_database()").fetchone()
        observer.execute(f'GRANT CREATE ON DATABASE "{db}" TO "{role}"')
        server = urlsplit(CDMUrl.parse(url).target)
        role_target = f"postgresql://{role}@{server.netloc.rsplit('@', 1)[-1]}{server.path}"
        try:
            psycopg.connect(role_target).close()
        except psycopg.OperationalError as exc:
            pytest.skip(f"cannot log in as a second role on the test server: {exc}")
        with open_cdm(f"{role_target}?scratch={schema}") as cdm:
            pid = cdm.raw_connection.info.backend_pid
            pop = population()
            with caplog.at_level(logging.WARNING, logger="nordfed.omop.scratch"):
                records.register(cdm, pop)
            assert tables(observer, schema) == {orphan, unqualified(pop)}
            records.unregister(cdm, pop)
            assert advisory_locks(observer, pid) == 0  # the sweep released the orphan's lock it had taken
        assert any(orphan in r.getMessage() for r in caplog.records)
        assert tables(observer, schema) == {orphan}
    finally:
        observer.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        observer.execute(f'DROP OWNED BY "{role}"')
        observer.execute(f'DROP ROLE "{role}"')
