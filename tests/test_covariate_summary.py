"""PatientLevelPrediction's covariate summary (mean / prevalence by outcome, SD, SMD), federated.

Three sites; the pooled and per-site numbers equal pandas on the concatenated rows. Site B holds 3 persons with
the ``rare`` condition among its outcomes, and site C only 2 outcomes without ``common``: those covariates are
withheld there in both classes, since the covariate's total over the same rows is released elsewhere (the
LASSO's moments) and would give a withheld class away by subtraction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nordfed.fed.covariate_summary import ALGORITHM, covariate_summary
from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from nordfed.privacy.disclosure import DisclosurePolicy
from nordfed.reports.tables import covariate_summary_table

M = 10
COVS = ["b1", "b2", "crp", "visits", "rare", "common"]
# (rows, outcomes, persons with `rare` among outcomes / among the others, outcomes without `common`)
SITES = {"A": (400, 60, (15, 100), 20), "B": (300, 40, (3, 60), 15), "C": (350, 50, (12, 80), 2)}


def _frame(n: int, events: int, rare: tuple[int, int], not_common: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = (np.arange(n) < events).astype(float)
    ev = y == 1
    df = pd.DataFrame({
        "y": y,
        "b1": (rng.random(n) < np.where(ev, 0.6, 0.3)).astype(float),
        "b2": (rng.random(n) < 0.5).astype(float),
        "crp": np.round(rng.gamma(2.0, np.where(ev, 30.0, 10.0)), 1) * (rng.random(n) < 0.6),
        "visits": rng.poisson(np.where(ev, 1.0, 0.5)).astype(float),
        "rare": 0.0, "common": 1.0,
        "age": rng.integers(40, 95, n).astype(float),
    })
    df.loc[np.flatnonzero(ev)[: rare[0]], "rare"] = 1.0
    df.loc[np.flatnonzero(~ev)[: rare[1]], "rare"] = 1.0
    df.loc[np.flatnonzero(ev)[: not_common], "common"] = 0.0
    df.loc[np.flatnonzero(~ev)[:50], "common"] = 0.0
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {s: _frame(*spec, seed=i) for i, (s, spec) in enumerate(SITES.items())}


@pytest.fixture(scope="module")
def fed(frames: dict[str, pd.DataFrame]) -> InProcessFederation:
    return InProcessFederation.from_frames(frames, DisclosurePolicy(min_cell_count=M))


def _expected(df: pd.DataFrame, cov: str) -> dict[str, float]:
    """PatientLevelPrediction's numbers from pandas: population SDs (ddof=0)."""
    w, wo = df.loc[df.y == 1, cov], df.loc[df.y == 0, cov]
    out = {"mean_with": w.mean(), "sd_with": w.std(ddof=0), "mean_without": wo.mean(), "sd_without": wo.std(ddof=0),
           "mean": df[cov].mean(), "sd": df[cov].std(ddof=0)}
    out["smd"] = (out["mean_with"] - out["mean_without"]) / np.sqrt((out["sd_with"] ** 2 + out["sd_without"] ** 2) / 2)
    return out


def _check(row: dict, df: pd.DataFrame, cov: str) -> None:
    for key, value in _expected(df, cov).items():
        assert row[key] == pytest.approx(value, abs=1e-9, rel=0), (cov, key)


def test_pooled_and_per_site_equal_pandas(fed: InProcessFederation, frames: dict[str, pd.DataFrame]) -> None:
    res = covariate_summary(fed, COVS, "y")
    pooled = pd.concat(frames.values(), ignore_index=True)
    rows = {r["covariate"]: r for r in res["pooled"]["rows"]}
    for cov in ("b1", "b2", "crp", "visits"):
        assert rows[cov]["sites_suppressed"] == 0
        _check(rows[cov], pooled, cov)
        for site, df in frames.items():
            _check({r["covariate"]: r for r in res["per_site"][site]["rows"]}[cov], df, cov)
    assert rows["crp"]["smd"] > 0.5 and rows["crp"]["mean_with"] > rows["crp"]["mean_without"]
    assert [rows[c]["binary"] for c in COVS] == [True, True, False, False, True, True]
    assert res["pooled"]["n_with"] == int(pooled.y.sum()) and res["pooled"]["n_without"] == int((pooled.y == 0).sum())
    assert rows["b1"]["nonzero_with"] == int(pooled.loc[pooled.y == 1, "b1"].sum())


