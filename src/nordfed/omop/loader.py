"""Load a folder of OMOP CDM files (CSV, TSV or Parquet) into a CDM: all files or none.

Every file is checked against the CDM v5.4 spec before anything is written: table and column names, required
columns and values, the type of every value, primary-key uniqueness (in the file and against rows already in
the CDM), varchar lengths and ``person_id`` references. Errors name the file, the 1-based data row and the
column. The writes then run in one transaction, so a failure leaves the target exactly as it was.

>>> load_folder("eunomia_csv/", "duckdb:///site.duckdb")            # doctest: +SKIP
LoadResult(rows={'person': 2694, ...})
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from nordfed.omop.files import read_file
from nordfed.omop.load_issues import LoadError, LoadIssue, examples
from nordfed.omop.schema import Field, Table, schema
from nordfed.omop.store import CDM, CDMError

__all__ = ["SUFFIXES", "LoadError", "LoadIssue", "LoadResult", "check_frame", "discover", "load_folder"]

SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
#: how R, pandas and database dumps write NULL in non-text columns
_NULL_TOKENS = frozenset({"", "NA", "NULL", "null", "NaN", "nan", "\\N"})
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


@dataclass
class LoadResult:
    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- files
def discover(directory: Path) -> dict[str, Path]:
    """Map CDM table name → file in ``directory`` (names are case-insensitive: ``PERSON.csv``, ``person.parquet``)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise LoadError([LoadIssue(str(directory), "no such directory")])
    found: dict[str, Path] = {}
    issues: list[LoadIssue] = []
    tables = schema().tables
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix.lower() not in SUFFIXES or path.name.startswith("."):
            continue
        table = path.stem.lower()
        if table not in tables:
            issues.append(LoadIssue(path.name, f"{path.stem!r} is not an OMOP CDM v5.4 table "
                                               f"(file names must be table names, e.g. person.csv)"))
        elif table in found:
            issues.append(LoadIssue(path.name, f"table {table} is also given by {found[table].name}"))
        else:
            found[table] = path
    if issues:
        raise LoadError(issues)
    if not found:
        raise LoadError([LoadIssue(str(directory), f"no CDM files ({', '.join(SUFFIXES)}) in this directory")])
    return found


# ---------------------------------------------------------------------------------------------- values
def _show(value: object, width: int = 40) -> str:
    # a 1 MB value in the wrong column must not become a 1 MB error message
    text = repr(value.tolist() if isinstance(value, np.generic | np.ndarray) else value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _fast_strings(values: pd.Series) -> pa.Array:
    return pc.utf8_trim_whitespace(pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True))


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


#: the CDM's date and date-time forms, parsed in bulk by Arrow
_ISO_FAST = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}:\d{2})?$"
#: other ISO 8601 date-times: fractional seconds, no seconds, a time zone (Z or an offset)
_ISO_OTHER = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}(:?\d{2})?)?")


def _iso_datetime(text: str) -> dt.datetime | None:
    """A strict ISO 8601 date-time; one with a time zone is converted to UTC (the CDM stores none)."""
    if not _ISO_OTHER.fullmatch(text):
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:  # 2020-02-30, 25:00, …
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value


def _parse_dates(arr: pa.Array) -> pd.Series:
    """ISO dates and date-times (and Athena's YYYYMMDD) parsed by Arrow, rarer ISO forms one by one.

    NaT where the text is not a valid date(-time). Microsecond resolution, as the databases store it:
    nanoseconds would end in 2262, before the common 9999-12-31.
    """
    none = pa.scalar(None, pa.timestamp("s"))
    shaped = pc.match_substring_regex(arr, _ISO_FAST)
    try:
        # Arrow's ISO 8601 cast is strict (2020-02-30 and 24:00:00 fail it) and fast
        ts = pc.cast(pc.if_else(shaped, arr, pa.scalar(None, pa.string())), pa.timestamp("s"))
    except pa.ArrowInvalid:  # an impossible date somewhere: every value goes the exact way below
        ts = pa.nulls(len(arr), pa.timestamp("s"))
    compact = pc.match_substring_regex(arr, r"^\d{8}$")
    if pc.any(compact).as_py():
        parsed = pc.strptime(arr, "%Y%m%d", unit="s", error_is_null=True)
        # strptime rolls 20120230 over to March 1st: keep only values that print back as written
        exact = pc.and_(compact, pc.equal(pc.strftime(parsed, "%Y%m%d"), arr))
        ts = pc.coalesce(ts, pc.if_else(exact, parsed, none))
    out = pd.Series(ts.to_numpy(zero_copy_only=False)).astype("datetime64[us]")
    rest = out.isna().to_numpy() & _mask(pc.is_valid(arr)) & ~_mask(compact)
    if rest.any():
        text = arr.filter(pa.array(rest)).to_pylist()
        out[rest] = pd.Series([_iso_datetime(t) for t in text], dtype="datetime64[us]").to_numpy()
    return out


