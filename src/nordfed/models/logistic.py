"""A federated penalised logistic regression with a scikit-learn face (fit / predict_proba / save / load)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from nordfed.fed.lasso import LassoFit, fit_lasso
from nordfed.fed.protocol import Federation

_FORMAT = "nordfed.logistic/1"


class FederatedLogisticRegression:
    """LASSO / elastic-net / ridge logistic regression fitted across sites, exact on the pooled rows.

    Minimises ``(1/n) sum logloss + lam * (alpha |b|_1 + (1 - alpha)/2 |b|_2^2)`` with an unpenalised
    intercept (glmnet's convention; scikit-learn's ``C = 1 / (n * lam)``). ``lam=None`` with ``cv`` picks
    lambda by federated ``cv``-fold cross-validation (``select`` "min" or "1se").
    """

    def __init__(self, lam: float | None = None, alpha: float = 1.0, standardize: bool = True,
                 cv: int | None = None, select: str = "min", n_lambda: int = 100,
                 lambda_min_ratio: float | None = None, seed: int = 0, tol: float = 1e-10, max_iter: int = 100):
        self.lam, self.alpha, self.standardize, self.cv, self.select = lam, alpha, standardize, cv, select
        self.n_lambda, self.lambda_min_ratio, self.seed, self.tol, self.max_iter = (
            n_lambda, lambda_min_ratio, seed, tol, max_iter)
        self.covariates_: list[str] = []
        self.coef_ = np.zeros((1, 0))
        self.intercept_ = np.zeros(1)
        self.classes_ = np.array([0, 1])
        self.lambda_: float = float("nan")
        self.n_iter_: int = 0
        self.fit_: LassoFit | None = None
        self.meta_: dict[str, Any] = {}

    def fit(self, federation: Federation, covariates: Sequence[str], outcome: str, dataset: Any = None,
            sites: Sequence[str] | None = None, where: Mapping[str, Any] | None = None) -> FederatedLogisticRegression:
        if self.lam is None and not self.cv:
            raise ValueError("give lam (the penalty) or cv (number of folds to choose it)")
        fit = fit_lasso(federation, covariates, outcome, lam=self.lam, alpha=self.alpha,
                        standardize=self.standardize, cv_folds=self.cv, select=self.select, n_lambda=self.n_lambda,
                        lambda_min_ratio=self.lambda_min_ratio, seed=self.seed, dataset=dataset, sites=sites,
                        where=where, tol=self.tol, max_iter=self.max_iter)
        self._set(fit.to_model(), fit.lam, fit.iterations)
        self.fit_ = fit
        self.meta_ = {"outcome": outcome, "n": fit.n, "n_events": fit.n_events, "sites": fit.sites,
                      "kkt": fit.kkt, "rounds": fit.rounds}
        return self

    def _set(self, model: Mapping[str, Any], lam: float, n_iter: int) -> None:
        self.covariates_ = list(model["covariates"])
        self.coef_ = np.asarray(model["coef"], dtype=float).reshape(1, -1)
        self.intercept_ = np.array([float(model["intercept"])])
        self.lambda_, self.n_iter_ = float(lam), int(n_iter)

    @property
    def coefficients(self) -> dict[str, float]:
        """Coefficients by covariate name (original scale), intercept under "intercept"."""
        return {"intercept": float(self.intercept_[0]),
                **{c: float(b) for c, b in zip(self.covariates_, self.coef_[0], strict=True)}}

    def to_model(self) -> dict[str, Any]:
        """The JSON-able model that sites score with (see ``nordfed.fed.lasso_site.linear_predictor``)."""
        return {"covariates": self.covariates_, "coef": self.coef_[0].tolist(), "intercept": float(self.intercept_[0])}

    def _matrix(self, x: pd.DataFrame | np.ndarray) -> np.ndarray:
        if isinstance(x, pd.DataFrame):
            missing = [c for c in self.covariates_ if c not in x.columns]
            if missing:
                raise ValueError(f"missing column(s) {', '.join(missing)}")
            return x[self.covariates_].to_numpy(dtype=float)
        arr = np.asarray(x, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != len(self.covariates_):
            raise ValueError(f"expected a 2-D array with {len(self.covariates_)} columns, got shape {arr.shape}")
        return arr

    def decision_function(self, x: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Linear predictor (logit)."""
        return self.intercept_[0] + self._matrix(x) @ self.coef_[0]

    def predict_proba(self, x: pd.DataFrame | np.ndarray) -> np.ndarray:
        """n×2 array of [P(y=0), P(y=1)] like scikit-learn."""
        p = expit(self.decision_function(x))
        return np.column_stack([1.0 - p, p])

    def predict(self, x: pd.DataFrame | np.ndarray) -> np.ndarray:
        return (self.predict_proba(x)[:, 1] >= 0.5).astype(int)

    def save(self, path: str | Path) -> None:
        """Write the model as JSON (coefficients, settings, fit summary)."""
        doc = {"format": _FORMAT, "model": self.to_model(), "lambda": self.lambda_, "n_iter": self.n_iter_,
               "params": {"lam": self.lam, "alpha": self.alpha, "standardize": self.standardize, "cv": self.cv,
                          "select": self.select, "seed": self.seed},
               "meta": self.meta_}
        Path(path).write_text(json.dumps(doc, indent=2, default=float), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> FederatedLogisticRegression:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: cannot read model: {exc}") from exc
        if doc.get("format") != _FORMAT:
            raise ValueError(f"{path}: not a nordfed logistic model (format {doc.get('format')!r})")
        params = doc.get("params", {})
        obj = cls(lam=params.get("lam"), alpha=params.get("alpha", 1.0),
                  standardize=params.get("standardize", True), cv=params.get("cv"),
                  select=params.get("select", "min"), seed=params.get("seed", 0))
        obj._set(doc["model"], doc.get("lambda", float("nan")), doc.get("n_iter", 0))
        obj.meta_ = doc.get("meta", {})
        return obj
