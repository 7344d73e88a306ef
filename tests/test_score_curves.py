"""Curves from the sites' released score blocks against the same computations on the pooled raw rows.

Data: 6000 simulated persons (about 35 % events) dealt to 3 sites, minimum cell count 10, scored by a deliberately
miscalibrated model (its smoothed ICI is about 0.07). Tolerances, from the blocks' within-block approximation:
smooth calibration within 0.02 (pooled) / 0.03 (a site of 1300-2700) of numpy's Gaussian kernel regression on the
raw rows with the same bandwidth over the drawn range, smoothed ICI within 0.002; prediction-distribution quantiles
within 0.02 logit (about 3 grid bins) pooled and inside the block holding numpy's quantile at a site.
"""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from scipy.special import expit, logit

from nordfed.fed import score_curves, score_hist
from nordfed.reports import PlpResults, plp_report
from nordfed.reports.prediction_plots import prediction_distribution_plot, roc_plot, smooth_calibration_plot
from nordfed.studies.plp import OUTCOME, scored
from test_lasso_support import simulated, split
from test_reports_look_plots import _figure_titles, _overlaps

COLS = ["c0", "c1", "c3", "b0", "b2", "b4"]
MODEL = {"covariates": COLS, "coef": [0.9, -0.12, 0.012, 1.1, 1.3, -0.8], "intercept": 3.0}
TOL_POOLED, TOL_SITE, TOL_ICI, TOL_Q = 0.02, 0.03, 0.002, 0.02


def _lp(df) -> np.ndarray:
    return MODEL["intercept"] + df[COLS].to_numpy() @ np.array(MODEL["coef"])


def _kernel_regression(lp: np.ndarray, y: np.ndarray, x: np.ndarray, h: float) -> np.ndarray:
    """Nadaraya-Watson with a Gaussian kernel on the logit scale, on raw rows (the reference)."""
    k = np.exp(-0.5 * ((np.asarray(x)[:, None] - lp[None, :]) / h) ** 2)
    return (k @ y) / k.sum(axis=1)


@pytest.fixture(scope="module", params=[0, 2])
def federation(request: pytest.FixtureRequest):
    df, _ = simulated(6000, seed=request.param)
    fed = split(df.rename(columns={"y": OUTCOME}), 3, seed=request.param)
    rows = {s: fed._sites[s].frames["default"] for s in fed.sites}
    raw = {s: (_lp(d), d[OUTCOME].to_numpy()) for s, d in rows.items()}
    raw["pooled"] = tuple(np.concatenate(v) for v in zip(*raw.values(), strict=True))
    blocks = fed.run("nordfed.eval.scores", {"dataset": None, "model": MODEL, "outcome": OUTCOME})
    return fed, raw, blocks


