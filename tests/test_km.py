"""Federated Kaplan-Meier equals lifelines (curve, Greenwood log(-log) CIs, log-rank) within 1e-9."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter
from lifelines.statistics import logrank_test, multivariate_logrank_test

from nordfed.fed.km import KMCurve, fit_km
from nordfed.fed.protocol import AlgorithmError
from nordfed.privacy.disclosure import DisclosurePolicy
from test_survival_support import EXACT, federation, gbsg2, lung, rossi, whas500, with_sites

TOL = 1e-9
CASES = {"rossi": (rossi, "week", "arrest", 3), "lung": (lung, "time", "status", 3),
         "gbsg2": (gbsg2, "time", "event", 4), "whas500": (whas500, "time", "event", 5)}


def _assert_curve(curve: KMCurve, durations: pd.Series, events: pd.Series) -> None:
    ref = KaplanMeierFitter().fit(durations, events)
    expected_times = np.unique(durations[events == 1])
    np.testing.assert_array_equal(curve.times, expected_times)
    np.testing.assert_allclose(curve.survival, ref.survival_function_.loc[expected_times].iloc[:, 0], rtol=0, atol=TOL)
    ci = ref.confidence_interval_.loc[expected_times]
    np.testing.assert_allclose(curve.ci_lower, ci.iloc[:, 0], rtol=0, atol=TOL)
    np.testing.assert_allclose(curve.ci_upper, ci.iloc[:, 1], rtol=0, atol=TOL)
    np.testing.assert_allclose(curve.at_risk, ref.event_table.loc[expected_times, "at_risk"], rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_pooled_and_per_site_curves_equal_lifelines(name: str) -> None:
    load, duration, event, k = CASES[name]
    df = with_sites(load(), k)
    res = fit_km(federation(df, EXACT), duration=duration, event=event)
    _assert_curve(res, df[duration], df[event])
    assert res.n == len(df)
    for s, part in df.groupby("site"):
        _assert_curve(res.per_site[f"site{s}"], part[duration], part[event])


def test_logrank_two_groups_equals_lifelines() -> None:
    df = with_sites(rossi(), 3)
    res = fit_km(federation(df, EXACT), duration="week", event="arrest", group="fin")
    a, b = df[df.fin == 0], df[df.fin == 1]
    ref = logrank_test(a.week, b.week, a.arrest, b.arrest)
    assert res.logrank["chi2"] == pytest.approx(ref.test_statistic, abs=TOL)
    assert res.logrank["p_value"] == pytest.approx(ref.p_value, abs=TOL)
    _assert_curve(res.by_group["1.0"], b.week, b.arrest)


def test_multivariate_logrank_equals_lifelines() -> None:
    df = with_sites(gbsg2(), 3)
    # grade I has few events per site: this test's sites allow cells of 5
    policy = DisclosurePolicy(min_cell_count=5, exact_event_times=True)
    res = fit_km(federation(df, policy), duration="time", event="event", group="tgrade")
    ref = multivariate_logrank_test(df.time, df.tgrade, df.event)
    assert res.logrank["df"] == 2
    assert res.logrank["chi2"] == pytest.approx(ref.test_statistic, abs=TOL)
    assert res.logrank["p_value"] == pytest.approx(ref.p_value, abs=TOL)
    with pytest.raises(AlgorithmError, match=r"fewer events in group I than"):
        fit_km(federation(df, EXACT), duration="time", event="event", group="tgrade")


def test_strict_policy_refuses_exact_times_and_accepts_a_coarse_grid() -> None:
    df = with_sites(rossi(), 3)
    with pytest.raises(AlgorithmError, match="per-time event counts in rows below this node's minimum cell count") \
            as info:
        fit_km(federation(df), duration="week", event="arrest")
    assert info.value.refused and "time_grid" in str(info.value)
    with pytest.raises(AlgorithmError, match=r"refused: [0-9]+ per-time event counts"):
        fit_km(federation(df), duration="week", event="arrest", time_grid=13.0)
    # half-year grid (rossi's follow-up ends at week 52): every released count is 0 or >= 10, and the curve
    # is lifelines' on the rounded times
    res = fit_km(federation(df), duration="week", event="arrest", time_grid=26.0)
    _assert_curve(res, np.ceil(df.week / 26.0) * 26.0, df.arrest)
    assert res.time_grid == 26.0 and res.times == [26.0, 52.0]


def test_to_dict_round_trips_through_json() -> None:
    import json

    df = with_sites(rossi(), 3)
    d = fit_km(federation(df, EXACT), duration="week", event="arrest", group="fin").to_dict()
    assert json.loads(json.dumps(d))["logrank"]["df"] == 1
    assert set(d["per_site"]) == {"site0", "site1", "site2"}


def test_site_policy_can_require_noise_on_released_times() -> None:
    """A site that requires noise releases counts on noised times: never a real time, close to the truth."""
    df = with_sites(lung(), 3)
    noisy = DisclosurePolicy(event_time_noise=2.0)
    res = fit_km(federation(df, noisy), duration="time", event="status")
    true_times = set(df.time[df.status == 1])
    assert res.times and not true_times & set(res.times)
    ref = KaplanMeierFitter().fit(df.time, df.status)
    # noise of sd 2 days on follow-up of years moves the curve very little: at most the few events within
    # a handful of days of each checkpoint can cross it (a step is 1/228 of the curve or so)
    checkpoints = [100.0, 200.0, 300.0, 400.0, 500.0]
    ours = [res.survival[np.searchsorted(res.times, t, side="right") - 1] for t in checkpoints]
    np.testing.assert_allclose(ours, ref.survival_function_at_times(checkpoints).to_numpy(), atol=0.05)
    again = fit_km(federation(df, noisy), duration="time", event="status")
    assert again.times != res.times  # fresh noise each release: the researcher cannot undo it
    with pytest.raises(ValueError, match="event_time_noise"):
        DisclosurePolicy(event_time_noise=-1.0)
