"""Open an OMOP CDM by URL and query it with SQL written once.

Queries are written in DuckDB's SQL dialect with ``:name`` placeholders; sqlglot translates them to the
engine's dialect (PostgreSQL here; Spark SQL, Trino, Snowflake … through :func:`translate`) and binds
parameters as properly quoted literals.

>>> cdm = open_cdm("duckdb:///tmp/site.duckdb")                     # doctest: +SKIP
>>> cdm.query("SELECT count(*) AS n FROM person WHERE year_of_birth > :y", {"y": 1950})  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from nordfed.omop.schema import Table, create_table_sql, index_sql, schema

SOURCE_DIALECT = "duckdb"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CDMError(Exception):
    """A CDM could not be opened or a statement against it failed; the message says which."""


@lru_cache(maxsize=512)
def _parse(sql: str) -> list[exp.Expression]:
    try:
        return [e for e in sqlglot.parse(sql, read=SOURCE_DIALECT) if e is not None]
    except sqlglot.errors.ParseError as exc:
        raise CDMError(f"cannot parse SQL: {exc}\n-- in:\n{sql[:500]}") from exc


def translate(sql: str, dialect: str, params: Mapping[str, Any] | None = None) -> list[str]:
    """Translate DuckDB-dialect SQL to ``dialect``, binding ``:name`` placeholders as literals.

    >>> translate("SELECT date_diff('day', a, b) FROM t WHERE x = :x", "postgres", {"x": "O'Neil"})[0]
    "SELECT (CAST(b AS DATE) - CAST(a AS DATE)) FROM t WHERE x = 'O''Neil'"
    """
    out = []
    for tree in _parse(sql):
        if params is not None or any(True for _ in tree.find_all(exp.Placeholder)):
            tree = tree.copy()
            for ph in list(tree.find_all(exp.Placeholder)):
                name = ph.name
                if not name or params is None or name not in params:
                    raise CDMError(f"query parameter :{name or '?'} has no value")
                ph.replace(exp.convert(params[name]))
        out.append(tree.sql(dialect=dialect))
    return out


def redacted(url: str) -> str:
    """``url`` without its password (a PostgreSQL URL may carry one; error messages travel to logs).

    >>> redacted("postgresql://nf:secret@db:5432/cdm")
    'postgresql://nf:***@db:5432/cdm'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)))


@dataclass(frozen=True)
class CDMUrl:
    engine: str  # duckdb | postgres
    target: str  # file path (duckdb) or libpq conninfo URL (postgres)
    schema: str | None
    #: PostgreSQL: a schema for work tables (``?scratch=``); without it they are temporary tables
    scratch: str | None = None
    #: a schema for the tables studies write, the cohort table (``?results=``, OHDSI's cohort database schema):
    #: the CDM schema may then be read-only
    results: str | None = None

    @classmethod
    def parse(cls, url: str) -> CDMUrl:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        schema_name = query.pop("schema", [None])[0]
        scratch = query.pop("scratch", [None])[0]
        results = query.pop("results", [None])[0]
        for name in (schema_name, scratch, results):
            if name is not None and not _SCHEMA_NAME.match(name):
                raise CDMError(f"invalid schema name {name!r} in {url}")
        if scratch is not None and parts.scheme == "duckdb":
            raise CDMError(f"scratch= is for PostgreSQL (DuckDB's temporary tables are read in parallel): {url}")
        if parts.scheme == "duckdb":
            # SQLAlchemy's convention: duckdb:///relative.duckdb, duckdb:////absolute.duckdb
            path = url.split("://", 1)[1].split("?", 1)[0]
            path = path[1:] if path.startswith("/") else path
            if path in ("", ":memory:"):
                path = ":memory:"
            return cls("duckdb", path, schema_name, results=results)
        if parts.scheme in ("postgresql", "postgres", "postgresql+psycopg"):
            rest = "&".join(f"{k}={v}" for k, vs in query.items() for v in vs)
            conninfo = f"postgresql://{parts.netloc}{parts.path}" + (f"?{rest}" if rest else "")
            return cls("postgres", conninfo, schema_name, scratch, results)
        raise CDMError(
            f"unsupported CDM URL {url!r}: use duckdb:///path/to/file.duckdb or postgresql://host/db?schema=cdm"
        )


