"""Reading one CDM input file: CSV or TSV (every value as text, checked record by record first) or Parquet
(native types). The index of what :func:`read_file` returns holds each row's 1-based number, which errors name.

Comma-separated files follow RFC 4180 (a value that starts with a quote ends with one; quotes inside are
doubled). Tab-separated files have no quoting (IANA's text/tab-separated-values, and Athena's vocabulary
files, whose concept names may start with a quote): a quote there is part of the value.
"""

from __future__ import annotations

import contextlib
import csv
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from nordfed.omop.load_issues import MAX_EXAMPLES, LoadError, LoadIssue, examples

#: Parquet integers become nullable pandas integers: a null must not turn int64 ids into (rounded) floats
_NULLABLE_INTS = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(),
                  pa.int64(): pd.Int64Dtype(), pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(),
                  pa.uint32(): pd.UInt32Dtype(), pa.uint64(): pd.UInt64Dtype()}


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # Excel's "Unicode text" export
        raise LoadError([LoadIssue(path.name, "the file is UTF-16 (it starts with a UTF-16 byte order mark): "
                                              "re-export it as UTF-8")])
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


def column_name(name: object) -> str:
    # a second BOM (files concatenated or re-saved) and padding are not part of the name
    return str(name).replace("\ufeff", "").strip().strip('"').strip().lower()


def _quoting(sep: str) -> int:
    """Quotes are syntax in comma-separated files only (see the module docstring)."""
    return csv.QUOTE_NONE if sep == "\t" else csv.QUOTE_MINIMAL


def _records(text: str, sep: str) -> csv.Reader:
    # strict: a quote that opens a value must close it before the next delimiter (RFC 4180)
    return csv.reader(io.StringIO(text, newline=""), delimiter=sep, quotechar='"', doublequote=True, strict=True,
                      quoting=_quoting(sep))


def _quote_column(record: str, sep: str) -> int | None:
    """Index of the value whose quoting is broken in ``record`` (the text from the record's first line on)."""
    column, at_start, quoted, closed = 0, True, False, False
    for ch in record:
        if quoted:
            quoted, closed = ch != '"', ch == '"'
        elif closed:
            if ch == '"':  # a doubled quote inside a quoted value
                quoted, closed = True, False
            elif ch == sep:
                column, at_start, closed = column + 1, True, False
            elif ch in "\r\n":
                return None
            else:
                return column  # text after the closing quote
        elif ch == sep:
            column, at_start = column + 1, True
        elif ch in "\r\n":
            return None
        else:
            quoted, at_start = ch == '"' and at_start, False
    return column if quoted else None


def _scan(file: str, text: str, sep: str) -> list[int]:
    """Values per record (header first; a blank line has none), read the way RFC 4180 reads them.

    pandas' parser fills a line cut short with empty values and drops a NUL and the rest of its value, so
    the structure is checked here first, with the standard library's reader.
    """
    counts: list[int] = []
    limit = csv.field_size_limit()
    csv.field_size_limit(max(limit, len(text)))  # a note_text may be longer than the 128 KiB default
    try:
        try:
            counts = list(map(len, _records(text, sep)))
        except csv.Error as exc:
            reader = _records(text, sep)
            with contextlib.suppress(csv.Error):
                for rec in reader:
                    counts.append(len(rec))
            row = len(counts)  # the record that failed; the header is record 0
            lines = text.splitlines(keepends=True)
            column = _quote_column("".join(lines[_record_start(text, sep, row):]), sep)
            header = [column_name(h) for h in next(_records(text, sep), [])] if row > 0 else []
            raise LoadError([LoadIssue(
                file, f"malformed quotes ({exc}): a value that starts with \" must end with \" before the next "
                      f"delimiter, and quotes inside it must be doubled",
                row=row or None, column=header[column] if column is not None and column < len(header) else None,
            )]) from None
        if "\x00" in text:
            header = [column_name(h) for h in next(_records(text, sep))]
            issues = [LoadIssue(file, "contains a NUL character (byte 0x00): is the file UTF-16 or binary?",
                                row=k or None, column=header[j] if k and j < len(header) else None)
                      for k, rec in enumerate(_records(text, sep)) for j, v in enumerate(rec) if "\x00" in v]
            raise LoadError(issues[:MAX_EXAMPLES] + ([LoadIssue(
                file, f"… and {len(issues) - MAX_EXAMPLES} more values with a NUL character")]
                if len(issues) > MAX_EXAMPLES else []))
    finally:
        csv.field_size_limit(limit)
    return counts


