"""Exact federated generalised linear models (binomial/logit, gaussian/identity, poisson/log) by IRLS.

Each IRLS iteration the central half sends β; every site returns XᵀWX, XᵀWz, its deviance and Pearson χ²
(over its rows, with the canonical link). Those are sums over rows, so their sums over sites are the pooled
quantities and the federated fit equals a pooled ``statsmodels`` GLM. Disclosure: every site needs at
least the minimum cell count of rows, passes DataSHIELD's ``nfilter.glm`` (parameters per row), and for a
binomial outcome both outcome levels must be zero or at least the minimum cell count (``nfilter.tab``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import special

from nordfed.fed.inference import wald_table
from nordfed.fed.protocol import AlgorithmError, Federation, SiteData, algorithm
from nordfed.fed.survival_data import numeric_columns
from nordfed.privacy.disclosure import (
    CONCENTRATED,
    check_counts,
    check_two_valued,
    require_min_rows,
    require_params_ok,
    require_spread_weights,
)

FAMILIES = ("binomial", "gaussian", "poisson")


# --------------------------------------------------------------------------------------------- pure math
def inverse_link(family: str, eta: np.ndarray) -> np.ndarray:
    if family == "binomial":
        return special.expit(eta)
    if family == "poisson":
        return np.exp(eta)
    return eta


def variance(family: str, mu: np.ndarray) -> np.ndarray:
    if family == "binomial":
        return mu * (1 - mu)
    if family == "poisson":
        return mu
    return np.ones_like(mu)


def unit_deviance(family: str, y: np.ndarray, mu: np.ndarray) -> np.ndarray:
    if family == "binomial":
        return 2 * (special.xlogy(y, y / mu) + special.xlogy(1 - y, (1 - y) / (1 - mu)))
    if family == "poisson":
        return 2 * (special.xlogy(y, y / mu) - (y - mu))
    return (y - mu) ** 2


def irls_weights(family: str, X: np.ndarray, offset: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, ...]:
    """Linear predictor, mean and working weight (the variance, canonical link) of every row at β."""
    eta = X @ beta + offset
    mu = inverse_link(family, eta)
    return eta, mu, variance(family, mu)


def irls_sums(family: str, y: np.ndarray, X: np.ndarray, offset: np.ndarray, eta: np.ndarray, mu: np.ndarray,
              w: np.ndarray) -> dict[str, Any]:
    """One site's IRLS sums at β, given :func:`irls_weights` at β."""
    # working response minus offset: z = η - offset + (y - μ)/w
    z = eta - offset + (y - mu) / w
    Xw = X * w[:, None]
    return {
        "xtwx": Xw.T @ X,
        "xtwz": Xw.T @ z,
        "deviance": float(unit_deviance(family, y, mu).sum()),
        "pearson": float(((y - mu) ** 2 / w).sum()),
    }