class CDM:
    """A connection to one site's CDM. Use :func:`open_cdm`."""

    def __init__(self, url: str, create: bool = False):
        self.url = url
        self.location = CDMUrl.parse(url)
        self.dialect = self.location.engine
        self._in_tx = False
        #: what opening this CDM created (folders, the DuckDB file, the schema): :meth:`discard` removes it
        self._made_dirs: list[Path] = []
        self._made_file = self._made_schema = False
        if self.dialect == "duckdb":
            import duckdb

            if self.location.target != ":memory:":
                path = Path(self.location.target)
                if not create and not path.exists():
                    # a mistyped path must not become an empty CDM that every command then reports on
                    raise CDMError(f"no CDM at {path.resolve()}: the file does not exist (a new CDM is made by "
                                   "`nordfed omop load` or `nordfed synth`)")
                self._made_dirs = [d for d in reversed(path.parents) if not d.exists()]
                self._made_file = not path.exists()
                path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._con = duckdb.connect(self.location.target)
            except duckdb.Error as exc:
                hint = ""
                if "lock" in str(exc).lower():
                    # DuckDB lets one process write a file; a working node holds its CDM
                    hint = " (another process has it open, e.g. a nordfed node while it works: wait or stop it)"
                raise CDMError(f"cannot open DuckDB CDM {self.location.target}{hint}: {exc}") from exc
        else:
            import psycopg

            try:
                self._con = psycopg.connect(self.location.target, autocommit=True)
            except psycopg.Error as exc:
                raise CDMError(f"cannot connect to PostgreSQL CDM {redacted(self.location.target)}: "
                               f"{str(exc).replace(self.location.target, redacted(self.location.target))}") from exc
        if self.location.schema:
            name = self.location.schema
            found = self._con.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name = "
                                      f"'{name}'").fetchall()
            self._made_schema = found[0][0] == 0
            if self._made_schema and not create:
                self._con.close()
                raise CDMError(f"no CDM schema {name!r} in {self.location.target}: it does not exist (a new CDM is "
                               "made by `nordfed omop load` or `nordfed synth`)")
            self._con.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
            self._con.execute(f"SET schema = '{name}'" if self.dialect == "duckdb" else f'SET search_path TO "{name}"')

    def discard(self) -> None:
        """Close, and remove what opening this CDM created: after a failed first load the target is as before
        (no empty DuckDB file or PostgreSQL schema left behind). Nothing that existed before is touched."""
        if self._made_schema and not self._made_file:
            self._con.execute(f'DROP SCHEMA IF EXISTS "{self.location.schema}" CASCADE')
        self.close()
        if self._made_file:
            path = Path(self.location.target)
            for leftover in (path, path.with_name(path.name + ".wal")):
                leftover.unlink(missing_ok=True)
        for d in reversed(self._made_dirs):
            with contextlib.suppress(OSError):  # not empty: something else was put there meanwhile
                d.rmdir()
        self._made_dirs, self._made_file, self._made_schema = [], False, False

    # ------------------------------------------------------------------ queries
    def sql(self, sql: str, params: Mapping[str, Any] | None = None) -> list[str]:
        """The statements that will run on this engine for DuckDB-dialect ``sql``."""
        if self.dialect == SOURCE_DIALECT and params is None and ":" not in sql:
            return [sql]
        return translate(sql, self.dialect, params)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        for stmt in self.sql(sql, params):
            self._raw(stmt)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run one SELECT and return a DataFrame."""
        stmts = self.sql(sql, params)
        if len(stmts) != 1:
            raise CDMError("query() takes exactly one statement")
        if self.dialect == "duckdb":
            return self._con.execute(stmts[0]).df()
        return _frame(_copy_out(self._con, stmts[0]))

    def arrow(self, sql: str, params: Mapping[str, Any] | None = None) -> pa.Table:
        """Run one SELECT and return an Arrow table, for bulk reads (no Python object per value).

        PostgreSQL sends the rows as CSV (``COPY (...) TO STDOUT``), parsed by Arrow with the result's column
        types: at 200 000 rows three times faster than fetching tuples into pandas. ``numeric`` becomes float64.
        """
        stmts = self.sql(sql, params)
        if len(stmts) != 1:
            raise CDMError("arrow() takes exactly one statement")
        if self.dialect == "duckdb":
            rel = self._con.sql(stmts[0])
            # DuckDB >= 1.4 names it to_arrow_table; before, arrow() returned the table
            return rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
        return _copy_out(self._con, stmts[0])

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        df = self.query(sql, params)
        return None if df.empty else df.iat[0, 0]

    def _raw(self, stmt: str) -> None:
        try:
            self._con.execute(stmt)
        except Exception as exc:
            raise CDMError(f"{exc}\n-- in statement:\n{stmt[:500]}") from exc

    # ------------------------------------------------------------------ schema
    def table_names(self) -> set[str]:
        if self.dialect == "duckdb":
            rows = self._con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchall()
        else:
            rows = self._con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
            ).fetchall()
        return {r[0].lower() for r in rows}

    @property
    def cohort_table(self) -> str:
        """Where cohorts are: ``cohort`` of the CDM, or of the ``results`` schema the URL names."""
        results = self.location.results
        return f'"{results}".cohort' if results else "cohort"

    def ensure_results(self) -> None:
        """Make the ``results`` schema and its cohort table if the URL names one and they are missing."""
        results = self.location.results
        if results:
            self._raw(f'CREATE SCHEMA IF NOT EXISTS "{results}"')
            self._raw(create_table_sql(schema()["cohort"], self.dialect, in_schema=results))

    def create_schema(self, indices: bool = True) -> None:
        """Create every CDM v5.4 table that does not exist yet (idempotent)."""
        with self.transaction():
            for table in schema().tables.values():
                self._raw(create_table_sql(table, self.dialect))
        if indices:
            self.create_indices()

    def create_indices(self) -> None:
        for table in schema().tables.values():
            for stmt in index_sql(table):
                # DuckDB scans columns with zone maps; its ART indexes only pay off for point lookups
                # by person, so other indexes would cost memory at national scale for nothing.
                if self.dialect == "duckdb" and not re.search(r'\("(person_id|subject_id)"\)', stmt):
                    continue
                self._raw(stmt)

    def row_counts(self) -> dict[str, int]:
        present = self.table_names()
        return {
            t: int(self.scalar(f'SELECT count(*) FROM "{t}"'))
            for t in schema().tables
            if t in present
        }

    # ------------------------------------------------------------------ writing
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """All statements inside commit together or not at all (nested calls join the outer one)."""
        if self._in_tx:
            yield
            return
        self._in_tx = True
        self._raw("BEGIN")
        try:
            yield
        except BaseException:
            self._raw("ROLLBACK")
            raise
        else:
            self._raw("COMMIT")
        finally:
            self._in_tx = False

    def analyze(self, tables: Iterable[str] | None = None) -> None:
        """Refresh PostgreSQL's planner statistics after a bulk load (every CDM table by default): until autovacuum
        gets to them, a freshly loaded table's row counts are guesses. DuckDB keeps its own as it writes."""
        if self.dialect != "postgres":
            return
        present = self.table_names()
        for name in (schema().tables if tables is None else tables):
            if name in present:
                self._raw(f'ANALYZE "{name}"')

    @contextlib.contextmanager
    def hash_joins(self) -> Iterator[None]:
        """On PostgreSQL, no nested-loop joins inside (a transaction; nothing changes on DuckDB).

        Cohort SQL keeps each person's first event with ``row_number() ... = 1``; PostgreSQL's planner expects one
        row from such a filter and joins thousands by nested loops: the CRC cohort at 200 000 persons took 44 s
        where hash joins take 0.2 s. (OHDSI's Circe SQL gets real row counts instead by analysing a temporary table
        after each step.)
        """
        if self.dialect != "postgres":
            yield
            return
        from psycopg.pq import TransactionStatus

        with self.transaction():
            (before,) = self._con.execute("SHOW enable_nestloop").fetchone()
            self._raw("SET LOCAL enable_nestloop = off")
            try:
                yield
            finally:
                if self._con.info.transaction_status == TransactionStatus.INTRANS:  # not failed
                    self._raw(f"SET LOCAL enable_nestloop = {'on' if before == 'on' else 'off'}")

    def insert(self, table: str, data: pd.DataFrame | pa.Table) -> int:
        """Append rows to a CDM table; columns are matched by name, missing optional columns are NULL."""
        t = schema()[table]
        arrow = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
        cols = [c for c in t.columns if c in arrow.column_names]
        unknown = set(arrow.column_names) - set(t.columns)
        if unknown:
            raise CDMError(f"{table} has no column(s) {', '.join(sorted(unknown))}")
        arrow = arrow.select(cols)
        if arrow.num_rows == 0:
            return 0
        for i, c in enumerate(cols):
            if t.field(c).kind == "integer" and pa.types.is_floating(arrow.schema.field(i).type):
                # pandas makes an integer column with a NULL float64; PostgreSQL's COPY refuses "7.0" for a
                # bigint where DuckDB casts: both get integers (a fractional value is an error, not rounded)
                try:
                    arrow = arrow.set_column(i, c, pc.cast(arrow.column(i), pa.int64(), safe=True))
                except pa.ArrowInvalid as exc:
                    raise CDMError(f"{table}.{c}: an integer column holds a fractional value") from exc
        col_sql = ", ".join(f'"{c}"' for c in cols)
        if self.dialect == "duckdb":
            self._con.register("_nordfed_insert", arrow)
            try:
                self._raw(f'INSERT INTO "{t.name}" ({col_sql}) SELECT {col_sql} FROM _nordfed_insert')
            finally:
                # after a failed insert the transaction is aborted and unregister itself fails
                with contextlib.suppress(Exception):
                    self._con.unregister("_nordfed_insert")
        else:
            self._copy_postgres(t, cols, arrow)
        return arrow.num_rows

    def _copy_postgres(self, t: Table, cols: list[str], arrow: pa.Table) -> None:
        col_sql = ", ".join(f'"{c}"' for c in cols)
        try:
            with self._con.cursor() as cur, cur.copy(f'COPY "{t.name}" ({col_sql}) FROM STDIN') as copy:
                for batch in arrow.to_batches(max_chunksize=50_000):
                    for row in zip(*(c.to_pylist() for c in batch.columns), strict=True):
                        copy.write_row(row)
        except Exception as exc:
            raise CDMError(f"loading {t.name} failed: {exc}") from exc

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> CDM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def raw_connection(self) -> Any:
        """The engine's own connection (duckdb or psycopg), for bulk paths that need it."""
        return self._con

    def table(self, name: str) -> Table:
        return schema()[name]


