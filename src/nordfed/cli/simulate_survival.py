"""`nordfed simulate km|cox|glm`: federated Kaplan-Meier, Cox and GLM on a CSV split into sites."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from nordfed.cli.simulate import emit, fail, load_sites, split_list
from nordfed.fed.protocol import AlgorithmError
from nordfed.privacy.disclosure import DisclosureError

CsvOpt = Annotated[Path, typer.Option("--csv", help="CSV file with one row per subject.")]
SiteOpt = Annotated[str, typer.Option("--site-column", help="Column whose values name the sites.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print plain JSON (for scripts).")]
MinCellOpt = Annotated[int, typer.Option("--min-cell-count", min=1,
                                         help="The sites' minimum cell count (their disclosure policy).")]
ExactOpt = Annotated[bool, typer.Option(
    "--exact-event-times/--no-exact-event-times",
    help="Whether the sites' policy allows exact per-time survival counts and risk-set sums "
         "(off: every per-time count must reach the minimum cell count).")]


def _run(fit: Callable[[], Any], csv: Path) -> Any:
    """Run a fit and turn refusals and data errors into a clear message and a non-zero exit."""
    try:
        return fit()
    except AlgorithmError as exc:
        fail(f"{csv}: site {exc}")
    except (DisclosureError, ValueError, RuntimeError, KeyError) as exc:
        fail(f"{csv}: {exc}")


def km(
    csv: CsvOpt,
    site_column: SiteOpt,
    duration: Annotated[str, typer.Option("--duration", help="Column with follow-up time.")],
    event: Annotated[str, typer.Option("--event", help="Column with the event indicator (0/1).")],
    group: Annotated[str | None, typer.Option("--group", help="Column to stratify curves and log-rank by.")] = None,
    time_grid: Annotated[float | None, typer.Option("--time-grid", min=0.0,
                                                    help="Round times up to multiples of this (coarsening).")] = None,
    min_cell_count: MinCellOpt = 10,
    exact_event_times: ExactOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Pooled Kaplan-Meier curve with Greenwood CIs (log-log), per group with a log-rank test."""
    from nordfed.fed.km import fit_km

    fed = load_sites(csv, site_column, [duration, event], min_rows=min_cell_count, min_cell_count=min_cell_count,
                     keep=[group] if group else None, exact_event_times=exact_event_times)
    res = _run(lambda: fit_km(fed, duration=duration, event=event, group=group, time_grid=time_grid), csv)
    out: dict[str, Any] = {k: getattr(res, k) for k in ("times", "survival", "ci_lower", "ci_upper", "at_risk",
                                                         "events")}
    if group:
        out["by_group"] = {g: c.to_dict() for g, c in res.by_group.items()}
        out["logrank"] = res.logrank
    emit(out, as_json)


def cox(
    csv: CsvOpt,
    site_column: SiteOpt,
    duration: Annotated[str, typer.Option("--duration", help="Column with follow-up time.")],
    event: Annotated[str, typer.Option("--event", help="Column with the event indicator (0/1).")],
    covariates: Annotated[str, typer.Option("--covariates", help="Comma-separated numeric covariate columns.")],
    ties: Annotated[str, typer.Option("--ties", help="Tie handling: efron or breslow.")] = "efron",
    strata_by_site: Annotated[bool, typer.Option("--strata-by-site",
                                                 help="Separate baseline hazard per site.")] = False,
    min_cell_count: MinCellOpt = 10,
    exact_event_times: ExactOpt = True,
    as_json: JsonOpt = False,
) -> None:
    """Cox proportional hazards model fitted exactly by federated Newton-Raphson.

    Concordance compares pairs within each site only; with several sites and no --strata-by-site it therefore
    differs from a pooled analysis, and the command says so on stderr.
    """
    from nordfed.fed.cox import TIES, concordance_note, fit_cox

    if ties not in TIES:
        fail(f"--ties must be one of {', '.join(TIES)}, not {ties!r}")
    covs = split_list(covariates)
    if not covs:
        fail("--covariates names no column")
    fed = load_sites(csv, site_column, [duration, event, *covs], min_rows=min_cell_count,
                     min_cell_count=min_cell_count, exact_event_times=exact_event_times)
    res = _run(lambda: fit_cox(fed, duration=duration, event=event, covariates=covs, ties=ties,
                               strata_by_site=strata_by_site), csv)
    out = res.to_dict()
    out.pop("variance")
    emit(out, as_json)
    note = concordance_note(res)
    if note:
        # stderr, so --json output stays machine-readable; concordance_scope carries the same fact there
        Console(stderr=True, soft_wrap=True).print(f"[yellow]note:[/] {note}", highlight=False)


def glm(
    csv: CsvOpt,
    site_column: SiteOpt,
    outcome: Annotated[str, typer.Option("--outcome", help="Outcome column.")],
    covariates: Annotated[str, typer.Option("--covariates", help="Comma-separated numeric covariate columns.")],
    family: Annotated[str, typer.Option("--family", help="binomial, gaussian or poisson.")] = "binomial",
    offset: Annotated[str | None, typer.Option("--offset", help="Offset column (e.g. log exposure).")] = None,
    min_cell_count: MinCellOpt = 10,
    as_json: JsonOpt = False,
) -> None:
    """Generalised linear model (canonical link) fitted exactly by federated IRLS."""
    from nordfed.fed.glm import FAMILIES, fit_glm

    if family not in FAMILIES:
        fail(f"--family must be one of {', '.join(FAMILIES)}, not {family!r}")
    covs = split_list(covariates)
    numeric = [outcome, *covs, *([offset] if offset else [])]
    fed = load_sites(csv, site_column, numeric, min_rows=min_cell_count, min_cell_count=min_cell_count)
    res = _run(lambda: fit_glm(fed, outcome=outcome, covariates=covs, family=family, offset=offset), csv)
    emit(res.to_dict(), as_json)


def add_commands(simulate_app: typer.Typer) -> None:
    """Attach km, cox and glm to the `simulate` group."""
    simulate_app.command("km")(km)
    simulate_app.command("cox")(cox)
    simulate_app.command("glm")(glm)
