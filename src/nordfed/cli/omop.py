"""`nordfed omop …`: load, validate and summarise OMOP CDM databases."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

    from nordfed.omop.store import CDM
    from nordfed.omop.summary import SiteSummary

omop_app = typer.Typer(help="Load, validate and summarise OMOP CDM v5.4 databases.", no_args_is_help=True)



class _Consoles:
    """Made on first use so COLUMNS and redirected streams (tests, pipes) are honoured."""

    @property
    def out(self) -> Console:
        return Console()

    @property
    def err(self) -> Console:
        return Console(stderr=True)


_c = _Consoles()

UrlArg = Annotated[str, typer.Argument(help="CDM URL: duckdb:///file.duckdb or postgresql://host/db?schema=cdm")]
UrlsArg = Annotated[list[str], typer.Argument(help="one or more CDM URLs (several are shown side by side)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON document to stdout instead of the table")]


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=_c.err, transient=True)


def _open(url: str) -> CDM:
    from nordfed.omop.store import CDMError, open_cdm

    try:
        return open_cdm(url)
    except CDMError as exc:
        _c.err.print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None


def site_names(urls: list[str]) -> list[str]:
    """Short site names: the file stem or schema name, the URLs when those clash (also used by `nordfed text`)."""
    from nordfed.omop.store import CDMError, CDMUrl

    names = []
    for u in urls:
        try:
            loc = CDMUrl.parse(u)
        except CDMError as exc:
            _c.err.print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None
        names.append(loc.schema or (Path(loc.target).stem if loc.engine == "duckdb" else loc.target))
    return names if len(set(names)) == len(names) else urls


def _plain(value: Any) -> Any:
    """JSON-ready: NaN, NA and None become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        value = value.item()
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    import pandas as pd

    return None if value is pd.NA else value


def _echo_json(doc: dict[str, Any]) -> None:
    # plain stdout, not rich: no markup, wrapping or highlighting in what a program reads
    typer.echo(json.dumps(_plain(doc), indent=2, ensure_ascii=False, allow_nan=False))


