"""`nordfed simulate logistic`: federated LASSO / elastic-net logistic regression on a CSV split into sites."""

from __future__ import annotations

from pathlib import Path

import typer

from nordfed.cli.simulate import emit, fail, load_sites, split_list


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
    emit(result, as_json)


def add_commands(simulate_app: typer.Typer) -> None:
    """Attach this module's commands to the `simulate` group."""
    simulate_app.command("logistic")(logistic)