def _from_text(arr: pa.Array, null: np.ndarray, f: Field) -> tuple[pd.Series, np.ndarray]:
    """Values of a CSV column (or Parquet strings), trimmed, NULL tokens already null."""
    no_text = pa.scalar(None, pa.string())
    if f.kind == "integer":
        ok = _mask(pc.match_substring_regex(arr, r"^[+-]?0*\d{1,18}(\.0*)?$"))
        digits = pc.replace_substring_regex(pc.if_else(pa.array(ok), arr, no_text), r"^\+|\.0*$", "")
        num = pd.Series(pc.cast(digits, pa.int64()).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get),
                        dtype="Int64")
        return _in_range(num, ok, null, f)
    if f.kind == "float":
        num = pd.to_numeric(pd.Series(arr.to_pandas(), dtype=object), errors="coerce").astype("float64")
        return num, ~null & ~np.isfinite(num.to_numpy())
    return _dates(_parse_dates(arr), null, f)


def _in_range(num: pd.Series, ok: np.ndarray, null: np.ndarray, f: Field) -> tuple[pd.Series, np.ndarray]:
    limit = _INT64 if f.is_big_id else _INT32
    ok = ok & ~((num > limit) | (num < -limit)).fillna(False).to_numpy(dtype=bool)
    return num.where(ok & ~null).astype("Int64"), ~null & ~ok


def _dates(ts: pd.Series, null: np.ndarray, f: Field) -> tuple[pd.Series, np.ndarray]:
    bad = ~null & ts.isna().to_numpy()
    if f.kind == "date":
        bad |= ~null & ts.notna().to_numpy() & (ts.dt.normalize() != ts).fillna(False).to_numpy(dtype=bool)
        return ts.dt.date.where(ts.notna() & ~bad, None), bad
    return ts.where(~pd.Series(bad)), bad


def _native(values: pd.Series, null: np.ndarray, f: Field) -> tuple[pd.Series, np.ndarray]:
    """Values of a natively typed (Parquet) column; a value of the wrong type is bad, never reinterpreted."""
    dtype = values.dtype
    family = pd.api.types.infer_dtype(values, skipna=True)
    numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
    if family == "decimal" and f.kind in ("integer", "float", "text"):
        # exact digits: a float would round ids above 2**53
        text = pa.array([None if v is None or v != v else format(v, "f") for v in values], type=pa.string())
        return _from_text(text, null, f) if f.kind != "text" else (
            pd.Series(text.to_pandas(), dtype=object), np.zeros(len(values), dtype=bool))
    if f.kind == "integer" and pd.api.types.is_integer_dtype(dtype):
        return _in_range(values, np.ones(len(values), dtype=bool), null, f)
    if f.kind == "integer" and numeric:  # floats: whole numbers only
        num = values.astype("float64")
        whole = np.isfinite(num.to_numpy()) & (num.to_numpy() == np.floor(num.to_numpy()))
        return _in_range(num.where(pd.Series(whole)).astype("Int64"), whole, null, f)
    if f.kind == "float" and numeric:
        num = values.astype("float64")
        return num, ~null & ~np.isfinite(num.to_numpy())
    if f.kind in ("date", "datetime") and pd.api.types.is_datetime64_any_dtype(dtype):
        if getattr(dtype, "tz", None) is not None:
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        return _dates(values.astype("datetime64[us]"), null, f)
    if f.kind in ("date", "datetime") and family in ("date", "datetime"):
        ts = [v if v is None or v != v else _iso_datetime(v.isoformat()) for v in values]
        return _dates(pd.Series(ts, dtype="datetime64[us]"), null, f)
    if f.kind == "text" and pd.api.types.is_integer_dtype(dtype):
        return values.astype(object).where(~pd.Series(null), None).map(
            lambda v: v if v is None else str(v)), np.zeros(len(values), dtype=bool)
    return pd.Series([None] * len(values), dtype=object), ~null


def convert(values: pd.Series, f: Field) -> tuple[pd.Series, np.ndarray]:
    """Convert a column to the field's type; return the values and a mask of rows that are not of that type.

    Text columns keep their values (empty → NULL); other columns accept the usual NULL tokens.
    """
    values = values.reset_index(drop=True)
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        arr = _fast_strings(values)
        no_text = pa.scalar(None, pa.string())
        if f.kind == "text":
            arr = pc.if_else(pc.equal(arr, ""), no_text, arr)
            return pd.Series(arr.to_pandas(), dtype=object), np.zeros(len(values), dtype=bool)
        null = ~_mask(pc.is_valid(arr)) | _mask(pc.is_in(arr, value_set=pa.array(sorted(_NULL_TOKENS))))
        return _from_text(pc.if_else(pa.array(null), no_text, arr), null, f)
    return _native(values, values.isna().to_numpy(), f)