@omop_app.command()
def load(
    directory: Annotated[Path, typer.Argument(help="folder of CDM files: person.csv, PERSON.csv, person.parquet, …")],
    into: Annotated[str, typer.Option("--into", help="target CDM URL (created if missing)")],
) -> None:
    """Check every file against the CDM v5.4 spec and load all of them in one transaction (or none)."""
    from nordfed.omop.loader import LoadError, load_folder

    try:
        with _progress() as bar:
            task = bar.add_task("reading and checking", total=None)

            def step(table: str, rows: int) -> None:
                bar.update(task, advance=1, description=f"{table} ({rows:,} rows)")

            result = load_folder(directory, into, progress=step)
    except LoadError as exc:
        _c.err.print(f"[red]error:[/] {len(exc.issues)} problem(s) in {directory}; nothing was loaded")
        for issue in exc.issues:
            _c.err.print(f"  {issue}", markup=False, highlight=False)
        raise typer.Exit(1) from None
    table = Table(title=f"loaded into {into}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, n in result.rows.items():
        table.add_row(name, f"{n:,}")
    _c.out.print(table)


@omop_app.command()
def validate(url: UrlArg) -> None:
    """Check required fields, types, keys, person references and date order; exit 1 on errors."""
    from nordfed.omop.validate import validate as run

    cdm = _open(url)
    with _progress() as bar:
        task = bar.add_task("validating", total=len(cdm.table_names()))
        report = run(cdm, progress=lambda t: bar.update(task, advance=1, description=f"validating {t}"))
    if not report.findings:
        _c.out.print(f"[green]valid[/]: {len(report.checked_tables)} non-empty tables, no findings")
        return
    table = Table(title=f"validation of {url}")
    for c in ("severity", "check", "table", "field", "rows affected", "example ids"):
        table.add_column(c, justify="right" if c == "rows affected" else "left")
    for f in report.findings:
        colour = "red" if f.severity == "error" else "yellow"
        table.add_row(f"[{colour}]{f.severity}[/]", f.check, f.table, f.field or "", f"{f.rows:,}" if f.rows else "",
                      escape(", ".join(map(str, f.examples)) or f.message))
    _c.out.print(table)
    _c.out.print(f"{len(report.errors)} error(s), {len(report.warnings)} warning(s)")
    if report.errors:
        raise typer.Exit(1)


@omop_app.command()
def summary(
    urls: UrlsArg,
    top: Annotated[int, typer.Option(help="concepts shown per domain")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Persons, sex mix, observation time, row counts and top concepts; several sites side by side.

    With --json: {"sites": {SITE: {"url", "persons", "sex", "observation", "row_counts", "top"}}}; observation
    holds the day quantiles and the table's years, top one list of {concept_id, concept_name, persons, records}
    per domain; missing values are null.
    """
    from nordfed.omop.summary import SUMMARY_DOMAINS, side_by_side, summarize

    names = site_names(urls)
    results = {}
    with _progress() as bar:
        task = bar.add_task("summarising", total=len(urls) * (4 + len(SUMMARY_DOMAINS)))
        for name, url in zip(names, urls, strict=True):
            results[name] = summarize(_open(url), top_n=top,
                                      progress=lambda s, n=name: bar.update(task, advance=1, description=f"{n}: {s}"))
    if as_json:
        _echo_json({"sites": {n: _summary_doc(s, u) for (n, s), u in zip(results.items(), urls, strict=True)}})
        return
    df = side_by_side(results)
    table = Table(title="CDM summary")
    table.add_column("")
    for n in names:
        table.add_column(n, justify="right", overflow="fold")
    last = None
    for row in df.itertuples(index=False):
        section, metric, *values = row
        if section != last:
            table.add_section()
            table.add_row(f"[bold]{section}[/]", *[""] * len(values))
            last = section
        table.add_row(f"  {escape(metric)}", *[escape(v) for v in values])
    _c.out.print(table)


def _summary_doc(s: SiteSummary, url: str) -> dict[str, Any]:
    """One site's summary as plain data: the table's numbers, unrounded."""
    from dataclasses import asdict

    obs = None
    if s.observation:
        o = s.observation
        obs = {**asdict(o), "median_years": o.median_days / 365.25, "p25_years": o.p25_days / 365.25,
               "p75_years": o.p75_days / 365.25, "person_years": o.mean_days * o.persons / 365.25}
    sex = ({k: s.sex.get(k, 0) for k in ("female", "male", "unknown")} | s.sex) if s.persons else {}
    return {"url": url, "persons": s.persons, "sex": sex, "observation": obs, "row_counts": s.row_counts,
            "top": {d: df.to_dict("records") for d, df in s.top.items()}}


@omop_app.command()
def dq(
    urls: UrlsArg,
    all_checks: Annotated[bool, typer.Option("--all", help="also list checks that apply to no rows anywhere")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="only checks that fail at some site")] = False,
    as_json: JsonOpt = False,
    strict: Annotated[bool, typer.Option("--strict", help="exit 1 when any check fails at any site (for "
                                                          "pipelines); without it the exit code is 0")] = False,
) -> None:
    """Data-quality checks (completeness, conformance, plausibility) per site; check × site table.

    With --json: {"sites": {SITE: {"url", "checks": [{key, check, category, table, field, concept_id,
    description, n_rows, n_fail, pct_fail, threshold, status}]}}, "failing_checks", "failing_results"} with the
    table's rows; status is pass, fail, n/a (no rows) or unknown (withheld); missing values are null.
    """
    from nordfed.omop.dq import applicable_checks, compare, run_checks

    names = site_names(urls)
    results = {}
    with _progress() as bar:
        for name, url in zip(names, urls, strict=True):
            cdm = _open(url)
            checks = applicable_checks(cdm)
            task = bar.add_task(f"{name}", total=len(checks))
            results[name] = run_checks(cdm, progress=lambda c, t=task: bar.update(t, advance=1), checks=checks)
    df = compare(results, only_applicable=not all_checks)
    failing = df[names].apply(lambda col: col.str.endswith("fail"))
    n_checks, n_results = int(failing.any(axis=1).sum()), int(failing.to_numpy().sum())
    if failed:
        df = df[failing.any(axis=1)]
    if as_json:
        _echo_json({"sites": _dq_sites(results, urls, set(df["key"])), "failing_checks": n_checks,
                    "failing_results": n_results})
    else:
        _print_dq(df, names)
        _c.out.print(f"{n_checks} check(s) fail at some site ({n_results} failing check × site result(s), "
                     f"{len(names)} site(s))")
    if strict and n_results:
        raise typer.Exit(1)


def _dq_sites(results: dict[str, pd.DataFrame], urls: list[str], keys: set[str]) -> dict[str, Any]:
    """Per site, the rows of the checks the table shows."""
    from nordfed.omop.dq import check_key

    out = {}
    for (name, df), url in zip(results.items(), urls, strict=True):
        rows = [{"key": check_key(r), **r} for r in df.to_dict("records")]
        out[name] = {"url": url, "checks": [r for r in rows if r["key"] in keys]}
    return out


def _print_dq(df: pd.DataFrame, names: list[str]) -> None:
    table = Table(title="data quality: % of rows failing (threshold)")
    for c in ("check", "category", "threshold %"):
        table.add_column(c, overflow="fold")
    for n in names:
        table.add_column(n, justify="right")
    for row in df.itertuples(index=False):
        key, cat, thr, *cells = row
        styled = [f"[red]{c}[/]" if c.endswith("fail") else c for c in cells]
        table.add_row(escape(key), cat, f"{thr:g}", *styled)
    _c.out.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(omop_app, name="omop")