def test_a_withheld_covariate_is_pooled_over_the_other_sites(fed: InProcessFederation,
                                                              frames: dict[str, pd.DataFrame]) -> None:
    res = covariate_summary(fed, COVS, "y")
    rows = {r["covariate"]: r for r in res["pooled"]["rows"]}
    assert rows["rare"]["sites_suppressed"] == 1 and rows["common"]["sites_suppressed"] == 1
    _check(rows["rare"], pd.concat([frames["A"], frames["C"]], ignore_index=True), "rare")
    _check(rows["common"], pd.concat([frames["A"], frames["B"]], ignore_index=True), "common")
    b = {r["covariate"]: r for r in res["per_site"]["B"]["rows"]}["rare"]
    assert b["mean_with"] is b["mean_without"] is b["mean"] is b["smd"] is None
    # scaled back from normalised values: means and SDs in the covariate's units, the SMD unchanged
    scaled = {r["covariate"]: r for r in covariate_summary(fed, COVS, "y", scale={"crp": 10.0})["pooled"]["rows"]}
    assert scaled["crp"]["mean_with"] == pytest.approx(10 * rows["crp"]["mean_with"])
    assert scaled["crp"]["sd_without"] == pytest.approx(10 * rows["crp"]["sd_without"])
    assert scaled["crp"]["smd"] == pytest.approx(rows["crp"]["smd"])


def _safe(v: float) -> bool:
    return v == 0 or v >= M


def test_no_small_count_is_left_for_subtraction(fed: InProcessFederation, frames: dict[str, pd.DataFrame]) -> None:
    """Every released cell passes, and a covariate's total over the same rows (which the LASSO's moments release)
    less its released class counts leaves 0 or at least the minimum."""
    released = fed.run(ALGORITHM, {"covariates": COVS, "outcome": "y"})
    moments = fed.run("nordfed.lasso.moments", {"covariates": COVS, "outcome": "y", "n_folds": 0, "seed": 0})
    for site, r in released.items():
        part = moments[site]["parts"][0]
        totals = np.rint(part["n"] * np.asarray(part["mean"]))  # 0/1 columns: the persons with the covariate
        for j, cov in enumerate(COVS):
            shown = 0
            for cls in ("with", "without"):
                nz = r[cls]["nonzero"][j]
                if nz is not None:
                    assert _safe(nz) and _safe(r[cls]["n"] - nz), (site, cov, cls)
                    shown += nz
                else:
                    assert r[cls]["sum"][j] is None and r[cls]["sumsq"][j] is None
            if r["binary"][j]:
                assert _safe(totals[j] - shown), (site, cov)
    assert released["B"]["with"]["nonzero"][COVS.index("rare")] is None
    assert released["B"]["without"]["nonzero"][COVS.index("rare")] is None
    assert released["C"]["with"]["nonzero"][COVS.index("common")] is None
    assert released["A"]["with"]["nonzero"][COVS.index("rare")] == 15


def test_a_where_that_isolates_few_rows_is_refused(fed: InProcessFederation, frames: dict[str, pd.DataFrame]) -> None:
    oldest = float(frames["A"]["age"].nlargest(4).iloc[-1])
    assert 0 < (frames["A"]["age"] >= oldest).sum() < M
    with pytest.raises(AlgorithmError, match="refused: fewer rows"):
        fed.run(ALGORITHM, {"covariates": COVS, "outcome": "y",
                            "where": {"column": "age", "op": ">=", "value": oldest}}, ["A"])
    # enough rows, but a handful of outcomes among them: the class count is refused
    a = frames["A"]
    cut = float(a.loc[a.y == 1, "age"].nlargest(3).iloc[-1])
    assert (a.age >= cut).sum() >= M
    with pytest.raises(AlgorithmError, match=r"refused: \d outcome class count"):
        fed.run(ALGORITHM, {"covariates": COVS, "outcome": "y", "where": {"column": "age", "op": ">=", "value": cut}},
                ["A"])


def test_the_report_table_shows_shares_means_and_withheld_cells(fed: InProcessFederation) -> None:
    coef = {"b1": 0.8, "b2": -0.1, "crp": 1.5, "visits": 0.3, "rare": 0.5, "common": -0.2}
    rows = [{**r, "name": f"name of {r['covariate']}", "coefficient": coef[r["covariate"]]}
            for r in covariate_summary(fed, COVS, "y", sites=["B", "C"])["pooled"]["rows"]]
    by = {r["covariate"]: r for r in rows}
    table = covariate_summary_table(rows)
    texts = [[c.text for c in row] for row in table.cells(M)]
    assert [t[0] for t in texts] == ["name of crp", "name of b1", "name of rare †", "name of visits",
                                     "name of common †", "name of b2"]
    crp, b1, rare = texts[0], texts[1], texts[2]
    assert crp[1] == "1.500"
    assert b1[2] == f"{100 * by['b1']['mean_with']:.1f}\u202f%"
    sd = by["crp"]["sd_with"]
    decimals = 1 - int(np.floor(np.log10(sd)))
    assert crp[2] == f"{by['crp']['mean_with']:.{decimals}f} ({sd:.{decimals}f})"
    assert crp[4] == f"{by['crp']['smd']:.2f}"
    assert rare[2] != "suppr."  # C released it; B did not: the row is marked, not emptied
    only_b = [{**r, "name": r["covariate"], "coefficient": coef[r["covariate"]]}
              for r in covariate_summary(fed, COVS, "y", sites=["B"])["pooled"]["rows"]]
    cells = {row[0].text: [c.text for c in row] for row in covariate_summary_table(only_b).cells(M)}
    assert cells["rare"][2:] == ["suppr.", "suppr.", "suppr."]
    assert any("suppr.: every site withheld" in n for n in covariate_summary_table(only_b).notes)


