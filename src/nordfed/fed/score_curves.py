"""Curves drawn from the sites' disclosure-safe score blocks: ROC, prediction distribution, smooth calibration.

Nothing here asks a site for anything: every curve is a function of the blocks each site already releases per
class (:func:`~nordfed.fed.score_hist.release_blocks`), read through their within-block density
(:func:`~nordfed.fed.score_hist.pieces`: uniform pieces). Smoothing is a Gaussian kernel on the logit scale,
convolved exactly with each uniform piece, so a curve from blocks differs from the same kernel on the raw rows
only by where the rows sit inside their blocks; blocks are narrow where rows are dense.

Bandwidth rule: Silverman's rule of thumb on the logits of all rows, ``0.9 · min(sd, IQR/1.34) · m^(-1/5)``,
with ``m`` the size of the smaller outcome class: the calibration curve is as noisy as the events are few.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit, logit, ndtr

from nordfed.fed import score_hist

#: a calibration curve is drawn only where both classes have this many (expected) rows within one bandwidth:
#: an observed rate from fewer events is noise, and the kernel would carry the curve past the data
MIN_MASS = 10
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
_SQRT_2PI = np.sqrt(2 * np.pi)
_MIN_BANDWIDTH = 4 * 2 * score_hist.GRID_LIMIT / score_hist.GRID_BINS

Blocks = Sequence[np.ndarray]


def roc_curve(pos_blocks: Blocks, neg_blocks: Blocks) -> dict[str, list[float]]:
    """ROC points from the sites' released score blocks (the resolution of one grid bin, no row leaves)."""
    _, dpos = score_hist.pooled_density(list(pos_blocks))
    _, dneg = score_hist.pooled_density(list(neg_blocks))
    tpr = np.r_[0.0, np.cumsum(dpos[::-1])] / max(dpos.sum(), 1e-12)
    fpr = np.r_[0.0, np.cumsum(dneg[::-1])] / max(dneg.sum(), 1e-12)
    keep = np.r_[True, (dpos[::-1] + dneg[::-1]) > 1e-12]
    return {"fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def _compact(values: np.ndarray, digits: int = 5) -> list[float]:
    """A curve for the results JSON: a figure needs no more than ``digits`` significant digits."""
    return [float(f"{v:.{digits}g}") for v in np.asarray(values, dtype=float)]


def _pieces(block_sets: Blocks) -> np.ndarray:
    parts = [score_hist.pieces(b) for b in block_sets]
    return np.vstack(parts) if parts else np.empty((0, 3))


def smoothed_density(block_sets: Blocks, x: np.ndarray, h: float) -> np.ndarray:
    """Rows per unit logit at ``x``: the blocks' piecewise-uniform density convolved with a N(0, h²) kernel.

    It integrates to the blocks' total count:

    >>> b = np.array([[-1.0, 1.0, 20, 0.0]])
    >>> x = np.linspace(-6, 6, 2401)
    >>> round(float(np.sum(smoothed_density([b], x, 0.5)) * (x[1] - x[0])), 6)
    20.0
    """
    pc = _pieces(block_sets)
    x = np.asarray(x, dtype=float)
    if len(pc) == 0:
        return np.zeros_like(x)
    a, b, c = pc[:, 0], pc[:, 1], pc[:, 2]
    w = b - a
    za, zb = (x[:, None] - a) / h, (x[:, None] - b) / h
    # a piece much narrower than the kernel is a point mass at its centre: the difference of two nearly equal
    # normal CDFs divided by its width would be rounding noise
    narrow = w < 1e-3 * h
    uniform = (ndtr(za) - ndtr(zb)) / np.where(narrow, 1.0, w)
    zm = (x[:, None] - (a + b) / 2) / h
    point = np.exp(-0.5 * zm**2) / (_SQRT_2PI * h)
    return np.where(narrow, point, uniform) @ c


def _count(block_sets: Blocks) -> float:
    return float(sum(np.asarray(b, dtype=float).reshape(-1, 4)[:, 2].sum() for b in block_sets))


def _moments(block_sets: Blocks) -> tuple[float, float, float]:
    """Count, mean and sd of the logits under the blocks' piecewise-uniform density."""
    pc = _pieces(block_sets)
    a, b, c = pc[:, 0], pc[:, 1], pc[:, 2]
    n = float(c.sum())
    m1 = float(c @ ((a + b) / 2)) / n
    m2 = float(c @ ((a * a + a * b + b * b) / 3)) / n
    return n, m1, float(np.sqrt(max(m2 - m1 * m1, 0.0)))


def quantile_logits(block_sets: Blocks, probs: Sequence[float]) -> np.ndarray:
    """Quantiles of the logit from the blocks (linear within grid bins)."""
    return logit(score_hist.pooled_quantiles(list(block_sets), np.asarray(probs, dtype=float)))


def _silverman(block_sets: Blocks, n: float) -> float:
    """0.9 · min(sd, IQR/1.34) · n^(-1/5) with sd and IQR of the blocks' logits, at least a few grid bins (a
    model that predicts one risk for all, say an intercept only, has sd 0)."""
    _, _, sd = _moments(block_sets)
    q1, q3 = quantile_logits(block_sets, (0.25, 0.75))
    return max(float(0.9 * (min(sd, (q3 - q1) / 1.34) or sd) * n ** -0.2), _MIN_BANDWIDTH)


def bandwidth(pos_blocks: Blocks, neg_blocks: Blocks) -> float:
    """Silverman's rule on the logits of all rows, counted on the smaller class (see the module docstring)."""
    return _silverman([*pos_blocks, *neg_blocks], min(_count(pos_blocks), _count(neg_blocks)))


def _span(block_sets: Blocks) -> tuple[float, float]:
    """Lowest and highest logit any block covers."""
    b = np.vstack([np.asarray(s, dtype=float).reshape(-1, 4) for s in block_sets])
    return float(b[:, 0].min()), float(b[:, 1].max())


def _observed(pos: Blocks, neg: Blocks, x: np.ndarray, h: float) -> np.ndarray:
    """Kernel (Nadaraya-Watson) estimate of the event rate at logit ``x``."""
    dp = smoothed_density(pos, x, h)
    dn = smoothed_density(neg, x, h)
    return dp / np.maximum(dp + dn, 1e-300)


def calibration_curve(pos_blocks: Blocks, neg_blocks: Blocks, h: float | None = None, points: int = 100,
                      min_mass: float = MIN_MASS) -> dict[str, Any]:
    """Smooth calibration curve, observed event rate against predicted risk, from the sites' blocks.

    Observed(x) = Σ K_h * events / Σ K_h * (events + non-events) on the logit scale (kernel regression with
    a Gaussian kernel), drawn at ``points`` predicted risks where both classes have ``min_mass`` rows within
    ``h``. ``ici`` is the mean of |observed − predicted| over all rows (the smoothed ICI of Austin & Steyerberg,
    with this kernel in place of loess).
    """
    pos, neg = list(pos_blocks), list(neg_blocks)
    if min(_count(pos), _count(neg)) == 0:  # one class only: no rate to estimate
        return {"bandwidth": None, "ici": None, "min_mass": min_mass, "predicted": [], "observed": []}
    h = bandwidth(pos, neg) if h is None else float(h)
    lo, hi = _span([*pos, *neg])
    # the ICI integrates over every row: cells of a tenth of a bandwidth, weighted by the rows in them
    edges = np.linspace(lo, hi, int(min(4000, max(50, np.ceil(10 * (hi - lo) / h)))) + 1)
    mid = (edges[:-1] + edges[1:]) / 2
    rows = np.diff(sum(score_hist.block_cdf(b, edges) for b in [*pos, *neg]))
    ici = float(rows @ np.abs(_observed(pos, neg, mid, h) - expit(mid)) / rows.sum())

    def near(blocks: list[np.ndarray], x: np.ndarray) -> np.ndarray:
        return sum(score_hist.block_cdf(b, x + h) - score_hist.block_cdf(b, x - h) for b in blocks)

    ok = (near(pos, mid) >= min_mass) & (near(neg, mid) >= min_mass)
    out: dict[str, Any] = {"bandwidth": h, "ici": ici, "min_mass": min_mass, "predicted": [], "observed": []}
    if ok.any():
        x = np.linspace(mid[ok][0], mid[ok][-1], points)
        out["predicted"] = _compact(expit(x))
        out["observed"] = _compact(_observed(pos, neg, x, h))
    return out


def prediction_distribution(pos_blocks: Blocks, neg_blocks: Blocks, points: int = 120,
                            probs: Sequence[float] = QUANTILES) -> dict[str, Any]:
    """Smoothed density (rows per unit logit) of the logit for events and non-events, and their risk quantiles.

    Each class is smoothed with Silverman's rule on its own rows; each density integrates to its class count.
    """
    classes = {"events": list(pos_blocks), "non_events": list(neg_blocks)}
    n = {k: _count(b) for k, b in classes.items()}
    h = {k: _silverman(b, n[k]) if n[k] else None for k, b in classes.items()}
    lo, hi = _span([*classes["events"], *classes["non_events"]])
    pad = 4 * max(v for v in h.values() if v is not None)  # the kernel tails beyond hold < 1e-4 of a class
    x = np.linspace(lo - pad, hi + pad, points)
    out: dict[str, Any] = {"logit": _compact(x), "bandwidth": h, "n": n, "quantiles": {"probs": list(probs)}}
    for k, b in classes.items():
        out[k] = _compact(smoothed_density(b, x, h[k])) if n[k] else [0.0] * points
        out["quantiles"][k] = score_hist.pooled_quantiles(b, np.asarray(probs)).tolist() if n[k] else None
    return out
