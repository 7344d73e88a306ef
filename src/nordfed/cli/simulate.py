"""`nordfed simulate …`: run a federated analysis on a CSV split into sites, entirely in this process.

For researchers who want to see what a federated analysis gives before deploying, and for our own checks.
The estimator commands live in ``simulate_survival`` (km, cox, glm) and ``simulate_logistic``.
"""

from __future__ import annotations

import csv as csvlib
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer
from rich import box
from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    import pandas as pd

    from nordfed.fed.protocol import InProcessFederation

simulate_app = typer.Typer(help="Simulate a federated analysis on a CSV split into sites by a column.",
                           no_args_is_help=True)


def fail(message: str) -> NoReturn:
    """Print a clear error to stderr and exit with status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def note(message: str) -> None:
    """Print a note on stderr, so that --json output on stdout stays machine-readable."""
    Console(stderr=True, soft_wrap=True).print(Text.assemble(("note:", "yellow"), " ", message))


def split_list(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


def distinct_columns(roles: Mapping[str, Sequence[str]]) -> None:
    """Fail when one column is named twice among the options (``{"--duration": ["week"], "--covariates": [...]}``):
    a column in two roles (or twice in a list) is a mistake, and the fit would fail on it deep inside."""
    seen: dict[str, str] = {}
    for option, columns in roles.items():
        for col in columns:
            if col in seen:
                where = f"twice in {option}" if seen[col] == option else f"in both {seen[col]} and {option}"
                fail(f"column {col!r} is named {where}")
            seen[col] = option


#: a check of a column's values: the mask of bad values, and what a bad value is not
Check = tuple[Callable[["pd.Series"], "pd.Series"], str]
BINARY: Check = (lambda v: ~v.isin([0.0, 1.0]), "is not 0 or 1")
NON_NEGATIVE: Check = (lambda v: v < 0, "is negative")
UNIT_INTERVAL: Check = (lambda v: (v < 0) | (v > 1), "is not between 0 and 1")


def _is_blank(record: list[str]) -> bool:
    return not record or (len(record) == 1 and not record[0].strip())  # pandas skips both


def record_lines(csv: Path, used: Sequence[str]) -> list[int]:
    """The line on which each data row of ``csv`` starts (pandas' rows: blank lines skipped, a quoted field may
    span lines), so errors can name the line a user sees in an editor.

    Fails on what pandas would silently misread: a row with more or fewer fields than the header (one extra
    field on every row, e.g. a trailing comma, makes pandas shift all columns by one) and a ``used`` column
    named twice in the header (pandas would read the first and rename the other).
    """
    with csv.open(newline="", encoding="utf-8-sig") as f:
        reader = csvlib.reader(f)
        header = next(reader, [])
        twice = [c for c, n in Counter(header).items() if n > 1 and c in used]
        if twice:
            cols = [i + 1 for i, h in enumerate(header) if h == twice[0]]
            fail(f"{csv}: column {twice[0]!r} appears {len(cols)} times in the header (columns "
                 f"{', '.join(map(str, cols))}); name each column once")
        lines = []
        last = reader.line_num
        for record in reader:
            start, last = last + 1, reader.line_num
            if _is_blank(record):
                continue
            if len(record) != len(header):
                hint = " (a trailing comma?)" if len(record) == len(header) + 1 and record[-1] == "" else ""
                fail(f"{csv}: line {start} has {len(record)} fields but the header has {len(header)}{hint}")
            lines.append(start)
    return lines


def load_sites(
    csv: Path,
    site_column: str,
    numeric: list[str],
    min_rows: int = 10,
    min_cell_count: int = 10,
    *,
    keep: list[str] | None = None,
    binary: list[str] | None = None,
    exact_event_times: bool = False,
    checks: Mapping[str, Check] | None = None,
) -> InProcessFederation:
    """Read ``csv``, check the named columns are present and finite numbers (``binary`` ones 0 or 1, each of
    ``checks`` passing its check), split rows by ``site_column``.

    Rows with a missing value in any of ``numeric`` or ``keep`` (extra, non-numeric columns such as a group)
    or the site column are dropped (complete-case analysis, as lifelines and statsmodels require), and a note
    on stderr says how many and where. Every error names the file,
    the column and, for bad values, the first bad row. The sites get the policy stated by ``min_cell_count``
    and ``exact_event_times``.
    """
    import numpy as np
    import pandas as pd

    from nordfed.fed.protocol import InProcessFederation
    from nordfed.privacy.disclosure import DisclosurePolicy

    keep = [c for c in (keep or []) if c not in numeric]
    checks = {**{c: BINARY for c in binary or []}, **(checks or {})}
    if not csv.is_file():
        fail(f"{csv}: no such file")
    try:
        # site names are names: read as text, so "01" stays "01" and a blank cell does not turn 1 into "1.0"
        df = pd.read_csv(csv, dtype={site_column: str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        fail(f"{csv}: cannot read as CSV: {exc}")
    missing = [c for c in [site_column, *numeric, *keep] if c not in df.columns]
    if missing:
        fail(f"{csv}: missing column(s) {', '.join(missing)}; the file has {', '.join(map(str, df.columns))}")
    lines = record_lines(csv, [site_column, *numeric, *keep])
    if len(lines) != len(df):  # a dialect the two readers see differently: count data rows instead
        lines = [i + 2 for i in range(len(df))]

    def first_bad(col: str, bad: pd.Series, what: str) -> None:
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            value = df[col].iloc[i]
            shown = repr(value) if isinstance(value, str) else f"{value:g}"  # text quoted, numbers as written
            fail(f"{csv}: line {lines[i]}, column {col!r}: {shown} {what}")

    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        first_bad(col, values.isna() & df[col].notna(), "is not a number")
        # "inf" reads as a number, and one infinite value turns every sum of the fit into nan
        first_bad(col, pd.Series(np.isinf(values.to_numpy(dtype=float))), "is not a finite number")
        df[col] = values.astype(float)
    for col, (is_bad, what) in checks.items():
        first_bad(col, df[col].notna() & is_bad(df[col]), what)
    df = drop_incomplete(csv, df, [*numeric, *keep, site_column])
    frames = {str(site): part[[*numeric, *keep]].reset_index(drop=True)
              for site, part in df.groupby(site_column, sort=True)}
    if len(frames) < 1:
        fail(f"{csv}: no complete rows")
    small = {s: len(f) for s, f in frames.items() if len(f) < min_rows}
    if small:
        detail = ", ".join(f"{s} ({n} rows)" for s, n in list(small.items())[:5])
        more = f" and {len(small) - 5} more of {len(frames)} sites (is {site_column!r} the site column?)" \
            if len(small) > 5 else ""
        fail(f"{csv}: too few rows per site (at least {min_rows} needed): {detail}{more}")
    if len(frames) == 1:
        note(f"{csv}: column {site_column!r} names one site ({next(iter(frames))}): nothing is federated, the "
             "fit is that site's own")
    policy = DisclosurePolicy(min_cell_count=min_cell_count, exact_event_times=exact_event_times)
    return InProcessFederation.from_frames(frames, policy)


def drop_incomplete(csv: Path, df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Drop the rows with a missing value in any of ``columns`` (complete cases), and say how many on stderr."""
    columns = list(dict.fromkeys(columns))
    missing = df[columns].isna()
    incomplete = missing.any(axis=1)
    dropped = int(incomplete.sum())
    if dropped:
        where = ", ".join(c for c in columns if missing[c].any())
        note(f"{csv}: dropped {dropped} row{'s' if dropped != 1 else ''} with a missing value in {where} "
             "(complete cases)")
    return df[~incomplete]