def test_the_plp_runner_summarises_the_non_zero_covariates_of_both_parts(frames: dict[str, pd.DataFrame]) -> None:
    from nordfed.fed.lasso_site import split_mask
    from nordfed.fed.protocol import SiteData
    from nordfed.studies.plp import OUTCOME, model_covariate_summary

    ids = {"crp": "3020460751706", "b1": "201826", "b2": "4329847"}
    renamed = {s: f.rename(columns={**ids, "y": OUTCOME}) for s, f in frames.items()}
    sites = {s: SiteData(site=s, frames={"default": f}, policy=DisclosurePolicy(min_cell_count=M))
             for s, f in renamed.items()}
    fed = InProcessFederation(sites)
    model = {"covariates": [ids["crp"], ids["b1"], ids["b2"]], "coef": [1.2, 0.0, -0.3], "intercept": -2.0}
    split = {"test_fraction": 0.5, "seed": 3}
    train, test = {**split, "split": "train"}, {**split, "split": "test"}
    out = model_covariate_summary(fed, model, {int(ids["crp"]): "CRP"}, None, train, test,
                                  scale={ids["crp"]: 400.0})
    for part, where in (("train", train), ("test", test)):
        rows = out[part]["pooled"]["rows"]
        assert [(r["covariate"], r["name"], r["coefficient"]) for r in rows] == [
            (ids["crp"], "CRP", 1.2), (ids["b2"], f"covariate {ids['b2']}", -0.3)]
        used = {s: f[split_mask(sites[s], f, where, OUTCOME)] for s, f in renamed.items()}
        assert out[part]["pooled"]["n_with"] == sum(int(f[OUTCOME].sum()) for f in used.values())
        # in the sites' units: pooled over the sites that released CRP in this part
        shown = [s for s in used if out[part]["per_site"][s]["rows"][0]["mean_with"] is not None]
        assert shown and out[part]["per_site"][shown[0]]["rows"][0]["name"] == "CRP"
        crp = pd.concat([pd.DataFrame({"crp": used[s][ids["crp"]] * 400.0, "y": used[s][OUTCOME]}) for s in shown])
        assert rows[0]["sites_suppressed"] == len(SITES) - len(shown)
        for key, value in _expected(crp, "crp").items():
            assert rows[0][key] == pytest.approx(value, rel=1e-12), (part, key)
    assert out["train"]["pooled"]["n_with"] + out["test"]["pooled"]["n_with"] == sum(s[1] for s in SITES.values())
    assert model_covariate_summary(fed, model, {}, None, None, None)["test"] is None


def test_the_plp_report_shows_the_training_part_summary_in_the_model_section(fed: InProcessFederation) -> None:
    from nordfed.reports.layouts import PlpResults, plp_report
    from nordfed.studies.report import _covariate_summary

    rows = [{**r, "name": f"name of {r['covariate']}", "coefficient": 0.1 * (i + 1)}
            for i, r in enumerate(covariate_summary(fed, COVS, "y", sites=["B"])["pooled"]["rows"])]
    summary = {"pooled": {"rows": rows}}
    assert _covariate_summary({"covariate_summary": {"train": summary, "test": None}})["on"] == "all persons"
    # the development data, as TRIPOD's table 1 (the test part's cells are mostly withheld: a quarter of the persons)
    shown = _covariate_summary({"covariate_summary": {"train": summary, "test": {"pooled": {"rows": []}}}})
    assert shown == {"rows": rows, "on": "training part"}
    assert _covariate_summary({}) is None  # results written before the summary existed
    res = PlpResults(outcome="death", coefficients={"(Intercept)": -2.0, **{r["name"]: r["coefficient"] for r in rows}},
                     covariate_summary=shown)
    model = next(s for s in plp_report(res, "t").sections if s.title == "Model")
    table = [b.payload for b in model.blocks if b.kind == "table"][-1]
    assert table.caption == "Covariates by outcome (death), training part"
    texts = {row[0].text: [c.text for c in row] for row in table.cells(M)}
    assert texts["name of rare"][2:] == ["suppr.", "suppr.", "suppr."]
    assert texts["name of b1"][2].endswith("\u202f%")


def test_a_covariate_only_a_withholding_site_records_is_shown_withheld_not_zero() -> None:
    from nordfed.reports.tables import SUPPRESSED, covariate_summary_table

    row = {"covariate": "1", "name": "haemoglobin (mmol/L)", "coefficient": 0.2, "binary": False,
           "sites_suppressed": 1, "nonzero_with": 0, "nonzero_without": 0, "mean_with": 0.0, "sd_with": 0.0,
           "mean_without": 0.0, "sd_without": 0.0, "smd": None}
    (shown,) = covariate_summary_table([row]).rows
    assert shown["with"] is SUPPRESSED and shown["without"] is SUPPRESSED and shown["smd"] is SUPPRESSED
