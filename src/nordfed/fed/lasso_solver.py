"""Pure math of penalised logistic regression: local sums, the penalised quadratic subproblem, KKT checks.

Objective (glmnet's convention, unpenalised intercept ``b[0]``)::

    F(b) = (1/n) * sum_i logloss_i(b) + lam * (alpha * |b[1:]|_1 + (1 - alpha)/2 * |b[1:]|_2^2)

Everything here works on an augmented design ``Z = [1, (X - center) / scale]``; callers map back to the
original scale with :func:`to_original_scale`.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import blas
from scipy.special import expit

from nordfed.jit import compiled


def design(x: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Augmented, standardised design ``[1, (x - center) / scale]`` as a float64 array."""
    z = np.empty((x.shape[0], x.shape[1] + 1))
    z[:, 0] = 1.0
    np.subtract(x, center, out=z[:, 1:])
    z[:, 1:] /= scale
    return z


def logits(z: np.ndarray, beta: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """The linear predictor ``z @ beta (+ offset)``."""
    return z @ beta if offset is None else z @ beta + offset


def logistic_sums(
    z: np.ndarray, y: np.ndarray, beta: np.ndarray, offset: np.ndarray | None = None, hessian: bool = True,
    packed: bool = False, eta: np.ndarray | None = None, columns: np.ndarray | None = None,
) -> dict[str, np.ndarray | float]:
    """Summed logloss, its gradient and Hessian at ``beta`` (sums, not means: sites add them up); ``packed``:
    the Hessian as its upper triangle (:func:`pack_symmetric`), half the bytes on the wire; ``eta``: the
    :func:`logits`, when the caller has them already; ``columns``: the Hessian of those columns of ``z`` only
    (the solver's working set), the gradient still of all."""
    if eta is None:
        eta = logits(z, beta, offset)
    # log(1 + e^eta) - y*eta, stable for large |eta|
    loss = float(np.sum(np.logaddexp(0.0, eta) - y * eta))
    p = expit(eta)
    out: dict[str, np.ndarray | float] = {"loss": loss, "grad": z.T @ (p - y)}
    if hessian:
        if columns is not None:
            z = z[:, columns]
        w = p * (1.0 - p)
        if z.shape[1] > 32:  # symmetric rank-k update: half the flops of a general product
            zw = z * np.sqrt(w)[:, None]
            upper = blas.dsyrk(1.0, zw, trans=1)
            out["hess"] = upper[np.triu_indices(len(upper))] if packed else np.triu(upper) + np.triu(upper, 1).T
        else:
            h = (z * w[:, None]).T @ z
            out["hess"] = pack_symmetric(h) if packed else h
    return out


def pack_symmetric(h: np.ndarray) -> np.ndarray:
    """The upper triangle of a symmetric matrix, row by row (``p (p + 1) / 2`` values)."""
    return h[np.triu_indices(len(h))]


def unpack_symmetric(packed: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_symmetric`.

    >>> unpack_symmetric(pack_symmetric(np.array([[2.0, 1.0], [1.0, 3.0]]))).tolist()
    [[2.0, 1.0], [1.0, 3.0]]
    """
    p = int((np.sqrt(8 * len(packed) + 1) - 1) // 2)
    if p * (p + 1) // 2 != len(packed):
        raise ValueError(f"{len(packed)} values are not the upper triangle of a square matrix")
    h = np.empty((p, p))
    rows, cols = np.triu_indices(p)
    h[rows, cols] = packed
    h[cols, rows] = packed
    return h


def penalty(beta: np.ndarray, lam: float, alpha: float, pf: np.ndarray) -> float:
    """Elastic-net penalty with per-coefficient factors ``pf`` (0 for the intercept)."""
    return float(lam * np.sum(pf * (alpha * np.abs(beta) + 0.5 * (1.0 - alpha) * beta**2)))


def solve_quadratic(
    g: np.ndarray,
    h: np.ndarray,
    beta0: np.ndarray,
    lam: float,
    alpha: float,
    pf: np.ndarray,
    tol: float = 1e-13,
    max_sweeps: int = 10_000,
) -> np.ndarray:
    """Minimise ``g'(b - b0) + 1/2 (b - b0)' H (b - b0) + penalty(b)`` by cyclic coordinate descent.

    Uses the covariance form (one p-vector kept up to date), so a sweep costs O(p * active); the sweeps are
    compiled (numba).
    Coefficients with an infinite penalty factor stay at zero (constant columns).
    """
    b = beta0.copy()
    free = np.isfinite(pf) & (np.diag(h) > 0)
    pf0 = np.where(free, pf, 0.0)
    b[~free] = 0.0
    h = np.ascontiguousarray(h, dtype=np.float64)
    # r = gradient of the quadratic part at b: g + H (b - b0); rows of the symmetric H are contiguous
    r = g + h @ (b - beta0)
    diag = np.diag(h).copy()
    l1 = lam * alpha * pf0
    l2 = lam * (1.0 - alpha) * pf0
    idx = np.flatnonzero(free)
    active = idx
    full = True
    loose = 1e-6  # coordinate descent finds the active set; a linear solve on it then gives the exact minimum
    for _ in range(max_sweeps):
        max_change = _sweep(active, b, r, h, diag, l1, l2)
        if max_change < max(tol, loose):
            if full:
                if max_change < tol:
                    break
                exact = _polish(g, h, beta0, b, free, l1, l2)
                if exact is not None:
                    return exact
                loose = 0.0  # active set not settled yet: plain coordinate descent to the end
                continue
            active, full = idx, True  # a full sweep confirms the active set
        elif full:
            active = idx[(b[idx] != 0.0) | (l1[idx] == 0.0)]
            if not len(active):
                active = idx
            full = active is idx
    return b


@compiled
def _sweep(active: np.ndarray, b: np.ndarray, r: np.ndarray, h: np.ndarray, diag: np.ndarray, l1: np.ndarray,
           l2: np.ndarray) -> float:
    """One cyclic pass over ``active``, updating ``b`` and ``r`` in place; the largest scaled step."""
    max_change = 0.0
    for j in active:
        old = b[j]
        u = diag[j] * old - r[j]
        a = abs(u) - l1[j]
        new = ((a if u > 0 else -a) / (diag[j] + l2[j])) if a > 0 else 0.0
        if new != old:
            delta = new - old
            row = h[j]
            for t in range(len(r)):
                r[t] += row[t] * delta
            b[j] = new
            change = abs(delta) * np.sqrt(diag[j])
            if change > max_change:
                max_change = change
    return max_change


def _polish(g: np.ndarray, h: np.ndarray, beta0: np.ndarray, b: np.ndarray, free: np.ndarray, l1: np.ndarray,
            l2: np.ndarray) -> np.ndarray | None:
    """Exact minimiser given the active set and signs of ``b``; None when they turn out inconsistent."""
    act = free & ((b != 0) | (l1 == 0))
    c = g - h @ beta0
    sign = np.sign(b)
    ha = h[np.ix_(act, act)] + np.diag(l2[act])
    try:
        ba = -np.linalg.solve(ha, c[act] + l1[act] * sign[act])
    except np.linalg.LinAlgError:
        return None
    pen = act & (l1 > 0)
    if np.any(np.sign(ba[pen[act]]) != sign[pen]):
        return None
    out = np.zeros_like(b)
    out[act] = ba
    inactive = free & ~act
    slack = np.abs(c[inactive] + h[np.ix_(inactive, act)] @ ba) - l1[inactive]
    if np.any(slack > 1e-12 * max(1.0, float(np.abs(c).max()))):
        return None
    return out


def kkt_violations(grad: np.ndarray, beta: np.ndarray, lam: float, alpha: float, pf: np.ndarray) -> np.ndarray:
    """Each coefficient's violation of the optimality conditions of F at ``beta`` (``grad`` = gradient of the mean
    loss); 0 for coefficients held at zero (infinite penalty factor)."""
    fin = np.isfinite(pf)
    g = grad + lam * (1.0 - alpha) * np.where(fin, pf, 0.0) * beta
    l1 = lam * alpha * np.where(fin, pf, 0.0)
    out = np.where(beta != 0, np.abs(g + l1 * np.sign(beta)), np.maximum(np.abs(g) - l1, 0.0))
    return np.where(fin, out, 0.0)


def kkt_violation(grad: np.ndarray, beta: np.ndarray, lam: float, alpha: float, pf: np.ndarray) -> float:
    """Largest violation of the optimality conditions of F at ``beta`` (``grad`` = gradient of the mean loss)."""
    return float(kkt_violations(grad, beta, lam, alpha, pf).max(initial=0.0))


def lambda_max(grad0: np.ndarray, alpha: float, pf: np.ndarray) -> float:
    """Smallest lam at which all penalised coefficients are zero (glmnet uses alpha >= 0.001 here)."""
    mask = np.isfinite(pf) & (pf > 0)
    if not mask.any():
        return 0.0
    return float(np.max(np.abs(grad0[mask]) / pf[mask]) / max(alpha, 1e-3))


def lambda_path(lam_max: float, n_lambda: int, min_ratio: float) -> np.ndarray:
    """glmnet's log-spaced sequence from ``lam_max`` down to ``min_ratio * lam_max``."""
    if n_lambda < 1:
        raise ValueError("n_lambda must be at least 1")
    if n_lambda == 1:
        return np.array([lam_max])
    return lam_max * np.logspace(0.0, np.log10(min_ratio), n_lambda)


def to_original_scale(beta: np.ndarray, center: np.ndarray, scale: np.ndarray) -> tuple[float, np.ndarray]:
    """(intercept, coefficients) on the covariates' own scale from a standardised ``beta``."""
    coef = beta[1:] / scale
    return float(beta[0] - np.dot(coef, center)), coef


def pooled_moments(parts: list[tuple[float, np.ndarray, np.ndarray]]) -> tuple[float, np.ndarray, np.ndarray]:
    """Combine (n, mean, M2) per part into pooled (n, mean, M2) (Chan et al.'s parallel variance)."""
    n = sum(p[0] for p in parts)
    if n == 0:
        raise ValueError("no rows")
    mean = sum(p[0] * p[1] for p in parts) / n
    m2 = sum(p[2] + p[0] * (p[1] - mean) ** 2 for p in parts)
    return n, mean, m2