_KIND_WORDS = {"integer": "an integer (at most 18 digits)", "float": "a finite number", "date": "a date (YYYY-MM-DD)",
               "datetime": "a date-time (YYYY-MM-DD HH:MM:SS)", "text": "text (write the column as strings)"}
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+(\.0*)?")


def _why(value: object, f: Field) -> str:
    """Why ``value`` cannot be stored in ``f``."""
    if isinstance(value, str):
        text = value.strip()
        if f.kind == "integer" and _INTEGER_TEXT.fullmatch(text):
            limit = _INT64 if f.is_big_id else _INT32
            return f"{_show(value)} is out of range for {f.name} (at most ±{limit:,})"
        return f"{_show(value)} is not {_KIND_WORDS[f.kind]}"
    if f.kind == "integer" and isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_):
        limit = _INT64 if f.is_big_id else _INT32
        return f"{_show(value)} is out of range for {f.name} (at most ±{limit:,})"
    kind = type(value.tolist() if isinstance(value, np.generic | np.ndarray) else value).__name__
    return f"{_show(value)} ({kind}) is not {_KIND_WORDS[f.kind]}"


def check_frame(raw: pd.DataFrame, table: Table, file: str) -> tuple[pd.DataFrame, list[LoadIssue]]:
    """Type and spec checks for one file; returns the typed frame (CDM column order) and the problems.

    ``raw``'s index holds the 1-based row numbers that errors name (see :func:`read_file`).
    """
    issues: list[LoadIssue] = []
    cols = list(raw.columns)
    rows = raw.index.to_numpy()
    issues += [LoadIssue(file, f"column {k + 1} of the header has no name") for k, c in enumerate(cols) if not c]
    dupes = sorted({c for c in cols if c and cols.count(c) > 1})
    issues += [LoadIssue(file, "column appears more than once in the header", column=c) for c in dupes]
    if issues:
        return raw, issues
    unknown = [c for c in cols if c not in table.columns]
    issues += [LoadIssue(file, f"{table.name} has no column {c!r} in CDM v5.4", column=c) for c in unknown]
    missing = [f.name for f in table.fields if f.required and f.name not in cols]
    issues += [LoadIssue(file, f"required column of {table.name} is missing from the header", column=c)
               for c in missing]
    if issues:
        return raw, issues
    typed: dict[str, pd.Series] = {}
    for f in table.fields:
        if f.name not in cols:
            continue
        col = raw[f.name].reset_index(drop=True)
        values, bad = convert(col, f)
        if bad.any():
            issues += examples(file, f.name, bad, lambda i, c=col, fl=f: _why(c.iat[i], fl), rows)
        if f.required:
            nulls = values.isna().to_numpy() & ~bad
            issues += examples(file, f.name, nulls, lambda i: "required value is empty", rows)
        if f.kind == "text":
            text = pa.array(values, type=pa.string(), from_pandas=True)
            # PostgreSQL refuses NUL in text and DuckDB cuts the value there
            nul = _mask(pc.match_substring(text, "\x00"))
            issues += examples(file, f.name, nul, lambda i: "contains a NUL character (byte 0x00)", rows)
            if f.max_length is not None:
                long = _mask(pc.greater(pc.utf8_length(text), f.max_length))
                issues += examples(file, f.name, long, lambda i, v=values, m=f.max_length:
                                    f"value has {len(v.iat[i])} characters; at most {m} allowed "
                                    f"({v.iat[i][:30]!r}…)", rows)
        typed[f.name] = values
    pk = table.primary_key
    if pk and pk in typed:
        key = typed[pk]
        dup = (key.duplicated(keep="first") & key.notna()).to_numpy()
        if dup.any():
            first = {v: int(rows[i]) for i, v in reversed(list(enumerate(key)))}
            issues += examples(file, pk, dup,
                                lambda i: f"duplicate primary key {key.iat[i]} (first at row {first[key.iat[i]]})",
                                rows)
    out = pd.DataFrame(typed)
    out.index = rows
    return out, issues


def _to_arrow(df: pd.DataFrame, table: Table) -> pa.Table:
    types = {"integer": pa.int64(), "float": pa.float64(), "date": pa.date32(), "datetime": pa.timestamp("us"),
             "text": pa.string()}
    arrays = [pa.array(df[c], type=types[table.field(c).kind], from_pandas=True) for c in df.columns]
    return pa.Table.from_arrays(arrays, names=list(df.columns))


