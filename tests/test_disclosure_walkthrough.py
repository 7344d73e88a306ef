"""Gaps a disclosure walkthrough found: Cox partials at steep coefficients, released maxima, near-universal counts."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import nordfed.fed.cox  # noqa: F401  (registers the Cox partials)
from nordfed.features import analyses as A
from nordfed.features.covariates import analysis_of
from nordfed.features.preprocessing import combine_stats, plan_preprocessing
from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from nordfed.privacy.disclosure import DisclosurePolicy, round_up_significant
from test_cohorts_support import add, concept, new_cdm

MIN = 10


# --------------------------------------------------------------------------------------------- Cox
def _cox_frame() -> pd.DataFrame:
    """/tmp/walk/exp/cox_dom3.py: the target row has the largest x and is followed longest."""
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame({"t": rng.integers(1, 100, n).astype(float), "e": rng.integers(0, 2, n),
                       "age": rng.integers(40, 90, n), "x": rng.normal(size=n)})
    df.loc[0, ["t", "e", "x", "age"]] = [200, 0, 10.0, 63]
    return df


def _stratum(df: pd.DataFrame, policy: DisclosurePolicy | None = None) -> dict:
    fed = InProcessFederation.from_frames({"DK": df}, policy)
    params = {"duration": "t", "event": "e", "covariates": ["age", "x"], "beta": [0.0, 8.0], "center": [0.0, 0.0],
              "ties": "breslow"}
    return fed.run("nordfed.cox.stratum", params)["DK"]


def test_cox_stratum_refuses_coefficients_that_single_out_one_row() -> None:
    # without the check the gradient gave (Σ event ages - grad_age) / events = the target's exact age
    with pytest.raises(AlgorithmError, match="refused: one row would carry most"):
        _stratum(_cox_frame())


def test_cox_risk_sets_refuse_the_same_coefficients() -> None:
    df = _cox_frame()
    fed = InProcessFederation.from_frames({"DK": df}, DisclosurePolicy(exact_event_times=True))
    grid = np.unique(df.loc[df.e == 1, "t"])
    with pytest.raises(AlgorithmError, match="refused: one row would carry most"):
        fed.run("nordfed.cox.risk_sets", {"duration": "t", "event": "e", "covariates": ["age", "x"],
                                          "beta": [0.0, 8.0], "center": [0.0, 0.0], "grid": grid})


def test_cox_refuses_a_row_that_shares_the_top_weight_with_one_that_leaves_early() -> None:
    # two rows share the largest x, so neither holds more than half of exp(xβ); but the twin leaves before the
    # first event, and every risk set the gradient sums over is then the target's alone
    df = _cox_frame()
    df.loc[1, ["t", "e", "x"]] = [0.5, 0, 10.0]
    w = np.exp(8.0 * df["x"].to_numpy())
    assert w.max() / w.sum() <= 0.5
    with pytest.raises(AlgorithmError, match="refused: one row would carry most"):
        _stratum(df)


def test_cox_stratum_answers_at_ordinary_coefficients() -> None:
    df = _cox_frame()
    fed = InProcessFederation.from_frames({"DK": df})
    out = fed.run("nordfed.cox.stratum", {"duration": "t", "event": "e", "covariates": ["age", "x"],
                                          "beta": [0.01, 0.2], "center": [0.0, 0.0], "ties": "efron"})["DK"]
    assert np.isfinite(out["grad"]).all()


# --------------------------------------------------------------------------------------------- covariate_stats
MEAS, UNIT, COND = 701, 8840, 501


def _cdm(url: str, n: int, lacking: int, seed: int):
    """A site whose persons all have a measurement value and a condition, except ``lacking`` of them."""
    rng = np.random.default_rng(seed)
    cdm = new_cdm(url)
    concept(cdm, {COND: "condition"})
    concept(cdm, {MEAS: "creatinine"}, domain="Measurement")
    concept(cdm, {UNIT: "micromole per liter"}, domain="Unit", vocabulary="UCUM")
    index = [dt.date(2015, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 1500, n)]
    pids = list(range(1, n + 1))
    values = np.round(rng.lognormal(np.log(80.0), 0.5, n), 1)
    values[0] = 1730.3  # one person's exact value: it must not leave the site
    add(cdm, "person", [{"person_id": p, "gender_concept_id": 8507, "year_of_birth": 1950} for p in pids])
    add(cdm, "observation_period", [{"person_id": p, "observation_period_start_date": dt.date(2000, 1, 1),
                                     "observation_period_end_date": dt.date(2025, 1, 1)} for p in pids])
    add(cdm, "cohort", [{"cohort_definition_id": 1, "subject_id": p, "cohort_start_date": d, "cohort_end_date": d}
                        for p, d in zip(pids, index, strict=True)])
    having = pids[lacking:]
    add(cdm, "measurement", [{"person_id": p, "measurement_concept_id": MEAS, "value_as_number": float(values[p - 1]),
                              "measurement_date": index[p - 1] - dt.timedelta(days=10), "unit_concept_id": UNIT}
                             for p in having])
    add(cdm, "condition_occurrence", [{"person_id": p, "condition_concept_id": COND,
                                       "condition_start_date": index[p - 1] - dt.timedelta(days=20)}
                                      for p in having])
    return cdm, float(values[lacking:].max())


SPEC = {"target": 1, "outcome": "death",
        "covariates": {"gender": False, "age_group": False, "index_year": False, "index_month": False},
        "population": {"requireTimeAtRisk": False, "removeSubjectsWithPriorOutcome": False}}


@pytest.fixture
def site(tmp_path):
    cdm, true_max = _cdm(f"duckdb:///{tmp_path / 'a.duckdb'}", n=60, lacking=3, seed=1)
    return InProcessFederation.from_cdms({"A": cdm}, DisclosurePolicy(min_cell_count=MIN)), true_max


def test_covariate_stats_releases_no_exact_maximum(site) -> None:
    fed, true_max = site
    r = fed.run("nordfed.features.covariate_stats", SPEC)["A"]
    ids = np.asarray(r["covariate_ids"])
    value = np.flatnonzero(analysis_of(ids) == A.MEASUREMENT_VALUE_LONG)
    assert len(value) == 1
    released = r["max_values"][int(value[0])]
    assert released == round_up_significant(true_max) > true_max
    # the plan normalises by the released bound, so every value stays in [0, 1]
    plan = plan_preprocessing(fed, SPEC)
    assert plan.max_values[int(ids[value[0]])] == released


def test_near_universal_covariates_release_no_small_complement(site) -> None:
    fed, _ = site
    r = fed.run("nordfed.features.covariate_stats", SPEC)["A"]
    n = r["n"]
    assert n == 60
    # nothing released lets the researcher subtract their way to the 3 persons without the covariates
    derived = [n - k for k in r["counts"] if k is not None] + [n - k for k in r["exactly_one"].values()
                                                               if k is not None]
    assert not [d for d in derived if 0 < d < MIN]
    near = set(r["nearly_all"])
    assert len(near) >= 3  # the condition, the measurement and the measurement's value
    assert all(k is None for c, k in zip(r["covariate_ids"], r["counts"], strict=True) if c in near)
    # ... and the covariates stay in the study
    plan = plan_preprocessing(fed, SPEC)
    assert near <= set(plan.covariate_ids)


def test_combine_keeps_near_universal_covariates_that_are_neither_rare_nor_constant() -> None:
    cond = 2001 * 1000 + 102  # any binary analysis
    a = {"n": 50, "covariate_ids": [cond], "counts": [None], "nearly_all": [cond], "max_values": [None],
         "exactly_one": {}}
    b = {"n": 950, "covariate_ids": [cond], "counts": [950], "max_values": [None], "exactly_one": {}}
    plan = combine_stats({"A": a, "B": b})
    # the pooled count is site A's n as an upper bound, which equals the pooled n, yet A's rows do not all have it
    assert plan.counts[cond] == 1000 and cond in plan.covariate_ids and cond in plan.nearly_all
    only_a = combine_stats({"A": a, "B": {**b, "covariate_ids": [], "counts": [], "max_values": []}},
                           min_fraction=0.2)
    assert cond in only_a.covariate_ids  # nearly all of a site's rows are not rare


def test_round_up_significant_bounds_from_above() -> None:
    rng = np.random.default_rng(3)
    for v in np.concatenate([rng.lognormal(0, 6, 2000), [0.29, 0.0123, 1730.0, 1e-7]]):
        r = round_up_significant(float(v))
        assert v <= r <= v * (1.1 + 1e-12)
        assert float(f"{r:.2g}") == r  # two significant digits


def test_cox_newton_halves_a_step_that_a_site_refuses_as_concentrated() -> None:
    from nordfed.fed.cox import newton
    from nordfed.privacy.disclosure import CONCENTRATED

    asked: list[float] = []

    def evaluate(beta: np.ndarray, limit: float = 10.0, refusal: str = f"refused: {CONCENTRATED} the gradient"):
        # -log cosh(b - 3): Newton's first step from 0 is about 100, far past where a site would refuse
        b = float(beta[0])
        asked.append(b)
        if abs(b) > limit:
            raise AlgorithmError("DK", refusal, refused=True)
        return -np.log(np.cosh(b - 3)), np.array([-np.tanh(b - 3)]), np.array([[1 / np.cosh(b - 3) ** 2]])

    beta, _, _, _ = newton(evaluate, 1)
    assert beta[0] == pytest.approx(3.0) and max(abs(b) for b in asked) > 10  # refused, halved, converged
    with pytest.raises(AlgorithmError, match=CONCENTRATED):  # nowhere to step: the refusal itself
        newton(lambda b: evaluate(b, limit=-1.0) if b.any() else evaluate(b), 1)
    with pytest.raises(AlgorithmError, match="minimum cell count"):  # other refusals are not stepped around
        newton(lambda b: evaluate(b, refusal="refused: fewer rows than the minimum cell count"), 1)
