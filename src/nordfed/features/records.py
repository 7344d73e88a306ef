"""Engine I/O for covariate extraction: the population table, and each domain's window records as numpy arrays.

Two ways to get a domain's records, with identical results (both are tested):

- **join** (any engine): the engine joins the population and filters the windows (:meth:`Domain.records_sql`).
- **scan** (DuckDB, each person at most once in the population): the engine only scans the table's columns
  with constant date bounds, streamed as Arrow batches; the join to the population is a numpy lookup by
  ``person_id``. A hash join over every record costs several times the scan itself; the lookup does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nordfed.features import analyses as A
from nordfed.features import assemble
from nordfed.features.analyses import Domain
from nordfed.features.assemble import Entries
from nordfed.omop.store import CDM

if TYPE_CHECKING:
    from nordfed.features.covariates import CovariateSettings

_BATCH = 1 << 20
_FLOATS = frozenset({"value", "covariate_value"})
_EPOCH = np.datetime64("1970-01-01", "D")


class Population:
    """The population rows with their matrix row ``k``; when each person occurs once (``unique_persons``),
    a lookup from ``person_id`` to the row: an array over the id range when compact, else a hash index."""

    def __init__(self, population: pd.DataFrame, k: np.ndarray, dense: bool | None = None):
        dates = pd.to_datetime(population["cohort_start_date"]).to_numpy().astype("datetime64[D]")
        if np.isnat(dates).any():
            first = int(np.flatnonzero(np.isnat(dates))[0])
            raise ValueError(f"population: cohort_start_date is missing in row {first}")
        self.k = k.astype(np.int32)
        self.row_id = population["row_id"].to_numpy(np.int64)
        self.subject_id = population["subject_id"].to_numpy(np.int64)
        self.index_day = (dates - _EPOCH).astype(np.int32)
        self.unique_persons = bool(pd.Index(self.subject_id).is_unique)
        self._dense: np.ndarray | None = None
        self._index: pd.Index | None = None
        if self.unique_persons and len(self.k):
            lo, hi = int(self.subject_id.min()), int(self.subject_id.max())
            if dense if dense is not None else hi - lo < 4 * len(self.k) + (1 << 20):
                # compact ids: an array indexed by person_id beats hashing
                self._dense = np.full(hi - lo + 1, -1, dtype=np.int32)
                self._dense[self.subject_id - lo] = np.arange(len(self.k), dtype=np.int32)
            else:
                self._index = pd.Index(self.subject_id)

    def position(self, person_id: np.ndarray) -> np.ndarray:
        """Population position of each person (-1: not in the population)."""
        if self._dense is not None:
            # the scan already bounds person_id to [min, max] of the population
            return self._dense.take(person_id - int(self.subject_id.min()))
        assert self._index is not None
        return self._index.get_indexer(person_id).astype(np.int32)

    def date(self, day: int) -> str:
        return str(_EPOCH + np.timedelta64(day, "D"))


def register(cdm: CDM, pop: Population) -> None:
    """Make ``nf_population(k, row_id, subject_id, cohort_start_date)`` visible to the covariate SQL."""
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
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {A.POP} (k INTEGER, row_id BIGINT, subject_id BIGINT, "
                "cohort_start_date DATE)")
    con.execute(f"TRUNCATE {A.POP}")
    with con.cursor() as cur, cur.copy(f"COPY {A.POP} (k, row_id, subject_id, cohort_start_date) FROM STDIN") as cp:
        for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
            cp.write_row(row)
    con.execute(f"ANALYZE {A.POP}")


def unregister(cdm: CDM) -> None:
    cdm.raw_connection.execute(f"DROP TABLE IF EXISTS {A.POP}")


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
    """Columns of a result as numpy arrays (Arrow straight from DuckDB: no per-row Python objects)."""
    if cdm.dialect == "duckdb":
        rel = _relation(cdm, sql)
        # DuckDB ≥ 1.4 names it to_arrow_table; before, arrow() returned the table
        table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
        return {name: _numpy(col) for name, col in zip(table.column_names, table.columns, strict=True)}
    frame = cdm.query(sql)
    return {c: (pd.to_numeric(frame[c]).astype(np.float64).to_numpy() if c in _FLOATS
                else frame[c].fillna(0).to_numpy(np.int64)) for c in frame.columns}


def _scan(cdm: CDM, pop: Population, domain: Domain, start_day: int, end_day: int) -> dict[str, np.ndarray]:
    """The join path's records, from a streamed scan joined in memory (see the module docstring)."""
    sql = domain.scan_sql(pop.date(int(pop.index_day.max()) + end_day), pop.date(int(pop.index_day.min()) + start_day),
                          int(pop.subject_id.min()), int(pop.subject_id.max()))
    rel = _relation(cdm, sql)
    reader = rel.to_arrow_reader(_BATCH) if hasattr(rel, "to_arrow_reader") else rel.fetch_arrow_reader(_BATCH)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in reader:
        cols = {name: _numpy(col) for name, col in zip(batch.schema.names, batch.columns, strict=True)}
        at = pop.position(cols.pop("person_id"))
        first = cols.pop("first_date")
        last = cols.pop("last_date", first)
        found = at >= 0
        everyone = bool(found.all())
        index = pop.index_day.take(at if everyone else np.where(found, at, 0))
        keep = (first <= index + end_day) & (last >= index + start_day)
        # gathering by position is several times faster than boolean masking, column after column
        rows = np.flatnonzero(keep if everyone else keep & found)
        parts.setdefault("k", []).append(pop.k.take(at.take(rows)))
        parts.setdefault("day", []).append(last.take(rows) - index.take(rows))
        for name, values in cols.items():
            parts.setdefault(name, []).append(values.take(rows))
    if not parts:
        names = ["k", "day", "concept_id", *(alias for alias, _ in domain.extra)]
        return {n: np.zeros(0, dtype=np.float64 if n in _FLOATS else np.int64) for n in names}
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def records(cdm: CDM, pop: Population, domain: Domain, start_day: int, end_day: int) -> dict[str, np.ndarray]:
    """``k, concept_id, day, *extra`` of ``domain``'s records in the window ``start_day .. end_day``."""
    if cdm.dialect == "duckdb" and pop.unique_persons:
        return _scan(cdm, pop, domain, start_day, end_day)
    return fetch(cdm, domain.records_sql(start_day, end_day))


