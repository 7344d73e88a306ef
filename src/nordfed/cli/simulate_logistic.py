"""`nordfed simulate logistic`: federated LASSO / elastic-net logistic regression on a CSV split into sites."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import RenderableType

from nordfed.cli.simulate import coefficient_table, distinct_columns, emit, facts, fail, fmt, load_sites, split_list


def logistic(
    csv: Path = typer.Option(..., "--csv", help="CSV file with one row per person."),
    site_column: str = typer.Option(..., "--site-column", help="Column whose values name the sites."),
    outcome: str = typer.Option(..., "--outcome", help="Binary (0/1) outcome column."),
    covariates: str = typer.Option(..., "--covariates", help="Comma-separated covariate columns."),
    l1: float | None = typer.Option(None, "--l1", help="Penalty lambda (glmnet scale; sklearn C = 1/(n*lambda))."),
    alpha: float = typer.Option(1.0, "--alpha", help="Elastic-net mixing: 1 = LASSO, 0 = ridge."),
    cv: int | None = typer.Option(None, "--cv", help="Pick lambda by K-fold federated cross-validation."),
    select: str = typer.Option("min", "--select", help="With --cv: 'min' or '1se' lambda."),
    n_lambda: int = typer.Option(100, "--n-lambda", help="With --cv: length of the lambda path."),
    no_standardize: bool = typer.Option(False, "--no-standardize", help="Penalise covariates on their own scale."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    min_cell_count: int = typer.Option(10, "--min-cell-count", help="Disclosure threshold at every site."),
    as_json: bool = typer.Option(False, "--json", help="Plain JSON output."),
) -> None:
    """Fit a penalised logistic regression across the sites; print coefficients on the covariates' scale."""
    from nordfed.fed.lasso import fit_lasso
    from nordfed.fed.protocol import AlgorithmError

    covs = split_list(covariates)
    if not covs:
        fail("--covariates: give at least one column")
    if outcome in covs:
        fail(f"--covariates: the outcome {outcome!r} cannot also be a covariate")
    distinct_columns({"--site-column": [site_column], "--outcome": [outcome], "--covariates": covs})
    if l1 is None and cv is None:
        fail("give --l1 LAMBDA or --cv K")
    if l1 is not None and l1 < 0:
        fail(f"--l1 must be non-negative, got {l1}")
    if not 0.0 <= alpha <= 1.0:
        fail(f"--alpha must be between 0 and 1, got {alpha}")
    if cv is not None and cv < 2:
        fail(f"--cv must be at least 2, got {cv}")
    if n_lambda < 2:
        fail(f"--n-lambda must be at least 2, got {n_lambda}")
    if select not in ("min", "1se"):
        fail(f"--select must be 'min' or '1se', got {select!r}")
    if seed < 0:
        fail(f"--seed must be non-negative, got {seed}")  # numpy's generators take no negative seed
    fed = load_sites(csv, site_column, [*covs, outcome], min_cell_count=min_cell_count, binary=[outcome])
    try:
        fit = fit_lasso(fed, covs, outcome, lam=None if cv else l1, alpha=alpha, standardize=not no_standardize,
                        cv_folds=cv, select=select, n_lambda=n_lambda, seed=seed)
    except (ValueError, AlgorithmError) as exc:
        fail(f"{csv}: {exc}")
    b0, coef = fit.original()
    result = {"coefficients": {"intercept": b0, **{c: float(b) for c, b in zip(covs, coef, strict=True)}},
              "lambda": fit.lam, "alpha": alpha, "iterations": fit.iterations, "rounds": fit.rounds,
              "n": fit.n, "events": fit.n_events, "sites": fit.sites, "kkt_violation": fit.kkt}
    if fit.cv is not None:
        result["cv"] = {"folds": fit.cv.n_folds, "lambda_min": fit.cv.lambda_min, "lambda_1se": fit.cv.lambda_1se,
                        "selected": select}
    emit(result, as_json, *_views(result))


def _views(result: dict[str, Any]) -> list[RenderableType]:
    """The coefficients (exp(coef) = odds ratio; a penalised fit has no standard errors) and the fit's figures."""
    alpha = result["alpha"]
    kind = "LASSO" if alpha == 1 else "ridge" if alpha == 0 else "elastic-net"
    figures: dict[str, Any] = {"lambda": fmt(result["lambda"]), "alpha": f"{alpha:g}", "n": result["n"],
                               "events": result["events"], "sites": ", ".join(result["sites"]),
                               "iterations": result["iterations"], "rounds": result["rounds"],
                               "KKT violation": fmt(result["kkt_violation"])}
    views: list[RenderableType] = [
        coefficient_table(f"{kind} logistic regression (exp(coef) = odds ratio)", result["coefficients"], exp=True),
        facts(figures)]
    if "cv" in result:
        cv = result["cv"]
        views.append(facts({"CV folds": cv["folds"], "lambda min": fmt(cv["lambda_min"]),
                            "lambda 1se": fmt(cv["lambda_1se"]), "selected": cv["selected"]}))
    return views


def add_commands(simulate_app: typer.Typer) -> None:
    """Attach this module's commands to the `simulate` group."""
    simulate_app.command("logistic")(logistic)
