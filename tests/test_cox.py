"""Federated Cox PH equals pooled lifelines (Efron, strata) and statsmodels (Breslow) on shipped data sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sksurv.metrics import concordance_index_censored
from statsmodels.duration.hazard_regression import PHReg

from nordfed.fed.cox import fit_cox
from nordfed.fed.protocol import AlgorithmError
from nordfed.privacy.disclosure import DisclosurePolicy
from test_survival_support import EXACT, federation, gbsg2, lung, rossi, whas500, with_sites

TOL = 1e-6
# lifelines stops Newton at a loose default precision (lung is then 4e-6 off the optimum); converge it fully
CONVERGED = {"precision": 1e-12}
CASES = {
    "rossi": (rossi, "week", "arrest", ["fin", "age", "race", "wexp", "mar", "paro", "prio"], 3),
    "lung": (lung, "time", "status", ["age", "sex", "ph.ecog", "ph.karno", "wt.loss"], 3),
    "gbsg2": (gbsg2, "time", "event", ["age", "horTh", "menostat", "pnodes", "progrec", "estrec", "tsize"], 4),
    "whas500": (whas500, "time", "event", ["age", "gender", "bmi", "hr", "chf", "sysbp"], 5),
}


def _case(name: str) -> tuple[pd.DataFrame, str, str, list[str]]:
    load, duration, event, covs, k = CASES[name]
    return with_sites(load()[[duration, event, *covs]], k), duration, event, covs


def _values(d: dict[str, float], covs: list[str]) -> np.ndarray:
    return np.array([d[c] for c in covs])


@pytest.mark.parametrize("name", list(CASES))
def test_efron_equals_lifelines(name: str) -> None:
    df, duration, event, covs = _case(name)
    res = fit_cox(federation(df, EXACT), duration=duration, event=event, covariates=covs, ties="efron")
    ref = CoxPHFitter().fit(df.drop(columns="site"), duration, event, fit_options=CONVERGED)
    np.testing.assert_allclose(_values(res.coefficients, covs), ref.params_[covs].to_numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(_values(res.standard_errors, covs), ref.standard_errors_[covs].to_numpy(),
                               rtol=0, atol=TOL)
    np.testing.assert_allclose(_values(res.p_values, covs), ref.summary["p"][covs].to_numpy(), rtol=0, atol=TOL)
    assert res.log_likelihood == pytest.approx(ref.log_likelihood_, abs=TOL)
    assert res.n == len(df) and res.events == int(df[event].sum())


@pytest.mark.parametrize("name", ["rossi", "whas500"])
def test_breslow_equals_statsmodels(name: str) -> None:
    df, duration, event, covs = _case(name)
    res = fit_cox(federation(df, EXACT), duration=duration, event=event, covariates=covs, ties="breslow")
    ref = PHReg(df[duration], df[covs], status=df[event], ties="breslow").fit()
    np.testing.assert_allclose(_values(res.coefficients, covs), np.asarray(ref.params), rtol=0, atol=TOL)
    np.testing.assert_allclose(_values(res.standard_errors, covs), np.asarray(ref.bse), rtol=0, atol=TOL)
    assert res.log_likelihood == pytest.approx(ref.llf, abs=TOL)


@pytest.mark.parametrize("name", ["rossi", "gbsg2"])
def test_strata_by_site_equals_lifelines_strata(name: str) -> None:
    df, duration, event, covs = _case(name)
    # stratified fits release only per-site likelihood sums: the default (strict) policy allows them
    res = fit_cox(federation(df), duration=duration, event=event, covariates=covs, strata_by_site=True)
    ref = CoxPHFitter().fit(df, duration, event, strata=["site"], fit_options=CONVERGED)
    np.testing.assert_allclose(_values(res.coefficients, covs), ref.params_[covs].to_numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(_values(res.standard_errors, covs), ref.standard_errors_[covs].to_numpy(),
                               rtol=0, atol=TOL)
    assert res.log_likelihood == pytest.approx(ref.log_likelihood_, abs=TOL)


def test_concordance_pools_within_site_pairs() -> None:
    df, duration, event, covs = _case("gbsg2")
    res = fit_cox(federation(df, EXACT), duration=duration, event=event, covariates=covs)
    beta = _values(res.coefficients, covs)
    num = den = 0.0
    for _, part in df.groupby("site"):
        _, conc, disc, tied, _ = concordance_index_censored(part[event].to_numpy(bool), part[duration].to_numpy(),
                                                            part[covs].to_numpy() @ beta)
        num += conc + 0.5 * tied
        den += conc + disc + tied
    assert res.concordance == pytest.approx(num / den, abs=1e-12)
    # with one site every pair is compared, as lifelines does
    one = fit_cox(federation(df.assign(site=0), EXACT), duration=duration, event=event, covariates=covs)
    ref = CoxPHFitter().fit(df.drop(columns="site"), duration, event, fit_options=CONVERGED)
    assert one.concordance == pytest.approx(ref.concordance_index_, abs=1e-9)


def test_unstratified_needs_exact_event_times_policy() -> None:
    df, duration, event, covs = _case("rossi")
    with pytest.raises(AlgorithmError, match="exact_event_times") as info:
        fit_cox(federation(df), duration=duration, event=event, covariates=covs)
    assert info.value.refused


def test_refuses_small_sites_and_too_many_parameters() -> None:
    df, duration, event, covs = _case("rossi")
    with pytest.raises(AlgorithmError, match=r"fewer rows than this node's minimum cell count \(200\)"):
        fit_cox(federation(df, DisclosurePolicy(min_cell_count=200, exact_event_times=True)),
                duration=duration, event=event, covariates=covs)
    with pytest.raises(AlgorithmError, match="parameters per row"):
        fit_cox(federation(df, DisclosurePolicy(max_params_per_row=0.01, exact_event_times=True)),
                duration=duration, event=event, covariates=covs, strata_by_site=True)


def test_to_dict_is_plain() -> None:
    df, duration, event, covs = _case("rossi")
    d = fit_cox(federation(df), duration=duration, event=event, covariates=covs[:2], strata_by_site=True).to_dict()
    assert set(d["coefficients"]) == {"fin", "age"} and d["iterations"] >= 1
