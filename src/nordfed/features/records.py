"""Engine I/O for covariate extraction: the population table, and each domain's window records as numpy arrays.

Two ways to get a domain's records, with identical results (both are tested):

- **join** (any engine): the engine joins the population and filters the windows (:meth:`Domain.records_sql`).
- **scan** (DuckDB, each person at most once in the population): the engine only scans the table's columns
  with constant date bounds, streamed as Arrow batches; the join to the population is a lookup by
  ``person_id`` in a compiled loop (:func:`nordfed.features.kernels.join`). A hash join over every record
  costs several times the scan itself; the lookup does not.
  Demographics scan ``person`` the same way, and Charlson's index comes from the condition scan (reaching back
  to the first record) rather than from a join of its own.

:func:`collect` runs the engine part of each analysis in a worker thread one step ahead of the numpy part:
both release the GIL, so on two cores the next table's scan overlaps assembling the last one's entries.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from nordfed.features import analyses as A
from nordfed.features import assemble, kernels
from nordfed.features.analyses import Domain
from nordfed.features.assemble import Entries
from nordfed.omop import scratch
from nordfed.omop.store import CDM

if TYPE_CHECKING:
    from nordfed.features.covariates import CovariateSettings

_BATCH = 1 << 17  # rows per Arrow batch: small enough that the per-batch arrays stay in cache
_FLOATS = frozenset({"value", "covariate_value"})
_EPOCH = np.datetime64("1970-01-01", "D")
#: index day of a person outside the population: no record's window test can pass
_ABSENT = -(1 << 30)
_NO_DAYS = np.zeros(0, np.int32)


class Population:
    """The population rows with their matrix row ``k``; when each person occurs once (``unique_persons``),
    per person the row's ``k`` and index day for the scan's in-memory join (tables indexed by ``person_id``
    when the ids are compact, else by a hash index's position)."""

    def __init__(self, population: pd.DataFrame, k: np.ndarray, dense: bool | None = None):
        dates = population["cohort_start_date"]
        if not pd.api.types.is_datetime64_dtype(dates):
            dates = pd.to_datetime(dates)
        dates = dates.to_numpy().astype("datetime64[D]")
        if np.isnat(dates).any():
            first = int(np.flatnonzero(np.isnat(dates))[0])
            raise ValueError(f"population: cohort_start_date is missing in row {first}")
        self.k = k.astype(np.int32)
        self.row_id = population["row_id"].to_numpy(np.int64)
        self.subject_id = population["subject_id"].to_numpy(np.int64)
        self.index_day = (dates - _EPOCH).astype(np.int32)
        self.person_min = int(self.subject_id.min()) if len(self.k) else 0
        self.person_max = int(self.subject_id.max()) if len(self.k) else -1
        span = self.person_max - self.person_min + 1
        self._index: pd.Index | None = None
        self.offset = 0
        self.table = A.POP  # the population table's name (:func:`register` may give it one of its own)
        self.scratch: tuple[str, str] | None = None  # its schema and name when it is a scratch table
        if dense if dense is not None else span < 4 * len(self.k) + (1 << 20):
            # compact ids: arrays indexed by person_id beat hashing; from id 0 when that at most doubles them,
            # so a scanned person_id column is its own index (no subtraction over every record)
            self.offset = 0 if 0 <= self.person_min <= span else self.person_min
            at = self.subject_id - self.offset
            self.unique_persons = int(np.bincount(at).max(initial=0)) <= 1
            self.k_of = np.full(self.person_max - self.offset + 1, -1, dtype=np.int32)
            self.day_of = np.full(len(self.k_of), _ABSENT, dtype=np.int32)
            self.k_of[at] = self.k
            self.day_of[at] = self.index_day
        else:
            self._index = pd.Index(self.subject_id)
            self.unique_persons = bool(self._index.is_unique)
            # position -1 (not found) reads the trailing sentinel
            self.k_of = np.append(self.k, np.int32(-1))
            self.day_of = np.append(self.index_day, np.int32(_ABSENT))

    @property
    def dense(self) -> bool:
        """Whether ``person_id - offset`` is the slot (else :meth:`slot` looks it up)."""
        return self._index is None

    def slot(self, person_id: np.ndarray) -> np.ndarray:
        """Each person's position in ``k_of`` and ``day_of`` (``person_id`` within ``person_min .. person_max``)."""
        if self._index is None:
            return person_id - self.offset if self.offset else person_id
        return self._index.get_indexer(person_id)

    def date(self, day: int) -> str:
        return str(_EPOCH + np.timedelta64(day, "D"))


def scan_path(cdm: CDM, pop: Population) -> bool:
    """Whether the scan path serves ``pop`` (DuckDB, each person in it once); otherwise SQL joins the population
    table :func:`register` makes."""
    return cdm.dialect == "duckdb" and pop.unique_persons


def register(cdm: CDM, pop: Population) -> None:
    """Make the population ``(k, row_id, subject_id, cohort_start_date)`` a table the covariate SQL joins, named
    in ``pop.table``: temporary, or on PostgreSQL with a ``scratch`` schema in the CDM URL an unlogged table of its
    own there (PostgreSQL never scans a temporary table in parallel: at 200 000 persons the joins took twice as
    long on two cores).

    A scratch table is claimed through :mod:`nordfed.omop.scratch`, so one left by a killed process is dropped by
    the next extraction on that schema."""
    table = pa.table({"k": pa.array(pop.k), "row_id": pa.array(pop.row_id), "subject_id": pa.array(pop.subject_id),
                      "cohort_start_date": pa.array(pop.index_day, pa.int32()).cast(pa.date32())})
    con = cdm.raw_connection
    if cdm.dialect == "duckdb":
        # a real (temporary) table gives the joins statistics an Arrow scan lacks
        con.register("nf_population_arrow", table)
        try:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {A.POP} AS SELECT * FROM nf_population_arrow")
        finally:
            con.unregister("nf_population_arrow")
        return
    columns = "(k INTEGER, row_id BIGINT, subject_id BIGINT, cohort_start_date DATE)"
    schema = cdm.location.scratch
    if schema:  # a name of its own: two extractions at once must not share it
        name = scratch.claim(con, schema, A.POP)
        pop.scratch = (schema, name)
        pop.table = f'"{schema}".{name}'
    try:
        if pop.scratch:
            con.execute(f"CREATE UNLOGGED TABLE {pop.table} {columns}")
        else:
            con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {A.POP} {columns}")
            con.execute(f"TRUNCATE {A.POP}")
        text = io.BytesIO()
        pacsv.write_csv(table, text, pacsv.WriteOptions(include_header=False))  # one COPY, no Python tuple per row
        with con.cursor() as cur, cur.copy(f"COPY {pop.table} (k, row_id, subject_id, cohort_start_date) FROM "
                                           "STDIN (FORMAT CSV)") as cp:
            cp.write(text.getbuffer())
        con.execute(f"ANALYZE {pop.table}")
    except BaseException:
        # the caller only unregisters a registered population
        with contextlib.suppress(Exception):
            unregister(cdm, pop)
        raise


def unregister(cdm: CDM, pop: Population) -> None:
    if pop.scratch:
        scratch.release(cdm.raw_connection, *pop.scratch)
    else:
        cdm.raw_connection.execute(f"DROP TABLE IF EXISTS {pop.table}")


def _numpy(col: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """NULL → NaN for floats, 0 for integers (0 is 'no concept' in OMOP); dates as days since 1970."""
    if pa.types.is_date32(col.type):
        col = col.cast(pa.int32())
    if col.null_count:
        col = pc.fill_null(col, float("nan") if pa.types.is_floating(col.type) else 0)
    return col.to_numpy()


def _relation(cdm: CDM, sql: str) -> Any:
    (stmt,) = cdm.sql(sql)
    return cdm.raw_connection.sql(stmt)


def fetch(cdm: CDM, sql: str) -> dict[str, np.ndarray]:
    """Columns of a result as numpy arrays (through Arrow on every engine: no per-row Python objects)."""
    table = cdm.arrow(sql)
    return {name: _numpy(col) for name, col in zip(table.column_names, table.columns, strict=True)}


def _batches(cdm: CDM, sql: str) -> Iterator[dict[str, np.ndarray]]:
    rel = _relation(cdm, sql)
    reader = rel.to_arrow_reader(_BATCH) if hasattr(rel, "to_arrow_reader") else rel.fetch_arrow_reader(_BATCH)
    for batch in reader:
        yield {name: _numpy(col) for name, col in zip(batch.schema.names, batch.columns, strict=True)}


def _scan(cdm: CDM, pop: Population, domain: Domain, start_day: int | None, end_day: int) -> dict[str, np.ndarray]:
    """The join path's records, from a streamed scan joined in memory (see the module docstring);
    ``start_day`` None: every record up to the window end."""
    since = None if start_day is None else pop.date(int(pop.index_day.min()) + start_day)
    sql = domain.scan_sql(pop.date(int(pop.index_day.max()) + end_day), since, pop.person_min, pop.person_max)
    # the kept rows go straight into arrays as long as the table (no parts to concatenate); only the pages
    # written are ever touched, so the unused tail costs address space, not memory
    ((capacity,),) = cdm.raw_connection.execute(f"SELECT count(*) FROM {domain.table}").fetchall()
    out: dict[str, np.ndarray] = {}
    at = 0
    offset, dense = pop.offset, pop.dense
    for cols in _batches(cdm, sql):
        person = cols.pop("person_id")
        first = cols.pop("first_date")
        last = cols.pop("last_date", _NO_DAYS)
        concept = cols.pop("concept_id")
        if not out:
            out = {name: np.empty(max(capacity, len(person)), dtype=dtype)
                   for name, dtype in (("k", np.int32), ("day", np.int32), ("concept_id", concept.dtype),
                                       *((n, a.dtype) for n, a in cols.items()))}
        elif at + len(person) > len(out["k"]):  # the table grew since it was counted
            out = {name: np.concatenate([a[:at], np.empty(at + len(person), dtype=a.dtype)])
                   for name, a in out.items()}
        rows = np.empty(len(person), dtype=np.int64)
        n = kernels.join(person if dense else pop.slot(person), first, last, concept, pop.k_of, pop.day_of,
                         offset if dense else 0, -(1 << 30) if start_day is None else start_day, end_day,
                         start_day is not None, out["k"], out["day"], out["concept_id"], rows, at)
        rows = rows[:n]
        for name, values in cols.items():
            np.take(values, rows, out=out[name][at:at + n])
        at += n
    if not out:
        names = ["k", "day", "concept_id", *(alias for alias, _ in domain.extra)]
        return {n: np.zeros(0, dtype=np.float64 if n in _FLOATS else np.int64) for n in names}
    return {name: a[:at] for name, a in out.items()}


def demographics(cdm: CDM, pop: Population) -> dict[str, np.ndarray]:
    """``k, gender_concept_id, year_of_birth, year, month`` (of the index date) per population row with a person."""
    if not scan_path(cdm, pop):
        return fetch(cdm, A.demographics_sql(pop.table))
    parts: list[tuple[np.ndarray, ...]] = []
    for cols in _batches(cdm, A.persons_sql(pop.person_min, pop.person_max)):
        slot = pop.slot(cols["person_id"])
        k = pop.k_of.take(slot)
        found = np.flatnonzero(k >= 0)
        parts.append((k.take(found), pop.day_of.take(slot.take(found)), cols["gender_concept_id"].take(found),
                      cols["year_of_birth"].take(found)))
    if not parts:
        return {n: np.zeros(0, dtype=np.int32) for n in ("k", "gender_concept_id", "year_of_birth", "year", "month")}
    k, day, gender, born = (np.concatenate(c) for c in zip(*parts, strict=True))
    # calendar fields per distinct day (a few thousand), then looked up: numpy's date conversion is per element
    lo = int(day.min()) if len(day) else 0
    dates = np.arange(lo, int(day.max()) + 1 if len(day) else lo, dtype=np.int64).astype("datetime64[D]")
    offset = day - lo
    year = (dates.astype("datetime64[Y]").astype(np.int32) + 1970).take(offset)
    month = (dates.astype("datetime64[M]").astype(np.int32) % 12 + 1).take(offset)
    return {"k": k, "gender_concept_id": gender, "year_of_birth": born, "year": year, "month": month}


def records(cdm: CDM, pop: Population, domain: Domain, start_day: int, end_day: int) -> dict[str, np.ndarray]:
    """``k, concept_id, day, *extra`` of ``domain``'s records in the window ``start_day .. end_day``."""
    if scan_path(cdm, pop):
        return _scan(cdm, pop, domain, start_day, end_day)
    return fetch(cdm, domain.records_sql(start_day, end_day, pop.table))


def collect(cdm: CDM, pop: Population, s: CovariateSettings, entries: Entries) -> None:
    """Run each domain's query once (all its windows) and turn the records into covariate entries."""
    if cdm.dialect != "duckdb":
        _run(_steps(cdm, pop, s, entries), threaded=False)
        return
    # no result here is ordered; keeping insertion order would serialise materialising the records
    con = cdm.raw_connection
    (preserve,) = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()
    con.execute("SET preserve_insertion_order = false")
    try:
        _run(_steps(cdm, pop, s, entries), threaded=True)
    finally:
        con.execute(f"SET preserve_insertion_order = {bool(preserve)}")


#: an analysis step: the engine part (a query and its in-memory join) and the numpy part using its records
Step = tuple[Callable[[], dict[str, np.ndarray]], Callable[[dict[str, np.ndarray]], None]]


def _run(steps: list[Step], threaded: bool) -> None:
    """Each step's engine part, then its numpy part. Threaded, the engine parts run in order in one worker
    thread (one connection user at a time), a step ahead of the numpy parts here: DuckDB, numpy and the kernels
    release the GIL, so the scan of the next table overlaps turning the last one's records into entries."""
    if not threaded:
        for query, use in steps:
            use(query())
        return
    with ThreadPoolExecutor(1, thread_name_prefix="nordfed-covariates") as engine:
        ahead = engine.submit(steps[0][0]) if steps else None
        for i, (_, use) in enumerate(steps):
            assert ahead is not None
            got = ahead.result()
            ahead = engine.submit(steps[i + 1][0]) if i + 1 < len(steps) else None
            use(got)
            del got  # release the records before the next step's arrive


def _steps(cdm: CDM, pop: Population, s: CovariateSettings, entries: Entries) -> list[Step]:
    """The analyses' steps, the ones with most numpy work first (so it overlaps the later scans)."""
    end = s.end_days
    steps: list[Step] = []
    if s.demographics():
        steps.append((partial(demographics, cdm, pop), partial(_demographics, entries, s.demographics())))
    wins = s.windows("measurement")
    if s.measurement_value_long_term:
        # one pass serves the presence windows and the last value
        start = min([w[0] for w in wins] + [s.long_term_start_days])
        steps.append((partial(records, cdm, pop, A.MEASUREMENT_VALUES, start, end),
                      partial(_measurements, entries, wins, s.long_term_start_days)))
    elif wins:
        steps.append((partial(records, cdm, pop, A.DOMAINS["measurement"], min(w[0] for w in wins), end),
                      partial(_presence, entries, wins)))
    # on the scan path, Charlson's index comes from the condition records (its own query would join the
    # population with every condition again)
    charlson_scan = s.charlson_index and scan_path(cdm, pop)
    wins = s.windows("condition")
    if wins or charlson_scan:
        start = min(w[0] for w in wins) if wins else end
        steps.append((partial(_condition_records, cdm, pop, start, end, bool(wins), charlson_scan),
                      partial(_conditions, entries, len(pop.k), wins, start, end)))
    wins = s.windows("drug")
    if wins:
        steps.append((partial(_drug_records, cdm, pop, min(w[0] for w in wins), end), partial(_drugs, entries, wins)))
    for domain in ("procedure", "observation"):
        wins = s.windows(domain)
        if wins:
            steps.append((partial(records, cdm, pop, A.DOMAINS[domain], min(w[0] for w in wins), end),
                          partial(_presence, entries, wins)))
    wins = s.windows("visit")
    if wins:
        steps.append((partial(records, cdm, pop, A.DOMAINS["visit"], min(w[0] for w in wins), end),
                      partial(_visit_counts, entries, wins)))
    if s.charlson_index and not charlson_scan:
        steps.append((partial(fetch, cdm, A.charlson_sql(pop_table=pop.table)),
                      lambda r: entries.add_ids(r["k"], r["covariate_id"], r["covariate_value"])))
    return steps


def _demographics(entries: Entries, analyses: list[int], d: dict[str, np.ndarray]) -> None:
    assemble.demographics(entries, d["k"], d["gender_concept_id"], d["year_of_birth"], d["year"], d["month"],
                          analyses)


def _condition_records(cdm: CDM, pop: Population, start_day: int, end_day: int, presence: bool,
                       charlson: bool) -> dict[str, np.ndarray]:
    """The condition records; with Charlson's categories (when the vocabulary has their concepts), every one
    up to the index date or the window end, with the categories' concepts."""
    cats = fetch(cdm, A.charlson_concepts_sql()) if charlson else {}
    if not (cats and len(cats["concept_id"])):
        return records(cdm, pop, A.DOMAINS["condition"], start_day, end_day) if presence else {}
    r = _scan(cdm, pop, A.DOMAINS["condition"], None, max(end_day, 0))
    return {**r, "cat": cats["cat"], "cat_weight": cats["weight"], "cat_concept": cats["concept_id"]}


def _conditions(entries: Entries, n_rows: int, wins: list[tuple[int, int]], start_day: int, end_day: int,
                r: dict[str, np.ndarray]) -> None:
    if not r:
        return
    k, code, concepts, day = r["k"], *assemble.encode(r["concept_id"]), r["day"]
    if "cat" in r:
        assemble.charlson(entries, n_rows, k, code, concepts, day, r["cat"], r["cat_weight"], r["cat_concept"])
        if not wins:
            return
        # back to the windows' records, and to the concepts they have (the covariates)
        inside = day >= start_day
        inside &= day <= end_day
        rows = np.flatnonzero(inside)
        k, code, day = k.take(rows), code.take(rows), day.take(rows)
        code, present = assemble.encode(code)
        concepts = concepts.take(present)
    assemble.windows(entries, k, code, concepts, day, wins)


def _presence(entries: Entries, wins: list[tuple[int, int]], r: dict[str, np.ndarray]) -> None:
    assemble.windows(entries, r["k"], *assemble.encode(r["concept_id"]), r["day"], wins)


def _visit_counts(entries: Entries, wins: list[tuple[int, int]], r: dict[str, np.ndarray]) -> None:
    assemble.counts(entries, r["k"], *assemble.encode(r["concept_id"]), r["day"], wins)


def _measurements(entries: Entries, wins: list[tuple[int, int]], value_start: int, r: dict[str, np.ndarray]) -> None:
    code, concepts = assemble.encode(r["concept_id"])
    assemble.windows(entries, r["k"], code, concepts, r["day"], wins)
    assemble.last_values(entries, r["k"], code, concepts, r["unit"], r["day"], r["measurement_id"], r["value"],
                         value_start, A.MEASUREMENT_VALUE_LONG)


def _drug_records(cdm: CDM, pop: Population, start_day: int, end_day: int) -> dict[str, np.ndarray]:
    groups = fetch(cdm, A.drug_groups_sql())
    return {**records(cdm, pop, A.DOMAINS["drug"], start_day, end_day), "ancestor": groups["ancestor_concept_id"],
            "descendant": groups["descendant_concept_id"]}


def _drugs(entries: Entries, wins: list[tuple[int, int]], r: dict[str, np.ndarray]) -> None:
    code, drugs = assemble.encode(r["concept_id"])
    record, group_code, groups = assemble.roll_up(code, drugs, r["ancestor"], r["descendant"])
    k, day = (r["k"], r["day"]) if record is None else (r["k"].take(record), r["day"].take(record))
    assemble.windows(entries, k, group_code, groups, day, wins)
