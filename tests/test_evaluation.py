"""Federated evaluation equals pooled computations: AUROC (1e-4 vs sklearn), Brier and calibration (exact)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.special import expit, logit
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from nordfed.fed.evaluation import evaluate, leave_one_site_out, temporal_validation
from nordfed.fed.lasso import fit_lasso
from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from test_lasso_support import simulated, split

# a deliberately miscalibrated model so intercept and slope are not trivially 0 and 1
COLS = ["c0", "c1", "c3", "b0", "b2", "b4"]
MODEL = {"covariates": COLS, "coef": [0.9, -0.12, 0.012, 1.1, 1.3, -0.8], "intercept": 3.0}


def _pred(df) -> np.ndarray:
    return expit(MODEL["intercept"] + df[COLS].to_numpy() @ np.array(MODEL["coef"]))


def _delong_se(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    m, n = len(pos), len(neg)
    r_all = rankdata(np.r_[pos, neg])
    v10 = (r_all[:m] - rankdata(pos)) / n
    v01 = 1 - (r_all[m:] - rankdata(neg)) / m
    return float(np.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n))


@pytest.mark.parametrize(("seed", "k"), [(0, 3), (1, 5)])
def test_pooled_metrics_equal_pooled_computations(seed: int, k: int) -> None:
    df, _ = simulated(6000, seed=seed)
    ev = evaluate(split(df, k, seed=seed), MODEL, "y")
    y, p = df["y"].to_numpy(), _pred(df)
    auc = roc_auc_score(y, p)
    assert abs(ev.auroc - auc) < 1e-4
    assert ev.auroc_ci[0] < auc < ev.auroc_ci[1]
    assert ev.auroc_se == pytest.approx(_delong_se(y, p), rel=0.15)  # Hanley-McNeil vs DeLong
    assert abs(ev.auprc - average_precision_score(y, p)) < 5e-3
    assert ev.brier == pytest.approx(brier_score_loss(y, p), abs=1e-12)
    lp = logit(p)
    cal_int = sm.GLM(y, np.ones(len(y)), offset=lp, family=sm.families.Binomial()).fit(tol=1e-12)
    cal_slope = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit(tol=1e-12)
    assert ev.calibration_intercept == pytest.approx(cal_int.params[0], abs=1e-6)
    assert ev.calibration_slope == pytest.approx(cal_slope.params[1], abs=1e-6)
    recal = expit(cal_slope.params[0] + cal_slope.params[1] * lp)
    assert ev.ici == pytest.approx(np.mean(np.abs(p - recal)), abs=1e-6)
    assert ev.n == len(df) and ev.n_events == y.sum()


def test_calibration_table_and_demographics_add_up_to_pooled_counts() -> None:
    df, _ = simulated(6000, seed=2)
    ev = evaluate(split(df, 3), MODEL, "y")
    y, p = df["y"].to_numpy(), _pred(df)
    table = ev.calibration_table
    assert len(table) == 10
    cuts = [row["risk_to"] for row in table[:-1]]
    group = np.searchsorted(cuts, p, side="right")
    for i, row in enumerate(table):
        assert row["sites_suppressed"] == 0
        assert row["n"] == np.sum(group == i)
        assert row["observed"] == y[group == i].sum()
        assert row["expected"] == pytest.approx(p[group == i].sum())
        assert abs(row["n"] / len(df) - 0.1) < 0.01  # federated deciles are deciles of the pooled risk
    sex = {r["group"]: r for r in ev.demographics["sex"]}
    assert sex["F"]["n"] == (df.sex == "F").sum() and sex["M"]["observed"] == df.y[df.sex == "M"].sum()
    age = {r["group"]: r for r in ev.demographics["age_group"]}
    assert age["80+"]["n"] == (df.age >= 80).sum() and age["<50"]["n"] == (df.age < 50).sum()


def test_calibration_groups_a_site_would_suppress_are_merged_not_left_as_gaps() -> None:
    # at 25 per cell, the low-risk deciles have too few outcomes per site: merged with their neighbours, every
    # released group is complete and still adds up to the pooled rows
    df, _ = simulated(3000, seed=6)
    fed = split(df, 3, min_cell_count=25)
    ev = evaluate(fed, MODEL, "y", age_column=None, sex_column=None)
    y, p = df["y"].to_numpy(), _pred(df)
    table = ev.calibration_table
    assert 2 <= len(table) < 10
    assert [r["sites_suppressed"] for r in table] == [0] * len(table)
    group = np.searchsorted([r["risk_to"] for r in table[:-1]], p, side="right")
    for i, row in enumerate(table):
        assert (row["n"], row["observed"]) == (np.sum(group == i), y[group == i].sum())
        assert row["expected"] == pytest.approx(p[group == i].sum())
    # the question before the merge releases no count at all
    params = {"dataset": None, "model": MODEL, "outcome": "y", "cutoffs": [0.5], "hidden_only": True}
    assert all(set(r) == {"hidden"} and len(r["hidden"]) == 2 for r in fed.run("nordfed.eval.groups", params).values())


def test_single_site_auroc_is_exact_and_per_site_values_match() -> None:
    df, _ = simulated(1500, seed=3)
    fed = split(df, 3)
    ev = evaluate(fed, MODEL, "y", sites=["S1"], age_column=None, sex_column=None)
    s1 = fed._sites["S1"].frames["default"]
    assert ev.auroc == pytest.approx(roc_auc_score(s1.y, _pred(s1)), abs=1e-12)
    ev_all = evaluate(fed, MODEL, "y", age_column=None, sex_column=None)
    assert ev_all.per_site["S1"]["auroc"] == pytest.approx(ev.auroc, abs=1e-12)
    assert ev_all.demographics == {}


def test_no_released_count_below_min_cell_count() -> None:
    df, _ = simulated(3000, seed=4)
    fed = split(df, 3, min_cell_count=25)
    params = {"dataset": None, "model": MODEL, "outcome": "y"}
    for res in fed.run("nordfed.eval.scores", params).values():
        for blocks in res["blocks"].values():
            assert (blocks[:, 2] >= 25).all()
    cut = list(np.quantile(_pred(df), [0.01, 0.5, 0.995]))
    released = fed.run("nordfed.eval.groups", {**params, "cutoffs": cut, "by": {"sex": "sex"}})
    cells = [c for r in released.values() for c in r["groups"] + r["sex"]["table"]]
    assert any(c["n"] is None for c in cells)  # the 1 % and 0.5 % tails are too small at a site
    for c in cells:
        if c["n"] is not None:
            assert c["n"] >= 25 or c["n"] == 0
            assert c["events"] == 0 or c["events"] >= 25
            assert c["n"] - c["events"] == 0 or c["n"] - c["events"] >= 25
    tiny = InProcessFederation.from_frames({"A": df.iloc[:500], "B": df.iloc[500:512]})
    with pytest.raises(AlgorithmError, match="B: refused"):
        evaluate(tiny, MODEL, "y")


def test_leave_one_site_out_and_temporal_validation() -> None:
    df, cols = simulated(2400, seed=5)
    fed = split(df, 3)
    lam = 0.01
    loso = leave_one_site_out(fed, cols, "y", lam=lam, age_column=None, sex_column=None)
    assert set(loso) == set(fed.sites)
    frames = {s: fed._sites[s].frames["default"] for s in fed.sites}
    train = pd.concat([frames["S1"], frames["S2"]])
    x, mu, sd = train[cols].to_numpy(), train[cols].to_numpy().mean(0), train[cols].to_numpy().std(0)
    ref = LogisticRegression(C=1 / (len(train) * lam), l1_ratio=1.0, solver="saga", tol=1e-12,
                             max_iter=100_000).fit((x - mu) / sd, train.y)
    test = frames["S0"]
    score = ref.decision_function((test[cols].to_numpy() - mu) / sd)
    assert loso["S0"].auroc == pytest.approx(roc_auc_score(test.y, score), abs=1e-8)
    assert loso["S0"].n == len(test)

    model, ev = temporal_validation(fed, cols, "y", time_column="year", cutoff=2016, lam=lam,
                                    age_column=None, sex_column=None)
    before, after = df[df.year < 2016], df[df.year >= 2016]
    fit_before = fit_lasso(InProcessFederation.from_frames({"all": before}), cols, "y", lam=lam)
    assert np.allclose(model["coef"], fit_before.original()[1], atol=1e-8)
    assert ev.n == len(after)
    p_after = expit(model["intercept"] + after[cols].to_numpy() @ np.array(model["coef"]))
    assert ev.brier == pytest.approx(brier_score_loss(after.y, p_after), abs=1e-12)


def test_a_single_site_is_recalibrated_at_the_site_and_equals_statsmodels() -> None:
    """A held-out site's calibration intercept and slope are fitted at the site (nordfed.eval.recalibration): the
    federated fit over one site would need that site's own sums, which a node may release only as secure sums
    over several sites."""
    from nordfed.fed.evaluation import recalibration

    class Asked(InProcessFederation):
        """The same sites, noting which algorithms run per site and which as secure sums."""

        def __init__(self, fed: InProcessFederation):
            super().__init__(fed._sites)
            self.runs: list[str] = []
            self.sums: list[str] = []

        def run(self, name, params, sites=None):
            self.runs.append(name)
            return super().run(name, params, sites)

        def aggregate(self, name, params, sites=None):
            self.sums.append(name)
            return super().aggregate(name, params, sites)

    df, _ = simulated(1500, seed=4)
    fed = Asked(split(df, 3))
    ev = evaluate(fed, MODEL, "y", sites=["S2"], age_column=None, sex_column=None)
    assert "nordfed.eval.recalibration" in fed.runs and "nordfed.lasso.newton" not in fed.sums
    s2 = fed._sites["S2"].frames["default"]
    lp = logit(_pred(s2))
    y = s2["y"].to_numpy()
    cal_int = sm.GLM(y, np.ones(len(y)), offset=lp, family=sm.families.Binomial()).fit(tol=1e-12)
    cal_slope = sm.GLM(y, sm.add_constant(lp), family=sm.families.Binomial()).fit(tol=1e-12)
    assert ev.calibration_intercept == pytest.approx(cal_int.params[0], abs=1e-6)
    assert ev.calibration_slope == pytest.approx(cal_slope.params[1], abs=1e-6)
    # the same numbers as the federated fit over that one site
    cal, _, slope = recalibration(fed, "y", MODEL, None, ["S2"], None)
    assert (ev.calibration_intercept, ev.calibration_slope) == pytest.approx((cal, slope), abs=1e-12)
