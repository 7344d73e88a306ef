"""`nordfed omop …`: load, validate and summarise OMOP CDM databases."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from nordfed.omop.store import CDM

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


def _site_names(urls: list[str]) -> list[str]:
    """Short column titles: the file stem or schema name, the URL when those clash."""
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
) -> None:
    """Persons, sex mix, observation time, row counts and top concepts; several sites side by side."""
    from nordfed.omop.summary import SUMMARY_DOMAINS, side_by_side, summarize

    names = _site_names(urls)
    results = {}
    with _progress() as bar:
        task = bar.add_task("summarising", total=len(urls) * (4 + len(SUMMARY_DOMAINS)))
        for name, url in zip(names, urls, strict=True):
            results[name] = summarize(_open(url), top_n=top,
                                      progress=lambda s, n=name: bar.update(task, advance=1, description=f"{n}: {s}"))
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


@omop_app.command()
def dq(
    urls: UrlsArg,
    all_checks: Annotated[bool, typer.Option("--all", help="also list checks that apply to no rows anywhere")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="only checks that fail at some site")] = False,
) -> None:
    """Data-quality checks (completeness, conformance, plausibility) per site; check × site table."""
    from nordfed.omop.dq import applicable_checks, compare, run_checks

    names = _site_names(urls)
    results = {}
    with _progress() as bar:
        for name, url in zip(names, urls, strict=True):
            cdm = _open(url)
            checks = applicable_checks(cdm)
            task = bar.add_task(f"{name}", total=len(checks))
            results[name] = run_checks(cdm, progress=lambda c, t=task: bar.update(t, advance=1), checks=checks)
    df = compare(results, only_applicable=not all_checks)
    if failed:
        df = df[df[names].apply(lambda col: col.str.endswith("fail")).any(axis=1)]
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
    n_fail = int(sum((r["status"] == "fail").sum() for r in results.values()))
    _c.out.print(f"{n_fail} failing check(s) across {len(names)} site(s)")


def register(app: typer.Typer) -> None:
    app.add_typer(omop_app, name="omop")