#: PostgreSQL type OIDs → the Arrow type its CSV text is read as (anything else: text)
_PG_ARROW = {16: pa.bool_(), 20: pa.int64(), 23: pa.int32(), 21: pa.int16(), 700: pa.float32(), 701: pa.float64(),
             1700: pa.float64(), 1082: pa.date32(), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC")}


def _copy_out(con: Any, stmt: str) -> pa.Table:
    """``stmt``'s rows through ``COPY ... TO STDOUT (FORMAT CSV)``, typed by the statement's result columns."""
    import pyarrow.csv as pacsv

    with con.cursor() as cur:
        cur.execute(f"SELECT * FROM ({stmt}) AS nf_q LIMIT 0")
        columns = list(cur.description or [])
        buf = io.BytesIO()
        with cur.copy(f"COPY ({stmt}) TO STDOUT (FORMAT CSV)") as copy:
            for chunk in copy:
                buf.write(chunk)
    names = [d.name for d in columns]
    types = [_PG_ARROW.get(d.type_code, pa.string()) for d in columns]
    if not buf.getbuffer().nbytes:
        return pa.Table.from_arrays([pa.array([], t) for t in types], names=names)
    buf.seek(0)
    # positional names, so a result with two columns of one name keeps both
    positional = [f"c{i}" for i in range(len(names))]
    table = pacsv.read_csv(
        buf, read_options=pacsv.ReadOptions(column_names=positional),
        # only an unquoted empty field is NULL: "" is an empty text, and 'NaN' or 'NULL' are values
        convert_options=pacsv.ConvertOptions(column_types=dict(zip(positional, types, strict=True)),
                                             null_values=[""], strings_can_be_null=True,
                                             quoted_strings_can_be_null=False, true_values=["t"],
                                             false_values=["f"]))
    return table.rename_columns(names)


#: what DuckDB's ``df()`` makes of an integer or boolean column holding a NULL
_NULLABLE = {pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
             pa.bool_(): pd.BooleanDtype()}


def _frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow result as DuckDB's ``df()`` gives it, so code reads both engines alike: numpy integers and booleans,
    pandas' nullable ones where a column has a NULL (ids above 2**53 stay exact), dates as datetime64[us]."""
    columns = []
    for col in table.columns:
        kind = col.type
        if pa.types.is_date32(kind) or pa.types.is_timestamp(kind):
            series = col.cast(pa.timestamp("us", tz=getattr(kind, "tz", None))).to_pandas()
        elif col.null_count and kind in _NULLABLE:
            series = col.to_pandas(types_mapper=_NULLABLE.get)
        else:
            series = col.to_pandas()
        columns.append(series)
    # by position, so duplicate names (``SELECT a.x, b.x``) keep both columns
    frame = pd.DataFrame(dict(enumerate(columns)), index=pd.RangeIndex(table.num_rows))
    return frame.set_axis(table.column_names, axis=1)


def open_cdm(url: str, create: bool = False) -> CDM:
    """Open the CDM at ``url`` (``duckdb:///file.duckdb`` or ``postgresql://…?schema=cdm``), which must exist
    (:class:`CDMError` otherwise).

    With ``create=True`` the file or schema is made if missing, and the CDM tables where missing.
    """
    cdm = CDM(url, create)
    if create:
        cdm.create_schema()
    return cdm
