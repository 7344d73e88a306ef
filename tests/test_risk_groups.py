"""Risk groups from federated quantiles equal groups formed on the pooled predictions; small cells withheld."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from nordfed.fed.risk_groups import DEFAULT_BUNDLES, federated_quantiles, risk_groups
from test_lasso_support import simulated, split

COLS = ["c0", "c1", "b0", "b2"]
MODEL = {"covariates": COLS, "coef": [0.8, -0.1, 0.9, 1.2], "intercept": 3.5}


def _pred(df) -> np.ndarray:
    return expit(MODEL["intercept"] + df[COLS].to_numpy() @ np.array(MODEL["coef"]))


def test_quartile_groups_match_pooled_predictions() -> None:
    df, _ = simulated(8000, seed=11)
    fed = split(df, 4)
    groups = risk_groups(fed, MODEL, "y")
    p, y = _pred(df), df["y"].to_numpy()
    # the federated quartiles split the pooled rows into quarters (to within block resolution)
    for level, cut in zip((0.25, 0.5, 0.75), groups.cutoffs, strict=True):
        assert abs(np.mean(p <= cut) - level) < 0.005
    assert groups.bundles == list(DEFAULT_BUNDLES)
    g = np.searchsorted(groups.cutoffs, p, side="right")
    for i, row in enumerate(groups.pooled):
        assert row["n"] == np.sum(g == i) and row["observed"] == y[g == i].sum()
        assert row["observed_rate"] == pytest.approx(y[g == i].mean())
        assert row["bundle"] == DEFAULT_BUNDLES[i]
    rates = [row["observed_rate"] for row in groups.pooled]
    assert rates == sorted(rates)  # a useful model: outcome rate rises across the groups
    s0 = fed._sites["S0"].frames["default"]
    g0 = np.searchsorted(groups.cutoffs, _pred(s0), side="right")
    assert [r["n"] for r in groups.per_site["S0"]] == [int(np.sum(g0 == i)) for i in range(4)]


def test_fixed_cutoffs_named_bundles_and_suppression() -> None:
    df, _ = simulated(2000, seed=12)
    fed = split(df, 3)
    p = _pred(df)
    top = float(np.quantile(p, 0.997))  # a handful of rows above: withheld at every site
    groups = risk_groups(fed, MODEL, "y", cutoffs=[0.5, top], bundles=["standard", "prehab", "intensive"])
    assert groups.cutoffs == [0.5, top] and groups.bundles == ["standard", "prehab", "intensive"]
    assert groups.pooled[2]["sites_suppressed"] >= 1
    for rows in groups.per_site.values():
        for r in rows:
            assert r["n"] is None or r["n"] == 0 or r["n"] >= 10
    with pytest.raises(ValueError, match="increasing"):
        risk_groups(fed, MODEL, "y", cutoffs=[0.6, 0.3])
    with pytest.raises(ValueError, match="2 bundles"):
        risk_groups(fed, MODEL, "y", cutoffs=[0.2, 0.5], bundles=["a", "b"])
    with pytest.raises(ValueError, match="strictly between"):
        federated_quantiles(fed, MODEL, "y", [0.5, 1.0])
