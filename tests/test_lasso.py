"""Federated penalised logistic regression equals the pooled fit (KKT 1e-6; scikit-learn / statsmodels 1e-4)."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.linear_model import LogisticRegression

from nordfed.fed.lasso import fit_lasso
from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from nordfed.models.logistic import FederatedLogisticRegression
from test_lasso_support import breast_cancer, pooled_kkt, simulated, split


def _saga(x: np.ndarray, y: np.ndarray, lam: float, l1_ratio: float) -> LogisticRegression:
    # C = 1/(n*lam) turns sklearn's C*sum(logloss) + penalty into glmnet's (1/n)*sum(logloss) + lam*penalty;
    # saga leaves the intercept unpenalised
    return LogisticRegression(C=1 / (len(y) * lam), l1_ratio=l1_ratio, solver="saga", tol=1e-12,
                              max_iter=100_000).fit(x, y)


@functools.cache
def _breast_cancer_ref(lam: float, solver: str) -> LogisticRegression:
    df, cols = breast_cancer()
    x, y = df[cols].to_numpy(), df["y"].to_numpy()
    if solver == "saga":
        return _saga(x, y, lam, 1.0)
    # liblinear penalises the intercept as a weight on a constant column of value intercept_scaling:
    # at 1e5 its penalty is lam*|b0|/1e5, i.e. negligible at the 1e-4 tolerance
    return LogisticRegression(C=1 / (len(y) * lam), l1_ratio=1.0, solver="liblinear", tol=1e-12,
                              intercept_scaling=1e5, max_iter=100_000).fit(x, y)


@pytest.mark.parametrize(("lam", "solver"), [(0.02, "saga"), (0.004, "liblinear")])
def test_lasso_breast_cancer_equals_sklearn(lam: float, solver: str) -> None:
    df, cols = breast_cancer()
    fed = split(df, 3)
    fit = fit_lasso(fed, cols, "y", lam=lam, standardize=False)
    b0, b = fit.original()
    x, y = df[cols].to_numpy(), df["y"].to_numpy()
    assert pooled_kkt(x, y, b0, b, lam, 1.0) < 1e-6
    ref = _breast_cancer_ref(lam, solver)
    assert np.abs(ref.coef_[0] - b).max() < 1e-4
    assert abs(ref.intercept_[0] - b0) < 1e-4
    assert 0 < np.count_nonzero(b) < len(cols)  # a real LASSO solution: some zero, some not
    assert np.array_equal(b == 0, np.abs(ref.coef_[0]) < 1e-8)


def test_standardised_fit_on_raw_scale_equals_sklearn_on_standardised_columns() -> None:
    df, cols = simulated(2500, seed=3)
    fed = split(df, 5)
    lam = 0.01
    fit = fit_lasso(fed, cols, "y", lam=lam)  # glmnet default: standardise internally
    b0, b = fit.original()
    x, y = df[cols].to_numpy(), df["y"].to_numpy()
    mu, sd = x.mean(0), x.std(0)
    ref = _saga((x - mu) / sd, y, lam, 1.0)
    ref_b = ref.coef_[0] / sd
    ref_b0 = ref.intercept_[0] - ref_b @ mu
    assert np.abs(ref_b - b).max() < 1e-4 * max(1.0, np.abs(ref_b).max())
    assert abs(ref_b0 - b0) < 1e-4
    # KKT on the standardised problem (coefficients scaled back)
    assert pooled_kkt((x - mu) / sd, y, b0 + b @ mu, b * sd, lam, 1.0) < 1e-6
    assert fit.kkt < 1e-8


def test_elastic_net_equals_sklearn() -> None:
    df, cols = simulated(2000, seed=4)
    fed = split(df, 4)
    x, y = df[cols].to_numpy(), df["y"].to_numpy()
    z = (x - x.mean(0)) / x.std(0)
    zdf = df.copy()
    zdf[cols] = z
    fit = fit_lasso(split(zdf, 4), cols, "y", lam=0.02, alpha=0.5, standardize=False)
    b0, b = fit.original()
    ref = _saga(z, y, 0.02, 0.5)
    assert np.abs(ref.coef_[0] - b).max() < 1e-4
    assert pooled_kkt(z, y, b0, b, 0.02, 0.5) < 1e-6
    assert fed.sites == ["S0", "S1", "S2", "S3"]


def test_ridge_equals_sklearn_lbfgs() -> None:
    df, cols = breast_cancer()
    lam = 0.01
    fit = fit_lasso(split(df, 3), cols, "y", lam=lam, alpha=0.0, standardize=False)
    b0, b = fit.original()
    x, y = df[cols].to_numpy(), df["y"].to_numpy()
    ref = LogisticRegression(C=1 / (len(y) * lam), l1_ratio=0.0, solver="lbfgs", tol=1e-12, max_iter=10_000).fit(x, y)
    assert np.abs(ref.coef_[0] - b).max() < 1e-5
    assert abs(ref.intercept_[0] - b0) < 1e-5


def test_unpenalised_equals_statsmodels() -> None:
    df, cols = simulated(3000, seed=5)
    fit = fit_lasso(split(df, 3), cols, "y", lam=0.0)
    b0, b = fit.original()
    ref = sm.Logit(df["y"], sm.add_constant(df[cols])).fit(disp=0, tol=1e-12)
    assert np.allclose(np.r_[b0, b], ref.params.to_numpy(), atol=1e-6, rtol=1e-6)


def test_path_starts_at_lambda_max_and_cv_picks_min_and_1se() -> None:
    df, cols = simulated(1500, seed=6)
    fed = split(df, 3)
    fit = fit_lasso(fed, cols, "y", cv_folds=4, n_lambda=12, lambda_min_ratio=0.01, seed=7)
    assert np.allclose(fit.betas[0, 1:], 0.0)
    assert np.count_nonzero(fit.betas[1, 1:]) >= 1  # just below lambda_max the first variable enters
    cv = fit.cv
    assert cv is not None and cv.n_folds == 4
    assert cv.lambda_1se >= cv.lambda_min
    assert fit.lam == cv.lambda_min
    # held-out deviance recomputed independently: same folds, sklearn fits on each fold's pooled training rows
    site_frames = {s: fed._sites[s].frames["default"] for s in fed.sites}
    frames = [f.assign(fold=np.random.default_rng(7).permutation(len(f)) % 4) for f in site_frames.values()]
    pooled = pd.concat(frames, ignore_index=True)
    dev = np.zeros((4, 3))
    n = np.zeros(4)
    for k in range(4):
        tr, te = pooled[pooled.fold != k], pooled[pooled.fold == k]
        xt, xs = tr[cols].to_numpy(), te[cols].to_numpy()
        mu, sd = xt.mean(0), xt.std(0)
        for j, lam in enumerate(fit.lambdas[[2, 6, 11]]):
            ref = _saga((xt - mu) / sd, tr["y"].to_numpy(), lam, 1.0)
            eta = ref.intercept_[0] + ((xs - mu) / sd) @ ref.coef_[0]
            dev[k, j] = 2 * np.sum(np.logaddexp(0, eta) - te["y"].to_numpy() * eta)
        n[k] = len(te)
    cvm = (n / n.sum()) @ (dev / n[:, None])
    assert np.allclose(cv.cvm[[2, 6, 11]], cvm, atol=1e-5)


def test_model_class_predicts_like_sklearn_and_round_trips(tmp_path) -> None:
    df, cols = breast_cancer()
    lam = 0.02
    model = FederatedLogisticRegression(lam=lam, standardize=False).fit(split(df, 3), cols, "y")
    x = df[cols].to_numpy()
    ref = _breast_cancer_ref(lam, "saga")
    proba = model.predict_proba(df)
    assert proba.shape == (len(df), 2)
    assert np.allclose(proba, ref.predict_proba(x), atol=1e-5)
    assert set(model.coefficients) == {"intercept", *cols}
    model.save(tmp_path / "m.json")
    again = FederatedLogisticRegression.load(tmp_path / "m.json")
    assert np.array_equal(again.predict_proba(x), model.predict_proba(x))
    assert again.lambda_ == lam and again.coefficients == model.coefficients
    with pytest.raises(ValueError, match="missing column"):
        model.predict_proba(df.drop(columns=["x3"]))
    with pytest.raises(ValueError, match="give lam"):
        FederatedLogisticRegression().fit(split(df, 3), cols, "y")


def test_bad_input_and_disclosure_refusals() -> None:
    df, cols = simulated(400, seed=8)
    bad = df.copy()
    bad.loc[5, "y"] = 2
    fed = InProcessFederation.from_frames({"A": bad.iloc[:200], "B": bad.iloc[200:].reset_index(drop=True)})
    with pytest.raises(ValueError, match=r"site A: row 5, outcome 'y' is not 0 or 1"):
        fit_lasso(fed, cols, "y", lam=0.01)
    with pytest.raises(ValueError, match=r"site S\d: column\(s\) nope not in the data"):
        fit_lasso(split(df, 2), [*cols, "nope"], "y", lam=0.01)
    tiny = InProcessFederation.from_frames({"A": df.iloc[:300], "B": df.iloc[300:306]})
    with pytest.raises(AlgorithmError, match="B: refused"):
        fit_lasso(tiny, cols, "y", lam=0.01)
    with pytest.raises(ValueError, match="alpha"):
        fit_lasso(split(df, 2), cols, "y", lam=0.01, alpha=1.5)


def test_sparse_columns_give_the_same_fit() -> None:
    df, cols = simulated(1500, seed=9)
    sparse = df.copy()
    for c in [c for c in cols if c.startswith("b")]:
        sparse[c] = pd.arrays.SparseArray(sparse[c].to_numpy(), fill_value=0.0)
    dense_fit = fit_lasso(split(df, 3), cols, "y", lam=0.01)
    sparse_fit = fit_lasso(split(sparse, 3), cols, "y", lam=0.01)
    assert np.array_equal(dense_fit.betas, sparse_fit.betas)


def test_model_class_with_cross_validation_uses_the_chosen_lambda() -> None:
    df, cols = simulated(1200, seed=10)
    fed = split(df, 3)
    model = FederatedLogisticRegression(cv=3, select="1se", n_lambda=10, lambda_min_ratio=0.02).fit(fed, cols, "y")
    assert model.fit_ is not None and model.fit_.cv is not None
    assert model.lambda_ == model.fit_.cv.lambda_1se
    direct = fit_lasso(fed, cols, "y", lam=model.lambda_)
    assert np.allclose(model.coef_[0], direct.original()[1], atol=1e-8)


def test_train_test_split_is_stratified_keyed_and_complementary() -> None:
    from nordfed.fed.lasso_site import split_mask
    from nordfed.fed.protocol import SiteData
    from nordfed.privacy.disclosure import DisclosurePolicy

    df, _ = simulated(1003, seed=11)
    site = SiteData(site="A", frames={"default": df}, policy=DisclosurePolicy())
    spec = {"test_fraction": 0.25, "seed": 4}
    test = split_mask(site, df, {**spec, "split": "test"}, "y")
    assert np.array_equal(split_mask(site, df, {**spec, "split": "train"}, "y"), ~test)
    for cls in (0, 1):  # PatientLevelPrediction's stratified split: each outcome class gives its share
        assert test[df["y"] == cls].sum() == round(0.25 * (df["y"] == cls).sum())
    assert np.array_equal(split_mask(site, df, {**spec, "split": "test"}, "y"), test)  # every round the same
    assert not np.array_equal(split_mask(site, df, {**spec, "seed": 5, "split": "test"}, "y"), test)
    # at a node the site's secret keys it: the researcher's seed alone does not tell the rows
    keyed = SiteData(site="A", frames={"default": df}, policy=DisclosurePolicy(secret=b"k" * 32))
    assert not np.array_equal(split_mask(keyed, df, {**spec, "split": "test"}, "y"), test)
    for bad in (0.01, 0.6):
        with pytest.raises(ValueError, match="test_fraction"):
            split_mask(site, df, {"test_fraction": bad, "seed": 4, "split": "test"}, "y")


def test_fit_on_the_training_part_equals_sklearn_on_those_rows() -> None:
    from nordfed.fed.lasso_site import split_mask

    df, cols = simulated(2500, seed=3)
    fed = split(df, 3)
    spec = {"test_fraction": 0.3, "seed": 2, "split": "train"}
    fit = fit_lasso(fed, cols, "y", lam=0.01, standardize=False, where=spec)
    rows = pd.concat([site.frames["default"][split_mask(site, site.frames["default"], spec, "y")]
                      for site in fed._sites.values()])
    x, y = rows[cols].to_numpy(), rows["y"].to_numpy()
    assert fit.n == len(y) and abs(len(y) - 0.7 * len(df)) <= 3
    b0, b = fit.original()
    assert pooled_kkt(x, y, b0, b, 0.01, 1.0) < 1e-6
    # liblinear's intercept penalty is lam*|b0|/1e5 at this intercept_scaling: negligible at 1e-4
    ref = LogisticRegression(C=1 / (len(y) * 0.01), l1_ratio=1.0, solver="liblinear", tol=1e-12,
                             intercept_scaling=1e5, max_iter=100_000).fit(x, y)
    assert np.abs(ref.coef_[0] - b).max() < 1e-4 and abs(ref.intercept_[0] - b0) < 1e-4


def test_newton_hessian_of_a_working_set_is_that_block_of_the_whole() -> None:
    from nordfed.fed.lasso_solver import unpack_symmetric

    df, cols = simulated(600, seed=5)
    fed = split(df, 2)
    point = {"fold": -1, "beta": np.r_[-1.0, 0.2, np.zeros(len(cols) - 1)], "center": np.zeros(len(cols)),
             "scale": np.ones(len(cols))}
    whole = fed.run("nordfed.lasso.newton", {"covariates": cols, "outcome": "y", "points": [point]})
    work = [0, 1, 3]
    part = fed.run("nordfed.lasso.newton", {"covariates": cols, "outcome": "y",
                                            "points": [{**point, "columns": work}]})
    for site in fed.sites:
        full, sub = whole[site]["results"][0], part[site]["results"][0]
        assert np.allclose(unpack_symmetric(sub["hess"]), unpack_symmetric(full["hess"])[np.ix_(work, work)],
                           rtol=1e-12, atol=0)
        assert np.array_equal(sub["grad"], full["grad"]) and sub["loss"] == full["loss"]  # every coefficient's
    with pytest.raises(ValueError, match="columns must be indices"):
        fed.run("nordfed.lasso.newton", {"covariates": cols, "outcome": "y",
                                         "points": [{**point, "columns": [0, len(cols) + 1]}]})


class _Recording(InProcessFederation):
    """The same federation, noting how many Hessian columns each lasso.newton point asks for."""

    def __init__(self, fed: InProcessFederation):
        super().__init__(fed._sites)
        self.columns: list[int] = []

    def aggregate(self, name, params, sites=None):
        if name == "nordfed.lasso.newton":
            self.columns += [len(p["columns"]) for p in params["points"] if "columns" in p]
        return super().aggregate(name, params, sites)


def test_path_asks_for_working_set_hessians_and_still_equals_sklearn() -> None:
    df, cols = simulated(2000, seed=8)
    fed = _Recording(split(df, 3))
    fit = fit_lasso(fed, cols, "y", n_lambda=15, lambda_min_ratio=0.05, standardize=False)
    # along the path most points need the Hessian of a few coefficients, never more than all of them
    assert min(fed.columns) < len(cols) + 1 and max(fed.columns) <= len(cols) + 1
    assert np.mean(fed.columns) < 0.8 * (len(cols) + 1)
    x, y = df[cols].to_numpy(), df["y"].to_numpy()
    for k in (3, 9, 14):  # the same optimum as a solver that sees every coefficient
        lam = float(fit.lambdas[k])
        b0, b = fit.original(k)
        assert pooled_kkt(x, y, b0, b, lam, 1.0) < 1e-6
