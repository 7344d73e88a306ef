"""Federated GLM (IRLS) equals a pooled statsmodels GLM within 1e-6 on shipped data sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from nordfed.fed.glm import fit_glm
from nordfed.fed.protocol import AlgorithmError
from nordfed.privacy.disclosure import DisclosurePolicy
from test_survival_support import federation, gbsg2, lung, rossi, whas500, with_sites

TOL = 1e-6
FAMILY = {"binomial": sm.families.Binomial(), "gaussian": sm.families.Gaussian(), "poisson": sm.families.Poisson()}


def _check(df: pd.DataFrame, outcome: str, covs: list[str], family: str, offset: str | None = None) -> None:
    res = fit_glm(federation(df), outcome=outcome, covariates=covs, family=family, offset=offset)
    ref = sm.GLM(df[outcome], sm.add_constant(df[covs]), family=FAMILY[family],
                 offset=None if offset is None else df[offset]).fit(tol=1e-12)
    names = ["intercept", *covs]
    np.testing.assert_allclose([res.coefficients[c] for c in names], ref.params.to_numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose([res.standard_errors[c] for c in names], ref.bse.to_numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose([res.p_values[c] for c in names], ref.pvalues.to_numpy(), rtol=0, atol=TOL)
    assert res.deviance == pytest.approx(ref.deviance, abs=TOL)
    assert res.scale == pytest.approx(ref.scale, abs=TOL)
    assert res.n == len(df) and res.iterations >= 1


@pytest.mark.parametrize(("load", "outcome", "covs", "k"), [
    (rossi, "arrest", ["fin", "age", "race", "wexp", "mar", "paro", "prio"], 3),
    (gbsg2, "event", ["age", "horTh", "menostat", "pnodes", "tsize"], 4),
    (whas500, "event", ["age", "gender", "bmi", "hr", "chf"], 5),
])
def test_binomial(load, outcome: str, covs: list[str], k: int) -> None:
    _check(with_sites(load(), k), outcome, covs, "binomial")


@pytest.mark.parametrize(("load", "outcome", "covs", "k"), [
    (lung, "wt.loss", ["age", "sex", "ph.ecog", "meal.cal"], 3),
    (whas500, "sysbp", ["age", "gender", "bmi", "hr"], 5),
])
def test_gaussian_uses_dispersion(load, outcome: str, covs: list[str], k: int) -> None:
    _check(with_sites(load(), k), outcome, covs, "gaussian")


def test_poisson_with_offset() -> None:
    df = with_sites(rossi().assign(log_weeks=lambda d: np.log(d.week)), 3)
    _check(df, "prio", ["fin", "age", "race", "wexp", "mar"], "poisson", offset="log_weeks")
    df = with_sites(gbsg2().assign(log_time=lambda d: np.log(d.time)), 4)
    _check(df, "pnodes", ["age", "horTh", "tsize"], "poisson", offset="log_time")


def test_refusals_name_the_rule() -> None:
    df = with_sites(rossi(), 3)
    covs = ["fin", "age"]
    with pytest.raises(AlgorithmError, match="fewer rows than this node's minimum cell count"):
        fit_glm(federation(df, DisclosurePolicy(min_cell_count=145)), outcome="arrest", covariates=covs)
    with pytest.raises(AlgorithmError, match="parameters per row"):
        fit_glm(federation(df, DisclosurePolicy(max_params_per_row=0.01)), outcome="arrest", covariates=covs)
    # a rare binary outcome: one site has only 5 events
    rare = df.assign(arrest=0.0)
    rare.loc[rare.index[:5], "arrest"] = 1.0
    rare.loc[rare.index[-50:], "arrest"] = 1.0
    with pytest.raises(AlgorithmError, match="site0: refused: 1 outcome levels of arrest below"):
        fit_glm(federation(rare), outcome="arrest", covariates=covs)


def test_bad_input_is_a_clear_error() -> None:
    df = with_sites(rossi(), 3)
    with pytest.raises(ValueError, match="family must be one of"):
        fit_glm(federation(df), outcome="arrest", covariates=["age"], family="gamma")
    with pytest.raises(ValueError, match="missing column"):
        fit_glm(federation(df), outcome="arrest", covariates=["nope"])
    with pytest.raises(ValueError, match=r"binomial outcome 'prio' must lie in \[0, 1\]"):
        fit_glm(federation(df), outcome="prio", covariates=["age"])


def test_irls_halves_a_step_that_a_site_refuses_as_concentrated() -> None:
    from nordfed.fed.glm import irls
    from nordfed.privacy.disclosure import CONCENTRATED

    asked: list[float] = []

    def evaluate(beta: np.ndarray, limit: float = 10.0, refusal: str = f"refused: {CONCENTRATED} X'WX") -> dict:
        # IRLS is Newton's method: on -log cosh(b - 3) its first step from 0 is about 100, far past where a site
        # would refuse, though the optimum (3) is well inside
        b = float(beta[0])
        asked.append(b)
        if abs(b) > limit:
            raise AlgorithmError("DK", refusal, refused=True)
        curvature, gradient = 1 / np.cosh(b - 3) ** 2, -np.tanh(b - 3)
        return {"xtwx": np.array([[curvature]]), "xtwz": np.array([curvature * b + gradient]),
                "deviance": 2 * np.log(np.cosh(b - 3))}

    beta, sums, _ = irls(evaluate, np.zeros(1))
    assert beta[0] == pytest.approx(3.0, abs=1e-8) and max(abs(b) for b in asked) > 10
    assert sums["deviance"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(AlgorithmError, match=CONCENTRATED):  # nowhere to step: the refusal itself
        irls(lambda b: evaluate(b, limit=-1.0) if b.any() else evaluate(b), np.zeros(1))
    with pytest.raises(AlgorithmError, match="minimum cell count"):  # other refusals are not stepped around
        irls(lambda b: evaluate(b, refusal="refused: fewer rows than the minimum cell count"), np.zeros(1))
