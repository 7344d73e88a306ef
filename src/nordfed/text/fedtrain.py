"""Federated training of the context classifier: every site returns the loss and gradient of its own mentions
at the current weights; the client sums them, adds the ridge penalty and takes L-BFGS steps until convergence.

The summed objective is exactly the pooled one, so the federated model equals a pooled fit (tested against
scikit-learn's LogisticRegression). Gradients of hashed n-gram models can hint at rare strings, so the sites'
answers are masked for a secure sum (:meth:`~nordfed.fed.protocol.Federation.aggregate`): the client sees only
the sum.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import scipy.sparse as sp

from nordfed.fed.protocol import Federation, SiteData, algorithm
from nordfed.privacy.disclosure import require_min_rows
from nordfed.text.classifier import N_HASH, ContextClassifier, K, featurize, labels, loss_grad, minimise, n_dims

ALGORITHM = "nordfed.text.context_lr"
# featurising is the costly part of a round; a site keeps its design matrix between rounds (a weak reference
# proves the cached matrix belongs to this very frame: ids of dead frames get reused)
_FEATURES: dict[tuple[str, int, int], tuple[weakref.ref, sp.csr_matrix, np.ndarray]] = {}


@algorithm(ALGORITHM, "1")
def context_lr_partial(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Loss and gradient of the site's labelled mentions at ``params['theta']``."""
    frame = data.frame(params.get("dataset"))
    n_features = int(params.get("n_features", N_HASH))
    require_min_rows(len(frame), data.policy, "labelled mentions")
    key = (data.site, id(frame), n_features)
    hit = _FEATURES.get(key)
    if hit is None or hit[0]() is not frame:
        if len(_FEATURES) > 64:
            _FEATURES.clear()
        hit = _FEATURES[key] = (weakref.ref(frame), featurize(frame, n_features), labels(frame))
    _, x, y = hit
    theta = np.asarray(params["theta"], dtype=float)
    if theta.size != K * x.shape[1] + K:
        raise ValueError(f"theta has {theta.size} values, expected {K * x.shape[1] + K}")
    loss, grad = loss_grad(theta, x, y)
    return {"loss": loss, "grad": grad, "n": len(frame)}


def fit_federated(fed: Federation, c: float = 10.0, n_features: int = N_HASH, dataset: Any = None,
                  sites: list[str] | None = None, max_iter: int = 500) -> ContextClassifier:
    """Train the context classifier across ``sites`` (default all) to convergence."""
    rounds = 0

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal rounds
        rounds += 1
        out = fed.aggregate(ALGORITHM, {"theta": theta, "n_features": n_features, "dataset": dataset}, sites)
        return float(out["loss"]), np.asarray(out["grad"], dtype=float)

    theta, nit = minimise(fun, n_dims(n_features), c, max_iter=max_iter)
    model = ContextClassifier.from_theta(theta, n_features, nit)
    model.rounds = rounds
    return model