def _classes(blocks: dict, sites: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [blocks[s]["blocks"]["pos"] for s in sites], [blocks[s]["blocks"]["neg"] for s in sites]


def test_smooth_calibration_from_blocks_equals_kernel_regression_on_pooled_rows(federation) -> None:
    fed, raw, blocks = federation
    pos, neg = _classes(blocks, fed.sites)
    cal = score_curves.calibration_curve(pos, neg)
    lp, y = raw["pooled"]
    h, x = cal["bandwidth"], logit(np.asarray(cal["predicted"]))
    ref = _kernel_regression(lp, y, x, h)
    assert np.max(np.abs(np.asarray(cal["observed"]) - ref)) < TOL_POOLED
    assert cal["ici"] == pytest.approx(np.mean(np.abs(_kernel_regression(lp, y, lp, h) - expit(lp))), abs=TOL_ICI)
    # the drawn range is the data's central range, not the grid's: neither end of the risk scale
    assert 0.01 < cal["predicted"][0] < 0.1 and 0.7 < cal["predicted"][-1] < 0.95
    # the tolerance tells a right curve from wrong ones: classes swapped, one site's events left out
    def off(curve: dict) -> float:
        return float(np.max(np.abs(np.interp(x, logit(np.asarray(curve["predicted"])), curve["observed"]) - ref)))

    assert off(score_curves.calibration_curve(neg, pos, h=h)) > 0.2
    assert off(score_curves.calibration_curve(pos[1:], neg, h=h)) > 2 * TOL_POOLED


def test_bandwidth_is_silverman_on_the_rows_counted_on_the_smaller_class(federation) -> None:
    fed, raw, blocks = federation
    lp, y = raw["pooled"]
    q1, q3 = np.quantile(lp, [0.25, 0.75])
    m = min(y.sum(), (1 - y).sum())
    expected = 0.9 * min(lp.std(), (q3 - q1) / 1.34) * m ** -0.2
    assert score_curves.bandwidth(*_classes(blocks, fed.sites)) == pytest.approx(expected, rel=0.01)


def test_prediction_distribution_integrates_to_class_counts_and_has_numpys_quantiles(federation) -> None:
    fed, raw, blocks = federation
    for who in ["pooled", *fed.sites]:
        sites = fed.sites if who == "pooled" else [who]
        pos, neg = _classes(blocks, sites)
        dist = score_curves.prediction_distribution(pos, neg)
        lp, y = raw[who]
        x = np.asarray(dist["logit"])
        for k, mask, b in (("events", y == 1, pos), ("non_events", y == 0, neg)):
            assert dist["n"][k] == mask.sum()
            assert np.trapezoid(dist[k], x) == pytest.approx(mask.sum(), rel=1e-3)
            q = logit(np.asarray(dist["quantiles"][k]))
            ref = np.quantile(lp[mask], dist["quantiles"]["probs"])
            if who == "pooled":
                assert np.max(np.abs(q - ref)) < TOL_Q, k
            else:
                # a site's block CDF is exact at its block edges: the quantile stays in numpy's quantile's block
                w = np.diff(score_hist.grid_edges())[1]
                rows = b[0][np.searchsorted(b[0][:, 1], ref)]
                assert np.all((rows[:, 0] - w <= q) & (q <= rows[:, 1] + w)), (who, k)


def test_scored_gives_pooled_and_per_site_curves_from_one_federated_round(federation) -> None:
    fed, raw, _ = federation
    out = scored(fed, MODEL, None, smooth=True)
    assert set(out) == {"pooled", *fed.sites}
    for who, r in out.items():
        lp, y = raw[who]
        cal = r["calibration"]
        ref = _kernel_regression(lp, y, logit(np.asarray(cal["predicted"])), cal["bandwidth"])
        assert np.max(np.abs(np.asarray(cal["observed"]) - ref)) < (TOL_POOLED if who == "pooled" else TOL_SITE), who
        assert r["distribution"]["n"] == {"events": y.sum(), "non_events": (1 - y).sum()}
        assert len(cal["predicted"]) <= 200 and len(r["distribution"]["logit"]) <= 200  # compact in the JSON
    # without smooth: the ROC points only, as the ground-truth comparison stores them
    assert "calibration" not in scored(fed, MODEL, None)["pooled"]


def test_one_outcome_class_gives_no_curve_rather_than_an_error() -> None:
    b = np.array([[-1.0, 1.0, 20, 0.0]])
    cal = score_curves.calibration_curve([np.empty((0, 4))], [b])
    assert cal["predicted"] == [] and cal["ici"] is None
    dist = score_curves.prediction_distribution([np.empty((0, 4))], [b])
    assert dist["quantiles"]["events"] is None and dist["n"] == {"events": 0.0, "non_events": 20.0}


# ------------------------------------------------------------------------------------------ figures
def _curves(federation) -> dict:
    fed, _, _ = federation
    return scored(fed, MODEL, None, smooth=True)


def test_site_colours_agree_between_roc_and_smooth_calibration(federation) -> None:
    curves = _curves(federation)
    roc = roc_plot(curves)
    smooth = smooth_calibration_plot({k: v["calibration"] for k, v in curves.items()})

    def colours(chart) -> dict[str, tuple]:
        ax = chart.figure.axes[0]
        return {t.get_text().split(" — ")[0]: to_rgb(h.get_color())
                for t, h in zip(ax.get_legend().get_texts(), ax.get_legend().legend_handles, strict=True)}

    roc_c, smooth_c = colours(roc), colours(smooth)
    assert {k: smooth_c[k] for k in curves} == {k: roc_c[k] for k in curves}
    assert len({roc_c[k] for k in curves}) == len(curves)
    assert _overlaps(smooth) == []


def test_prediction_distribution_figure_reads_as_risk(federation) -> None:
    chart = prediction_distribution_plot(_curves(federation)["pooled"]["distribution"])
    box = chart.figure.axes[1]
    assert box.get_xlabel().startswith("Predicted risk")
    ticks = [t.get_text() for t in box.get_xticklabels()]
    assert ticks and all(t.endswith("%") for t in ticks)
    assert _overlaps(chart) == []


def test_plp_report_shows_smooth_calibration_and_distribution_with_their_source(federation) -> None:
    curves = _curves(federation)
    cal = [{"n": 600, "observed": 60 + 50 * i, "expected": 70 + 50 * i} for i in range(10)]
    ev = {"n": 6000, "n_events": 2100, "auroc": 0.8, "calibration_table": cal, "on": "test part", "ici": 0.05}
    rep = plp_report(PlpResults(internal=ev, internal_roc=curves), "t")
    titles = _figure_titles(rep)
    assert any(t.startswith("Smooth calibration by site") for t in titles), titles
    assert any(t.startswith("Prediction distribution") for t in titles), titles
    assert any(t.startswith("Calibration") and "ICI (smoothed)" in t for t in titles), titles
    html = rep.render()
    assert html.count("score blocks each site releases") >= 3


def test_a_model_predicting_one_risk_for_everyone_gives_a_point_not_an_error(federation) -> None:
    # LASSO may shrink every coefficient to zero: all rows then share one logit (sd 0)
    fed, raw, _ = federation
    out = scored(fed, {"covariates": [], "coef": [], "intercept": -0.6}, None, smooth=True)["pooled"]
    y = raw["pooled"][1]
    cal = out["calibration"]
    assert cal["bandwidth"] > 0 and np.allclose(cal["predicted"], expit(-0.6), atol=0.01)
    assert np.allclose(cal["observed"], y.mean(), atol=1e-3)
    assert cal["ici"] == pytest.approx(abs(y.mean() - expit(-0.6)), abs=1e-3)
    assert np.trapezoid(out["distribution"]["events"], out["distribution"]["logit"]) == pytest.approx(y.sum(),
                                                                                                       rel=1e-3)
