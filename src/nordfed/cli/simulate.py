"""`nordfed simulate …`: run a federated analysis on a CSV split into sites, entirely in this process.

For researchers who want to see what a federated analysis gives before deploying, and for our own checks.
The estimator commands live in ``simulate_survival`` (km, cox, glm) and ``simulate_logistic``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import typer

if TYPE_CHECKING:
    from nordfed.fed.protocol import InProcessFederation

simulate_app = typer.Typer(help="Simulate a federated analysis on a CSV split into sites by a column.",
                           no_args_is_help=True)


def fail(message: str) -> NoReturn:
    """Print a clear error to stderr and exit with status 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def split_list(value: str) -> list[str]:
    return [c.strip() for c in value.split(",") if c.strip()]


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
) -> InProcessFederation:
    """Read ``csv``, check the named columns are present and numeric (``binary`` ones 0 or 1), split rows by
    ``site_column``.

    Rows with a missing value in any of ``numeric`` or ``keep`` (extra, non-numeric columns such as a group)
    are dropped (complete-case analysis, as lifelines and statsmodels require). Every error names the file,
    the column and, for bad values, the first bad row. The sites get the policy stated by ``min_cell_count``
    and ``exact_event_times``.
    """
    import numpy as np
    import pandas as pd

    from nordfed.fed.protocol import InProcessFederation
    from nordfed.privacy.disclosure import DisclosurePolicy

    keep = [c for c in (keep or []) if c not in numeric]
    if not csv.is_file():
        fail(f"{csv}: no such file")
    try:
        df = pd.read_csv(csv)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        fail(f"{csv}: cannot read as CSV: {exc}")
    missing = [c for c in [site_column, *numeric, *keep] if c not in df.columns]
    if missing:
        fail(f"{csv}: missing column(s) {', '.join(missing)}; the file has {', '.join(map(str, df.columns))}")
    for col in numeric:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = values.isna() & df[col].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2  # header is line 1
            fail(f"{csv}: line {row}, column {col!r}: {df[col][bad].iloc[0]!r} is not a number")
        df[col] = values.astype(float)
    for col in binary or []:
        bad = df[col].notna() & ~df[col].isin([0.0, 1.0])
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0]) + 2
            fail(f"{csv}: line {row}, column {col!r}: {df[col][bad].iloc[0]:g} is not 0 or 1")
    df = df.dropna(subset=[*numeric, *keep])
    frames = {str(site): part[[*numeric, *keep]].reset_index(drop=True)
              for site, part in df.groupby(site_column, sort=True)}
    if len(frames) < 1:
        fail(f"{csv}: no complete rows")
    small = {s: len(f) for s, f in frames.items() if len(f) < min_rows}
    if small:
        detail = ", ".join(f"{s} ({n} rows)" for s, n in small.items())
        fail(f"{csv}: too few rows per site (at least {min_rows} needed): {detail}")
    policy = DisclosurePolicy(min_cell_count=min_cell_count, exact_event_times=exact_event_times)
    return InProcessFederation.from_frames(frames, policy)


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        json.dump(result, sys.stdout, indent=2, default=float)
        sys.stdout.write("\n")
    else:
        from rich import print_json

        print_json(data=result, default=float)


def register(app: typer.Typer) -> None:
    from nordfed.cli import simulate_logistic, simulate_survival

    simulate_survival.add_commands(simulate_app)
    simulate_logistic.add_commands(simulate_app)
    app.add_typer(simulate_app, name="simulate")
