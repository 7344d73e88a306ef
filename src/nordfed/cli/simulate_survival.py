"""`nordfed simulate km|cox|glm`: federated Kaplan-Meier, Cox and GLM on a CSV split into sites."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import RenderableType

from nordfed.cli.simulate import (
    BINARY,
    NON_NEGATIVE,
    UNIT_INTERVAL,
    Check,
    coefficient_table,
    distinct_columns,
    emit,
    facts,
    fail,
    fmt,
    fmt_count,
    fmt_p,
    load_sites,
    note,
    safe_exp,
    split_list,
    table,
)
from nordfed.fed.protocol import AlgorithmError
from nordfed.privacy.disclosure import DisclosureError

if TYPE_CHECKING:
    from nordfed.fed.cox import CoxResult
    from nordfed.fed.glm import GLMResult
    from nordfed.fed.km import KMCurve, KMResult

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


def median_survival(curve: KMCurve) -> tuple[float, float, float]:
    """Median survival time and its 95 % CI, as lifelines' ``median_survival_time_`` and
    ``median_survival_times(confidence_interval_)``: the first time the estimate (the lower, the upper bound)
    is at or below 0.5; ``inf`` where it never is (not reached)."""
    def first_at_half(values: Sequence[float]) -> float:
        hit = np.flatnonzero(np.asarray(values) <= 0.5)
        return float(curve.times[hit[0]]) if hit.size else math.inf

    return first_at_half(curve.survival), first_at_half(curve.ci_lower), first_at_half(curve.ci_upper)


def _fmt_time(t: float) -> str:
    return fmt_count(t) if math.isfinite(t) else "not reached"


def _median_text(curve: KMCurve) -> str:
    median, lower, upper = median_survival(curve)
    if math.isinf(lower):
        return "not reached"  # so are the median and the upper bound
    return f"{_fmt_time(median)} (95% CI {_fmt_time(lower)} to {_fmt_time(upper)})"


def _km_views(res: KMResult, group: str | None) -> list[RenderableType]:
    """The survival table and median survival (lifelines' survival_function_ with its CI), per group and
    the log-rank test with --group."""
    rows = zip(res.times, res.at_risk, res.events, res.survival, res.ci_lower, res.ci_upper, strict=True)
    views: list[RenderableType] = [
        table(f"Kaplan-Meier survival, pooled over {len(res.per_site)} site(s)",
              ["time", "at risk", "events", "survival", "lower 95%", "upper 95%"],
              ([fmt_count(t), fmt_count(n), fmt_count(d), fmt(s), fmt(lo), fmt(hi)] for t, n, d, s, lo, hi in rows)),
        facts({"n": res.n, "events": fmt_count(sum(res.events)), "median survival": _median_text(res)}),
    ]
    if group and res.by_group:
        lr = res.logrank or {}
        views += ["", table(f"by {group}", ["", "events", "expected", "median", "lower 95%", "upper 95%"],
                            ([g, fmt_count(sum(c.events)), fmt(lr["expected"][g]) if lr else "",
                              *map(_fmt_time, median_survival(c))] for g, c in res.by_group.items()))]
        if lr:
            views.append(facts({"log-rank chi2": fmt(lr["chi2"]), "df": lr["df"], "p": fmt_p(lr["p_value"])}))
    return views


def _cox_views(res: CoxResult) -> list[RenderableType]:
    """lifelines' summary: coef, exp(coef) (the hazard ratio), se, the hazard ratio's 95 % CI, z, p."""
    from nordfed.fed.cox import concordance_note

    hr_ci = ({k: safe_exp(v) for k, v in res.ci_lower.items()}, {k: safe_exp(v) for k, v in res.ci_upper.items()})
    concordance = fmt(res.concordance) + (f" ({res.concordance_scope})" if concordance_note(res) else "")
    return [
        coefficient_table("Cox proportional hazards model (exp(coef) = hazard ratio)", res.coefficients, exp=True,
                          se=res.standard_errors, z=res.z, p=res.p_values, ci=hr_ci,
                          ci_headers=("HR lower 95%", "HR upper 95%")),
        facts({"n": res.n, "events": res.events, "concordance": concordance,
               "log-likelihood": fmt(res.log_likelihood), "ties": res.ties,
               **({"strata": "site"} if res.strata_by_site else {}), "iterations": res.iterations}),
    ]


def _glm_views(res: GLMResult) -> list[RenderableType]:
    """statsmodels' summary: coef, se, z, p, 95 % CI; exp(coef) where it is a ratio (odds or rate)."""
    ratio = {"binomial": " (exp(coef) = odds ratio)", "poisson": " (exp(coef) = rate ratio)"}.get(res.family, "")
    return [
        coefficient_table(f"GLM, {res.family} family, canonical link{ratio}", res.coefficients, exp=bool(ratio),
                          se=res.standard_errors, z=res.z, p=res.p_values, ci=(res.ci_lower, res.ci_upper)),
        facts({"n": res.n, "df resid": res.df_resid, "deviance": fmt(res.deviance),
               "Pearson chi2": fmt(res.pearson_chi2), "scale": fmt(res.scale), "iterations": res.iterations}),
    ]


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

    distinct_columns({"--site-column": [site_column], "--duration": [duration], "--event": [event]})
    fed = load_sites(csv, site_column, [duration, event], min_rows=min_cell_count, min_cell_count=min_cell_count,
                     keep=[group] if group else None, exact_event_times=exact_event_times,
                     checks={duration: NON_NEGATIVE, event: BINARY})
    res = _run(lambda: fit_km(fed, duration=duration, event=event, group=group, time_grid=time_grid), csv)
    out: dict[str, Any] = {k: getattr(res, k) for k in ("times", "survival", "ci_lower", "ci_upper", "at_risk",
                                                         "events")}
    if group:
        out["by_group"] = {g: c.to_dict() for g, c in res.by_group.items()}
        out["logrank"] = res.logrank
    emit(out, as_json, *_km_views(res, group))


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
    distinct_columns({"--site-column": [site_column], "--duration": [duration], "--event": [event],
                      "--covariates": covs})
    fed = load_sites(csv, site_column, [duration, event, *covs], min_rows=min_cell_count,
                     min_cell_count=min_cell_count, exact_event_times=exact_event_times,
                     checks={duration: NON_NEGATIVE, event: BINARY})
    res = _run(lambda: fit_cox(fed, duration=duration, event=event, covariates=covs, ties=ties,
                               strata_by_site=strata_by_site), csv)
    out = res.to_dict()
    out.pop("variance")
    emit(out, as_json, *_cox_views(res))
    scope_note = concordance_note(res)
    if scope_note:
        # stderr, so --json output stays machine-readable; concordance_scope carries the same fact there
        note(scope_note)


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
    covs = split_list(covariates)  # none: an intercept-only model
    distinct_columns({"--site-column": [site_column], "--outcome": [outcome], "--covariates": covs,
                      "--offset": [offset] if offset else []})
    numeric = [outcome, *covs, *([offset] if offset else [])]
    # the family's range of the outcome, checked here so the error names the line (the sites name no row)
    outcome_range: dict[str, Check] = {"binomial": UNIT_INTERVAL, "poisson": NON_NEGATIVE}
    checks = {outcome: outcome_range[family]} if family in outcome_range else None
    fed = load_sites(csv, site_column, numeric, min_rows=min_cell_count, min_cell_count=min_cell_count,
                     checks=checks)
    res = _run(lambda: fit_glm(fed, outcome=outcome, covariates=covs, family=family, offset=offset), csv)
    emit(res.to_dict(), as_json, *_glm_views(res))


def add_commands(simulate_app: typer.Typer) -> None:
    """Attach km, cox and glm to the `simulate` group."""
    simulate_app.command("km")(km)
    simulate_app.command("cox")(cox)
    simulate_app.command("glm")(glm)