def _record_start(text: str, sep: str, record: int) -> int:
    """0-based line on which ``record`` starts (records before it may span lines inside quotes)."""
    reader = _records(text, sep)
    for _ in range(record):
        next(reader)
    return reader.line_num


def _shape_issues(file: str, counts: list[int]) -> list[LoadIssue]:
    """Rows whose number of values differs from the header's (blank lines aside)."""
    n = np.asarray(counts)
    width, data = n[0], n[1:]
    bad = (data != width) & (data != 0)
    if bad.sum() > 1 and bad.sum() == (data != 0).sum() and len(set(data[bad].tolist())) == 1:
        return [LoadIssue(file, f"the header names {width} columns but every row has {data[bad][0]} values: "
                                f"check the header line (or a delimiter at the end of every row)")]
    return examples(file, None, bad, lambda i: f"the row has {data[i]} values but the header names {width} "
                                                f"columns (a line cut short, or a delimiter inside an unquoted "
                                                f"value?)", np.arange(1, len(n)))


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        # ParquetFile rather than read_table: the dataset reader fails on duplicate column names with a
        # message about its internals, while the duplicates are reported by column here
        table = pq.ParquetFile(path).read()
    except (pa.ArrowException, OSError) as exc:
        raise LoadError([LoadIssue(path.name, f"cannot read as Parquet: {exc}")]) from None
    columns = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_dictionary(col.type):  # categories would reach the checks as a pandas Categorical
            col = pa.chunked_array([c.dictionary_decode() for c in col.chunks], type=col.type.value_type)
        try:
            columns.append(col.to_pandas(types_mapper=_NULLABLE_INTS.get, date_as_object=False))
        except pa.ArrowException as exc:
            raise LoadError([LoadIssue(path.name, f"Parquet type {col.type} is not supported: {exc}",
                                       column=column_name(name))]) from None
    df = pd.concat(columns, axis=1, keys=range(len(columns))) if columns else pd.DataFrame()
    df.columns = [column_name(c) for c in table.column_names]
    df.index = pd.RangeIndex(1, len(df) + 1)
    return df


def read_file(path: Path) -> pd.DataFrame:
    """Read one CSV/TSV (all values as text) or Parquet file (native types); column names lower-cased.

    The index holds each row's 1-based number (blank lines in a CSV are skipped but counted).
    """
    if path.suffix.lower() == ".parquet":
        return _read_parquet(path)
    data = path.read_bytes()
    text = _decode(path, data)
    if not text.replace("\ufeff", "").strip():
        raise LoadError([LoadIssue(path.name, "file is empty: expected a header line naming the columns")])
    first = text.split("\n", 1)[0]
    sep = _sniff(first)
    other = next((c for c in ";|" if c in first), None)
    if other and "," not in first and "\t" not in first:  # European Excel writes semicolons
        raise LoadError([LoadIssue(path.name, f"the header has no comma or tab but {other!r}: write the file "
                                              f"comma- or tab-separated")])
    counts = _scan(path.name, text, sep)
    issues = _shape_issues(path.name, counts)
    if issues:
        raise LoadError(issues)
    try:
        df = pd.read_csv(io.StringIO(text), sep=sep, header=None, dtype=str, keep_default_na=False,
                         na_filter=False, quotechar='"', quoting=_quoting(sep), skipinitialspace=False,
                         skip_blank_lines=False,
                         index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise LoadError([LoadIssue(path.name, f"cannot parse: {exc}")]) from None
    if len(df) != len(counts):  # the two parsers must see the same records, or row numbers would be wrong
        raise LoadError([LoadIssue(path.name, f"cannot parse: {len(counts)} records but pandas read {len(df)}")])
    header = [column_name(h) for h in df.iloc[0]]
    keep = np.array(counts) > 0
    keep[0] = False
    df = df[keep]
    df.columns = header
    df.index = np.flatnonzero(keep)
    return df
