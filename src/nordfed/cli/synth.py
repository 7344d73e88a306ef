"""`nordfed synth`: generate a synthetic Nordic/Baltic OMOP CDM site with its ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

SITE_CHOICES = ("DK", "NO", "SE", "FI", "EE")


def synth(
    site: Annotated[str, typer.Option("--site", help="site profile: DK, NO, SE, FI or EE", case_sensitive=False)],
    persons: Annotated[int, typer.Option("--persons", min=1, help="number of persons")],
    out: Annotated[str, typer.Option("--out", help="CDM URL: duckdb:///x/site.duckdb or postgresql://…?schema=s")],
    seed: Annotated[int, typer.Option("--seed", help="random seed (same seed, same data)")] = 1,
    truth: Annotated[Path | None, typer.Option("--truth", help="ground-truth JSON path (required for PostgreSQL; "
                                                               "default for DuckDB: beside the file)")] = None,
    notes: Annotated[bool, typer.Option("--notes/--no-notes", help="also write clinical notes")] = True,
) -> None:
    """Generate a synthetic site into an empty CDM (one transaction) and write its ground truth beside it."""
    from nordfed.omop.store import CDMError
    from nordfed.synth import write_site

    err = Console(stderr=True)
    code = site.upper()
    if code not in SITE_CHOICES:
        err.print(f"[red]error:[/] unknown site {site!r}; choose one of {', '.join(SITE_CHOICES)}")
        raise typer.Exit(2)
    try:
        truth_path = _truth_path(out, truth)
    except CDMError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rows]} rows"), TimeElapsedColumn(), TimeRemainingColumn(),
                        console=err, transient=True)
    started = time.perf_counter()
    with progress:
        task = progress.add_task(f"synth {code}", total=persons, rows=0)
        try:
            result = write_site(code, persons, seed, out, truth_path, notes=notes,
                                progress=lambda done, rows: progress.update(task, completed=done, rows=f"{rows:,}"))
        except CDMError as exc:
            err.print(f"[red]error:[/] {exc}")
            raise typer.Exit(2) from None
    seconds = time.perf_counter() - started
    crc, cll = result["cohorts"]["crc_surgery"], result["cohorts"]["cll"]
    Console().print(
        f"{code}: {persons:,} persons in {seconds:.1f} s ({persons / seconds:,.0f}/s) -> {out}\n"
        f"  CRC surgery cohort {crc['size']:,} (1-year deaths {crc['events']:,}, "
        f"{100 * (crc['event_rate'] or 0):.1f} %)"
        f", CLL cohort {cll['size']:,} (serious infections {cll['events']:,})\n"
        f"  planted DQ defects: {', '.join(sorted({d['check'] for d in result['dq_defects']})) or 'none'}\n"
        f"  truth: {truth_path}")


def _truth_path(out: str, truth: Path | None) -> Path:
    """Where the truth goes; the error names --truth, not the library's argument."""
    from nordfed.omop.store import CDMError, CDMUrl
    from nordfed.synth import truth_path_for

    loc = CDMUrl.parse(out)
    if truth is None and (loc.engine != "duckdb" or loc.target == ":memory:"):
        raise CDMError(f"--out {out} is not a DuckDB file: add --truth PATH for the ground-truth JSON "
                       "(it never goes into the CDM)")
    return truth_path_for(out, truth)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("synth")(synth)
