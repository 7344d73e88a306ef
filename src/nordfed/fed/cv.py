"""Federated k-fold cross-validation of a lambda path (glmnet's cv.glmnet summary: cvm, cvsd, min and 1-SE).

Folds are assigned at each site from a shared seed (:func:`nordfed.fed.lasso_site.site_table`); the held-out
deviance of every fold's path is summed across sites in one round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from nordfed.fed.protocol import Federation

if TYPE_CHECKING:
    from nordfed.fed.lasso import CVResult, _Problem


def summarise(lambdas: np.ndarray, dev: np.ndarray, n: np.ndarray) -> CVResult:
    """glmnet's summary from held-out deviance sums ``dev`` (K×L) and fold sizes ``n`` (K).

    cvm is the fold-size weighted mean of per-fold mean deviance, cvsd its weighted standard error;
    lambda_1se is the largest lambda whose cvm is within one cvsd of the minimum.
    """
    from nordfed.fed.lasso import CVResult

    per_fold = dev / n[:, None]
    w = n / n.sum()
    cvm = w @ per_fold
    k = len(n)
    cvsd = np.sqrt((w @ (per_fold - cvm) ** 2) / max(k - 1, 1))
    i_min = int(np.argmin(cvm))
    ok = np.flatnonzero(cvm <= cvm[i_min] + cvsd[i_min])
    i_1se = int(ok[np.argmax(lambdas[ok])])
    return CVResult(lambdas=lambdas, cvm=cvm, cvsd=cvsd, lambda_min=float(lambdas[i_min]),
                    lambda_1se=float(lambdas[i_1se]), n_folds=k)


def cross_validate(fed: Federation, base: Mapping[str, Any], folds: Sequence[_Problem], lambdas: np.ndarray,
                   sites: Sequence[str]) -> CVResult:
    """Held-out deviance of each fold's fitted path, summed over sites, summarised as in cv.glmnet."""
    points = [{"fold": p.fold, "betas": np.array(p.path), "center": p.center, "scale": p.scale} for p in folds]
    out = fed.aggregate("nordfed.lasso.deviance", {**base, "points": points}, sites)["results"]
    dev = np.array([r["deviance"] for r in out])
    n = np.array([r["n"] for r in out], dtype=float)
    return summarise(lambdas, dev, n)