# --------------------------------------------------------------------------------------------- partials
def _design(data: SiteData, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = data.frame(params.get("dataset"))
    cols = [params["outcome"], *params["covariates"]]
    if params.get("offset"):
        cols.append(params["offset"])
    num = numeric_columns(frame, cols, data.site)
    y = num[params["outcome"]].to_numpy()
    X = np.column_stack([np.ones(len(num)), num[list(params["covariates"])].to_numpy()])
    offset = num[params["offset"]].to_numpy() if params.get("offset") else np.zeros(len(num))
    family = params["family"]
    if family not in FAMILIES:  # an unknown family would fit as gaussian and skip the binomial checks
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    policy = data.policy
    require_min_rows(len(y), policy)
    require_params_ok(X.shape[1], len(y), policy)
    if family == "binomial":
        if ((y < 0) | (y > 1)).any():
            raise ValueError(f"site {data.site}: binomial outcome {params['outcome']!r} must lie in [0, 1]")
        check_counts(np.array([(y == 1).sum(), (y == 0).sum()]), policy, f"outcome levels of {params['outcome']}")
    elif family == "poisson" and (y < 0).any():
        raise ValueError(f"site {data.site}: poisson outcome {params['outcome']!r} must be non-negative")
    if family != "binomial":
        # a two-valued outcome counts its rows through Σy in any family (DataSHIELD checks y for every family)
        check_two_valued(y, params["outcome"], policy)
    return y, X, offset


@algorithm("nordfed.glm.irls")
def glm_irls(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """IRLS sums at β, or with ``beta`` absent the row count and outcome sums for a start value."""
    y, X, offset = _design(data, params)
    if params.get("beta") is None:
        return {"n": len(y), "ysum": float(y.sum()), "offset_sum": float(offset.sum())}
    eta, mu, w = irls_weights(params["family"], X, offset, np.asarray(params["beta"], float))
    require_spread_weights(w, "X'WX")
    out = irls_sums(params["family"], y, X, offset, eta, mu, w)
    if not np.isfinite(out["deviance"]):  # said here: a masked sum cannot carry it to the client
        raise ValueError(f"site {data.site}: GLM deviance is not finite at these coefficients (perfect separation "
                         "or overflow?)")
    out["n"] = len(y)
    return out


# --------------------------------------------------------------------------------------------- central
@dataclass
class GLMResult:
    """A fitted federated GLM (statsmodels-like names; ``intercept`` first)."""

    family: str
    coefficients: dict[str, float]
    standard_errors: dict[str, float]
    ci_lower: dict[str, float]
    ci_upper: dict[str, float]
    z: dict[str, float]
    p_values: dict[str, float]
    deviance: float
    pearson_chi2: float
    scale: float
    iterations: int
    n: int
    df_resid: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _start(family: str, n: int, ysum: float, offset_sum: float, p: int) -> np.ndarray:
    """Intercept-only start: link of the pooled mean outcome (minus the mean offset)."""
    ybar = min(max(ysum / n, 1e-6), 1 - 1e-6) if family == "binomial" else ysum / n
    if family == "binomial":
        b0 = float(special.logit(ybar))
    elif family == "poisson":
        b0 = float(np.log(max(ybar, 1e-10)))
    else:
        b0 = ybar
    beta = np.zeros(p)
    beta[0] = b0 - offset_sum / n
    return beta


def irls(evaluate: Callable[[np.ndarray], Mapping[str, Any]], beta: np.ndarray, max_iter: int = 100,
         tol: float = 1e-10) -> tuple[np.ndarray, Mapping[str, Any], int]:
    """IRLS from ``beta``; ``evaluate(beta)`` gives the summed ``xtwx``, ``xtwz`` and ``deviance`` there.
    Returns the converged β, the sums at it and the number of updates.

    An update that a site refuses because one row would dominate X'WX (an overshooting step, as glm.fit's
    step halving meets a non-finite deviance) is halved towards the last point until a site answers; the
    refusal itself is raised when no halving helps, and other refusals are not stepped around.
    """
    sums = evaluate(beta)
    dev_old = np.inf
    for it in range(1, max_iter + 1):
        dev = float(sums["deviance"])
        target = np.linalg.solve(np.asarray(sums["xtwx"]), np.asarray(sums["xtwz"]))
        converged = abs(dev - dev_old) <= tol * (abs(dev) + tol) and np.max(np.abs(target - beta)) < 1e-8
        step, dev_old = target - beta, dev
        for halvings in range(31):
            try:
                sums = evaluate(beta + step)
                break
            except AlgorithmError as exc:
                if not (exc.refused and CONCENTRATED in exc.message) or halvings == 30:
                    raise
                step = step / 2
        beta = beta + step
        if converged:
            return beta, sums, it
    raise AlgorithmError("all", f"GLM did not converge in {max_iter} iterations")


def fit_glm(
    fed: Federation,
    *,
    outcome: str,
    covariates: Sequence[str],
    family: str = "binomial",
    offset: str | None = None,
    dataset: Any = None,
    alpha: float = 0.05,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> GLMResult:
    """Fit a GLM on the pooled rows of all sites by federated IRLS."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    covariates = list(covariates)
    names = ["intercept", *covariates]
    base = {"outcome": outcome, "covariates": covariates, "family": family, "offset": offset,
            "dataset": dataset, "beta": None}
    # every round needs only sums over the sites: they come masked (a site's own X'Wz would give its X'y)
    first = fed.aggregate("nordfed.glm.irls", base)
    n = int(first["n"])
    beta = _start(family, n, first["ysum"], first["offset_sum"], len(names))
    beta, sums, iterations = irls(lambda b: fed.aggregate("nordfed.glm.irls", {**base, "beta": b}), beta,
                                  max_iter, tol)
    xtwx, dev, pearson = np.asarray(sums["xtwx"]), float(sums["deviance"]), float(sums["pearson"])
    df_resid = n - len(names)
    scale = pearson / df_resid if family == "gaussian" else 1.0
    cov = np.linalg.inv(xtwx) * scale
    return GLMResult(
        family=family,
        **wald_table(names, beta, cov, alpha),
        deviance=dev,
        pearson_chi2=pearson,
        scale=scale,
        iterations=iterations,
        n=n,
        df_resid=df_resid,
    )