def collect(cdm: CDM, pop: Population, s: CovariateSettings, entries: Entries) -> None:
    """Run each domain's query once (all its windows) and turn the records into covariate entries."""
    if cdm.dialect != "duckdb":
        _collect(cdm, pop, s, entries)
        return
    # no result here is ordered; keeping insertion order would serialise materialising the records
    con = cdm.raw_connection
    (preserve,) = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()
    con.execute("SET preserve_insertion_order = false")
    try:
        _collect(cdm, pop, s, entries)
    finally:
        con.execute(f"SET preserve_insertion_order = {bool(preserve)}")


def _collect(cdm: CDM, pop: Population, s: CovariateSettings, entries: Entries) -> None:
    end = s.end_days
    if s.demographics():
        d = fetch(cdm, A.demographics_sql())
        assemble.demographics(entries, d["k"], d["gender_concept_id"], d["year_of_birth"], d["year"], d["month"],
                              s.demographics())
    for domain in ("condition", "procedure"):
        wins = s.windows(domain)
        if wins:
            r = records(cdm, pop, A.DOMAINS[domain], min(w[0] for w in wins), end)
            assemble.windows(entries, r["k"], *assemble.encode(r["concept_id"]), r["day"], wins)
    wins = s.windows("measurement")
    if s.measurement_value_long_term:
        # one pass serves the presence windows and the last value
        r = records(cdm, pop, A.MEASUREMENT_VALUES, min([w[0] for w in wins] + [s.long_term_start_days]), end)
        assemble.windows(entries, r["k"], *assemble.encode(r["concept_id"]), r["day"], wins)
        assemble.last_values(entries, r["k"], r["concept_id"], r["unit"], r["day"], r["measurement_id"],
                             r["value"], s.long_term_start_days, A.MEASUREMENT_VALUE_LONG)
    elif wins:
        r = records(cdm, pop, A.DOMAINS["measurement"], min(w[0] for w in wins), end)
        assemble.windows(entries, r["k"], *assemble.encode(r["concept_id"]), r["day"], wins)
    r = {}  # release the records before the next query
    wins = s.windows("drug")
    if wins:
        g = fetch(cdm, A.drug_groups_sql())
        r = records(cdm, pop, A.DOMAINS["drug"], min(w[0] for w in wins), end)
        code, drugs = assemble.encode(r["concept_id"])
        record, group_code, groups = assemble.roll_up(code, drugs, g["ancestor_concept_id"],
                                                      g["descendant_concept_id"])
        k, day = (r["k"], r["day"]) if record is None else (r["k"][record], r["day"][record])
        assemble.windows(entries, k, group_code, groups, day, wins)
    if s.charlson_index:
        r = fetch(cdm, A.charlson_sql())
        entries.add_ids(r["k"], r["covariate_id"], r["covariate_value"])