# --------------------------------------------------------------------------------------------- output
def fmt(x: float, digits: int = 4) -> str:
    """A number for a table: fixed decimals in the usual range, scientific notation outside it."""
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"  # an exact zero means something (e.g. a covariate a LASSO dropped)
    if 1e-3 <= abs(x) < 1e6:
        return f"{x:.{digits}f}"
    return f"{x:.{digits - 1}e}"


def safe_exp(x: float) -> float:
    """``e**x``, ``inf`` where that overflows (a diverging coefficient must still print)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def fmt_p(p: float) -> str:
    """A p-value: four decimals, or two significant digits below 0.0001 (where 0.0000 would hide the size)."""
    p = float(p)
    return f"{p:.4f}" if not math.isfinite(p) or p >= 1e-4 else f"{p:.1e}"


def fmt_count(x: float) -> str:
    """A count or a time: no decimals when it is whole, as few as needed otherwise."""
    x = float(x)
    return str(int(x)) if x.is_integer() else f"{x:.6g}"


def table(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A compact table: first column left-aligned (names), the rest right-aligned (numbers), never wrapped."""
    out = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
                collapse_padding=True, min_width=len(title))
    for i, header in enumerate(headers):
        out.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        out.add_row(*row)
    return out


def coefficient_table(
    title: str,
    coefs: Mapping[str, float],
    *,
    exp: bool = False,
    se: Mapping[str, float] | None = None,
    z: Mapping[str, float] | None = None,
    p: Mapping[str, float] | None = None,
    ci: tuple[Mapping[str, float], Mapping[str, float]] | None = None,
    ci_headers: tuple[str, str] = ("lower 95%", "upper 95%"),
) -> Table:
    """One row per term, with the columns given (statsmodels' and lifelines' names), in one order for all."""
    columns: list[tuple[str, Any]] = [("coef", lambda t: fmt(coefs[t]))]
    if exp:
        columns.append(("exp(coef)", lambda t: fmt(safe_exp(coefs[t]))))
    if se is not None:
        columns.append(("se(coef)", lambda t: fmt(se[t])))
    if z is not None:
        columns.append(("z", lambda t: f"{z[t]:.2f}"))
    if p is not None:
        columns.append(("p", lambda t: fmt_p(p[t])))
    if ci is not None:
        columns += [(ci_headers[0], lambda t: fmt(ci[0][t])), (ci_headers[1], lambda t: fmt(ci[1][t]))]
    return table(title, ["", *(h for h, _ in columns)], ([t, *(f(t) for _, f in columns)] for t in coefs))


