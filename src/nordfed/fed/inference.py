"""Wald inference shared by the federated regressions (Cox, GLM): one table from β and its covariance."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def wald_table(names: Sequence[str], beta: np.ndarray, cov: np.ndarray,
               alpha: float = 0.05) -> dict[str, dict[str, float]]:
    """Coefficients, standard errors, (1-alpha) CIs, z and two-sided p-values, each keyed by name.

    >>> wald_table(["x"], np.array([1.0]), np.array([[0.25]]))["z"]
    {'x': 2.0}
    """
    se = np.sqrt(np.diag(cov))
    zs = beta / se
    zq = stats.norm.ppf(1 - alpha / 2)

    def named(values: np.ndarray) -> dict[str, float]:
        return {c: float(v) for c, v in zip(names, values, strict=True)}

    return {"coefficients": named(beta), "standard_errors": named(se), "ci_lower": named(beta - zq * se),
            "ci_upper": named(beta + zq * se), "z": named(zs), "p_values": named(2 * stats.norm.sf(np.abs(zs)))}