# ---------------------------------------------------------------------------------------------- cross-file checks
def _existing_keys(cdm: CDM, table: Table, column: str) -> pd.Series:
    if table.name not in cdm.table_names():
        return pd.Series([], dtype="Int64")
    return cdm.query(f'SELECT DISTINCT "{column}" AS k FROM "{table.name}"')["k"].astype("Int64")


def check_references(frames: dict[str, pd.DataFrame], files: dict[str, str], cdm: CDM) -> list[LoadIssue]:
    """Primary keys already in the CDM, and ``person_id`` values with no person (in the files or the CDM)."""
    issues: list[LoadIssue] = []
    tables = schema().tables
    for name, df in frames.items():
        pk = tables[name].primary_key
        if pk and pk in df and tables[name].field(pk).kind == "integer":
            taken = df[pk].isin(_existing_keys(cdm, tables[name], pk)).to_numpy(dtype=bool)
            issues += examples(files[name], pk, taken,
                                lambda i, d=df, k=pk: f"primary key {d[k].iat[i]} is already in the CDM",
                                df.index.to_numpy())
    persons = pd.concat([_existing_keys(cdm, tables["person"], "person_id"),
                         frames["person"]["person_id"] if "person" in frames else pd.Series([], dtype="Int64")])
    for name, df in frames.items():
        if name == "person" or "person_id" not in df:
            continue
        orphan = (df["person_id"].notna() & ~df["person_id"].isin(persons)).to_numpy(dtype=bool)
        issues += examples(files[name], "person_id", orphan,
                            lambda i, d=df: f"person_id {d['person_id'].iat[i]} is not in person",
                            df.index.to_numpy())
    return issues


# ---------------------------------------------------------------------------------------------- entry point
def load_folder(directory: Path | str, url: str, progress: Callable[[str, int], None] | None = None) -> LoadResult:
    """Check every file in ``directory`` and load them into the CDM at ``url`` in one transaction.

    Raises :class:`LoadError` listing every problem (file, row, column); then nothing was written.
    ``progress(table, rows)`` is called after each table is read and after each is inserted.
    """
    paths = discover(Path(directory))
    tables = schema().tables
    frames: dict[str, pd.DataFrame] = {}
    files = {t: p.name for t, p in paths.items()}
    issues: list[LoadIssue] = []
    for name, path in paths.items():
        try:
            raw = read_file(path)
        except LoadError as exc:
            issues += exc.issues
            continue
        typed, found = check_frame(raw, tables[name], path.name)
        issues += found
        if not found:
            frames[name] = typed
        if progress:
            progress(name, len(raw))
    if issues:
        raise LoadError(issues)
    try:
        # the file or schema if missing, but the tables inside the load's transaction (see _load)
        cdm = CDM(url, create=True)
    except CDMError as exc:  # a bad URL, a locked DuckDB file, no server: an error, not a traceback
        raise LoadError([LoadIssue("target CDM", f"cannot open it: {exc}")]) from None
    with cdm:
        try:
            result = _load(cdm, frames, files, paths, progress)
        except BaseException:  # refused rows, and an interrupt too
            cdm.discard()  # a target this load created goes again: nothing half-written
            raise
        # after the guard: rows that are committed stay, whatever happens to the statistics
        cdm.analyze(result.rows)
    return result


def _load(cdm: CDM, frames: dict[str, pd.DataFrame], files: dict[str, str], paths: dict[str, Path],
          progress: Callable[[str, int], None] | None) -> LoadResult:
    """Check the rows' keys against the CDM, then insert every table in one transaction."""
    tables = schema().tables
    try:
        issues = check_references(frames, files, cdm)
    except CDMError as exc:
        raise LoadError([LoadIssue("target CDM", f"cannot read the keys already in it: {exc}")]) from None
    if issues:
        raise LoadError(issues)
    result = LoadResult(files={t: str(p) for t, p in paths.items()})
    # one transaction, so order only matters for the progress display: person first, as an ETL would
    order = sorted(frames, key=lambda t: (t != "person", t))
    name = "schema"
    try:
        with cdm.transaction():
            if not set(tables) <= cdm.table_names():
                cdm.create_schema()
            for name in order:
                result.rows[name] = cdm.insert(name, _to_arrow(frames[name], tables[name]))
                if progress:
                    progress(name, result.rows[name])
    except CDMError as exc:
        raise LoadError([LoadIssue(files.get(name, name), f"the database refused the rows: {exc}")]) from exc
    return result