def facts(items: Mapping[str, Any]) -> Text:
    """Summary figures on one line: ``name value`` pairs, the names dimmed."""
    out = Text()
    for i, (name, value) in enumerate(items.items()):
        out.append("   " if i else "")
        out.append(f"{name} ", style="dim")
        out.append(str(value))
    return out


def emit(result: dict[str, Any], as_json: bool, *views: RenderableType) -> None:
    """Print ``result`` as plain JSON with --json, else the human-readable ``views`` (tables, summary lines).

    All simulate commands print through this, so their output looks alike in both forms.
    """
    if as_json:
        json.dump(result, sys.stdout, indent=2, default=float)
        sys.stdout.write("\n")
        return
    console = Console()
    wide = console.options.update_width(10_000)
    for view in views:
        # never cut a number off a table (a narrow terminal wraps its lines instead); a pipe or a file has no
        # width of its own, so there summary lines stay whole too
        need = Measurement.get(console, wide, view).maximum
        if need > console.width and (isinstance(view, Table) or not console.is_terminal):
            Console(width=need).print(view)
        else:
            console.print(view)


def register(app: typer.Typer) -> None:
    from nordfed.cli import simulate_logistic, simulate_survival

    simulate_survival.add_commands(simulate_app)
    simulate_logistic.add_commands(simulate_app)
    app.add_typer(simulate_app, name="simulate")
