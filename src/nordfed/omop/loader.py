"""Load a folder of OMOP CDM files (CSV, TSV or Parquet) into a CDM: all files or none.

Every file is checked against the CDM v5.4 spec before anything is written: table and column names, required
columns and values, the type of every value, primary-key uniqueness (in the file and against rows already in
the CDM), varchar lengths and ``person_id`` references. Errors name the file, the 1-based data row and the
column. The writes then run in one transaction, so a failure leaves the target exactly as it was.

>>> load_folder("eunomia_csv/", "duckdb:///site.duckdb")            # doctest: +SKIP
LoadResult(rows={'person': 2694, ...})
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nordfed.omop.schema import Field, Table, schema
from nordfed.omop.store import CDM, CDMError, open_cdm

SUFFIXES = (".csv", ".tsv", ".txt", ".parquet")
#: how R, pandas and database dumps write NULL in non-text columns
_NULL_TOKENS = frozenset({"", "NA", "NULL", "null", "NaN", "nan", "\\N"})
_MAX_EXAMPLES = 5
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


@dataclass(frozen=True)
class LoadIssue:
    """One problem in one input file; ``row`` is the 1-based data row (the header is not counted)."""

    file: str
    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file + (f", row {self.row}" if self.row is not None else "")
        where += f", column {self.column}" if self.column else ""
        return f"{where}: {self.message}"


class LoadError(Exception):
    """The input cannot be loaded; ``issues`` lists every problem found (nothing was written)."""

    def __init__(self, issues: list[LoadIssue]):
        self.issues = issues
        lines = [str(i) for i in issues[:50]]
        if len(issues) > 50:
            lines.append(f"… and {len(issues) - 50} more problems")
        super().__init__(f"{len(issues)} problem(s), nothing was loaded:\n" + "\n".join(lines))


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


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n")  # 0 = header line
        lines = data.split(b"\n")
        header = lines[0].decode("utf-8-sig", errors="replace").rstrip("\r")
        bad_line = lines[line_no].decode("utf-8", errors="replace").rstrip("\r")
        sep = _sniff(header)
        column = next((h.strip().strip('"').lower() for h, v in zip(header.split(sep), bad_line.split(sep),
                                                                       strict=False) if "\ufffd" in v), None)
        raise LoadError([LoadIssue(
            path.name,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02X}); the file looks like Latin-1/Windows-1252: "
            f"re-export it as UTF-8",
            row=line_no if line_no > 0 else None, column=column,
        )]) from None


def _sniff(header: str) -> str:
    # Athena ships tab-separated vocabulary files named .csv
    return "\t" if header.count("\t") > header.count(",") else ","


def read_file(path: Path) -> pd.DataFrame:
    """Read one CSV/TSV (all values as text) or Parquet file (native types); column names lower-cased."""
    if path.suffix.lower() == ".parquet":
        try:
            df = pq.read_table(path).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            raise LoadError([LoadIssue(path.name, f"cannot read as Parquet: {exc}")]) from None
    else:
        data = path.read_bytes()
        if not data.strip():
            raise LoadError([LoadIssue(path.name, "file is empty: expected a header line naming the columns")])
        text = _decode(path, data)
        sep = _sniff(text.split("\n", 1)[0])
        try:
            df = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_filter=False,
                             quotechar='"', skipinitialspace=False)
        except pd.errors.ParserError as exc:
            raise LoadError([LoadIssue(path.name, f"cannot parse: {exc}")]) from None
    df.columns = [str(c).strip().strip('"').lower() for c in df.columns]
    return df


# ---------------------------------------------------------------------------------------------- values
def _examples(file: str, column: str, mask: np.ndarray, describe: Callable[[int], str]) -> list[LoadIssue]:
    idx = np.flatnonzero(mask)
    out = [LoadIssue(file, describe(int(i)), row=int(i) + 1, column=column) for i in idx[:_MAX_EXAMPLES]]
    if len(idx) > _MAX_EXAMPLES:
        out.append(LoadIssue(file, f"… and {len(idx) - _MAX_EXAMPLES} more rows with this problem", column=column))
    return out


def _fast_strings(values: pd.Series) -> pa.Array:
    return pc.utf8_trim_whitespace(pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True))


def _mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def _parse_dates(arr: pa.Array) -> pd.Series:
    """ISO dates (and Athena's YYYYMMDD) parsed by Arrow; anything else falls back to pandas' ISO 8601 parser."""
    none = pa.scalar(None, pa.timestamp("s"))
    ts = None
    for pattern, fmt in ((r"^\d{4}-\d{2}-\d{2}$", "%Y-%m-%d"), (r"^\d{8}$", "%Y%m%d")):
        parsed = pc.strptime(arr, fmt, unit="s", error_is_null=True)
        # Arrow rolls 2012-02-30 over to March 1st: keep only values that print back as written
        exact = pc.and_(pc.match_substring_regex(arr, pattern), pc.equal(pc.strftime(parsed, fmt), arr))
        parsed = pc.if_else(exact, parsed, none)
        ts = parsed if ts is None else pc.coalesce(ts, parsed)
    out = pd.Series(ts.to_numpy(zero_copy_only=False)).astype("datetime64[ns]")
    rest = out.isna().to_numpy() & _mask(pc.is_valid(arr))
    if rest.any():  # date-times, fractional seconds, time zones: rare in CDM exports
        text = pd.Series(arr.to_pandas(), dtype=object)
        out[rest] = pd.to_datetime(text[rest], format="ISO8601", errors="coerce")
    return out


def convert(values: pd.Series, f: Field) -> tuple[pd.Series, np.ndarray]:
    """Convert a column to the field's type; return the values and a mask of rows that are not of that type.

    Text columns keep their values (empty → NULL); other columns accept the usual NULL tokens.
    """
    n = len(values)
    no_text = pa.scalar(None, pa.string())
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        arr = _fast_strings(values)
        if f.kind == "text":
            arr = pc.if_else(pc.equal(arr, ""), no_text, arr)
            return pd.Series(arr.to_pandas(), dtype=object), np.zeros(n, dtype=bool)
        null = ~_mask(pc.is_valid(arr)) | _mask(pc.is_in(arr, value_set=pa.array(sorted(_NULL_TOKENS))))
        arr = pc.if_else(pa.array(null), no_text, arr)
    else:
        null = values.isna().to_numpy()
        arr = None
    if f.kind == "integer":
        if arr is not None:
            ok = _mask(pc.match_substring_regex(arr, r"^[+-]?\d{1,18}(\.0*)?$"))
            digits = pc.replace_substring_regex(pc.if_else(pa.array(ok), arr, no_text), r"\.0*$", "")
            num = pd.Series(pc.cast(digits, pa.int64()).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get),
                            dtype="Int64")
        else:
            num = pd.to_numeric(values, errors="coerce").reset_index(drop=True)
            ok = (num.notna() & (num == np.floor(num))).to_numpy()
        limit = _INT64 if f.is_big_id else _INT32
        ok &= ~(num.abs() > limit).fillna(False).to_numpy(dtype=bool)
        bad = ~null & ~ok
        return pd.Series(num.where(ok & ~null), dtype="Int64"), bad
    if f.kind == "float":
        src = pd.Series(arr.to_pandas(), dtype=object) if arr is not None else values.reset_index(drop=True)
        num = pd.to_numeric(src, errors="coerce").astype("float64")
        bad = ~null & num.isna().to_numpy()
        return num, bad
    if f.kind in ("date", "datetime"):
        ts = _parse_dates(arr) if arr is not None else pd.to_datetime(values, errors="coerce").reset_index(drop=True)
        bad = ~null & ts.isna().to_numpy()
        if f.kind == "date":
            bad |= ~null & ts.notna().to_numpy() & (ts.dt.normalize() != ts).fillna(False).to_numpy(dtype=bool)
            return ts.dt.date.where(ts.notna(), None), bad
        return ts, bad
    # text column given natively typed (Parquet): keep as strings
    return values.astype(object).where(~pd.Series(null, index=values.index), None).map(
        lambda v: v if v is None else str(v)), np.zeros(n, dtype=bool)


_KIND_WORDS = {"integer": "an integer (at most 18 digits)", "float": "a number", "date": "a date (YYYY-MM-DD)",
               "datetime": "a date-time (YYYY-MM-DD HH:MM:SS)"}


def check_frame(raw: pd.DataFrame, table: Table, file: str) -> tuple[pd.DataFrame, list[LoadIssue]]:
    """Type and spec checks for one file; returns the typed frame (CDM column order) and the problems."""
    issues: list[LoadIssue] = []
    cols = list(raw.columns)
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if dupes:
        return raw, [LoadIssue(file, "column appears more than once in the header", column=c) for c in dupes]
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
            issues += _examples(file, f.name, bad, lambda i, c=col, k=f.kind: f"{c.iat[i]!r} is not {_KIND_WORDS[k]}")
        if f.required:
            nulls = values.isna().to_numpy() & ~bad
            issues += _examples(file, f.name, nulls, lambda i: "required value is empty")
        if f.max_length is not None:
            long = _mask(pc.greater(pc.utf8_length(pa.array(values, type=pa.string(), from_pandas=True)),
                                    f.max_length))
            issues += _examples(file, f.name, long, lambda i, v=values, m=f.max_length:
                                f"value has {len(v.iat[i])} characters; at most {m} allowed ({v.iat[i][:30]!r}…)")
        typed[f.name] = values
    pk = table.primary_key
    if pk and pk in typed:
        key = typed[pk]
        dup = (key.duplicated(keep="first") & key.notna()).to_numpy()
        if dup.any():
            first = {v: i + 1 for i, v in reversed(list(enumerate(key)))}
            issues += _examples(file, pk, dup,
                                lambda i: f"duplicate primary key {key.iat[i]} (first at row {first[key.iat[i]]})")
    return pd.DataFrame(typed), issues


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
            issues += _examples(files[name], pk, taken,
                                lambda i, d=df, k=pk: f"primary key {d[k].iat[i]} is already in the CDM")
    persons = pd.concat([_existing_keys(cdm, tables["person"], "person_id"),
                         frames["person"]["person_id"] if "person" in frames else pd.Series([], dtype="Int64")])
    for name, df in frames.items():
        if name == "person" or "person_id" not in df:
            continue
        orphan = (df["person_id"].notna() & ~df["person_id"].isin(persons)).to_numpy(dtype=bool)
        issues += _examples(files[name], "person_id", orphan,
                            lambda i, d=df: f"person_id {d['person_id'].iat[i]} is not in person")
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
    with open_cdm(url) as cdm:
        issues = check_references(frames, files, cdm)
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
