"""Statistical disclosure control applied by every node before a partial result leaves it.

The rules follow DataSHIELD's defaults: no count below the minimum cell count (``nfilter.tab``), no
model with too many parameters for the rows (``nfilter.glm``), no subset smaller than the minimum.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtri

#: largest share of a weighted sum's total weight one row may carry (see require_spread_weights)
MAX_WEIGHT_SHARE = 0.5


class DisclosureError(Exception):
    """A partial result would reveal too little aggregated data; the message is shown to the researcher."""


@dataclass(frozen=True)
class DisclosurePolicy:
    """A node's disclosure rules. Nodes may raise the thresholds, never lower them below the defaults."""

    min_cell_count: int = 10
    #: maximum ratio of model parameters to rows (DataSHIELD nfilter.glm = 0.33)
    max_params_per_row: float = 0.33
    #: release exact per-time survival aggregates (event times, per-time counts, risk-set sums) whose
    #: counts may lie below the minimum cell count; off by default (see nordfed.fed.survival_data)
    exact_event_times: bool = False
    #: standard deviation (in the data's time unit) of Gaussian noise the site adds to every event and
    #: censoring time before releasing Kaplan-Meier counts (vantage6's practice); 0 = no noise
    event_time_noise: float = 0.0
    #: the node's secret (:func:`nordfed.privacy.crypto.site_secret`) behind the randomness a researcher must not
    #: be able to replay: which rows form a cross-validation fold, the noise on released times. Empty in
    #: simulation (``InProcessFederation``), where folds follow the researcher's seed alone
    secret: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.min_cell_count < 1:
            raise ValueError("min_cell_count must be at least 1")
        if not self.event_time_noise >= 0:
            raise ValueError("event_time_noise must be zero or positive")
        if not 0 < self.max_params_per_row <= 1:
            raise ValueError("max_params_per_row must be in (0, 1]")


def require_min_rows(n: int, policy: DisclosurePolicy, what: str = "rows") -> None:
    """Refuse an aggregate computed over fewer than ``min_cell_count`` rows (but allow zero rows)."""
    if 0 < n < policy.min_cell_count:
        # the message reaches the researcher, so it must not carry the small count itself
        raise DisclosureError(f"refused: fewer {what} than this node's minimum cell count ({policy.min_cell_count})")


def require_params_ok(n_params: int, n_rows: int, policy: DisclosurePolicy) -> None:
    """DataSHIELD's nfilter.glm: refuse models whose parameter count is too large for the rows."""
    if n_rows and n_params > policy.max_params_per_row * n_rows:
        raise DisclosureError(
            f"refused: model with {n_params} parameters on {n_rows} rows exceeds this node's limit "
            f"({policy.max_params_per_row:g} parameters per row)"
        )


def suppress_counts(counts: Mapping[Any, int], policy: DisclosurePolicy) -> dict[Any, int | None]:
    """Replace every count in ``1 .. min_cell_count-1`` by ``None`` (suppressed); zeros stay zeros."""
    return {k: (None if 0 < int(v) < policy.min_cell_count else int(v)) for k, v in counts.items()}


def suppress_cells_of_total(counts: Mapping[Any, int], policy: DisclosurePolicy) -> dict[Any, int | None]:
    """:func:`suppress_counts` for cells whose total is released too: when exactly one cell is suppressed,
    the total minus the released cells would be that cell, so the smallest other non-zero cell is withheld
    as well (secondary suppression)."""
    out = suppress_counts(counts, policy)
    if sum(v is None for v in out.values()) == 1:
        others = [(int(v), k) for k, v in counts.items() if out[k] is not None and int(v) > 0]
        if others:
            out[min(others, key=lambda c: c[0])[1]] = None
    return out


def check_counts(counts: np.ndarray | list[int], policy: DisclosurePolicy, what: str) -> None:
    """Refuse when any released count lies strictly between zero and the minimum cell count."""
    arr = np.asarray(counts)
    small = (arr > 0) & (arr < policy.min_cell_count)
    if small.any():
        raise DisclosureError(
            f"refused: {int(small.sum())} {what} below this node's minimum cell count ({policy.min_cell_count})"
        )


def check_two_valued(values: np.ndarray, name: str, policy: DisclosurePolicy) -> None:
    """DataSHIELD's glm rule: a column with exactly two distinct values (a 0/1 outcome, say) must have zero or at
    least ``min_cell_count`` rows at each value, since its sums count them."""
    levels, counts = np.unique(np.asarray(values, dtype=float), return_counts=True)
    if len(levels) == 2 and counts.min() < policy.min_cell_count:
        raise DisclosureError(
            f"refused: the two-valued column {name!r} has a value held by fewer rows than this node's "
            f"minimum cell count ({policy.min_cell_count})"
        )


def require_spread_weights(weights: np.ndarray, what: str) -> None:
    """Refuse a weighted sum (X'WX, a Hessian) that one row dominates.

    The weights (p(1-p), μ, ...) depend on researcher-chosen coefficients: steep ones make every weight but one
    vanish, and the weighted sum is then that row's outer product. The (1, k) dominance rule of statistical
    disclosure control: no row may carry more than ``MAX_WEIGHT_SHARE`` of the total weight. (Kish's effective
    number of rows would be stricter, but near-separable LASSO folds legitimately go down to ~7 rows, so it
    cannot require the minimum cell count.) All-zero weights release nothing and pass.
    """
    w = np.abs(np.asarray(weights, dtype=float))
    if not np.isfinite(w).all():
        # one overflowing weight makes each entry ±inf or NaN by the sign of that row's value
        raise DisclosureError(f"refused: {what} is not finite at these coefficients")
    top = float(w.max(initial=0.0))
    if top == 0.0:
        return
    # divide by the largest weight first so that tiny weights cannot underflow the total to zero
    share = 1.0 / float((w / top).sum())
    if share > MAX_WEIGHT_SHARE:
        raise DisclosureError(
            f"refused: one row would carry most of {what} at these coefficients (the weights concentrate on it)"
        )


def site_rng(policy: DisclosurePolicy, purpose: str, seed: int) -> np.random.Generator:
    """A generator for ``purpose`` that follows ``seed`` but, at a node, also the node's secret: the same seed
    gives the same draws at this site every time (a fit's rounds see the same folds), yet a researcher cannot
    compute them (a public fold permutation let 120 requests with different seeds solve for every row)."""
    if not policy.secret:
        return np.random.default_rng(seed)
    digest = hmac.new(policy.secret, f"{purpose}:{int(seed)}".encode(), hashlib.sha256).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def keyed_normals(policy: DisclosurePolicy, purpose: str, values: np.ndarray) -> np.ndarray:
    """One standard normal draw per value, a function of the value and the node's secret only, so repeated
    requests see the same noise and averaging them learns nothing; without a secret, fresh OS entropy."""
    values = np.asarray(values, dtype=float)
    if not policy.secret:
        return np.random.default_rng().standard_normal(values.shape)
    distinct, inverse = np.unique(values, return_inverse=True)
    u = np.empty(len(distinct))
    for i, v in enumerate(distinct.tolist()):
        digest = hmac.new(policy.secret, f"{purpose}:{v!r}".encode(), hashlib.sha256).digest()
        u[i] = (int.from_bytes(digest[:8], "big") + 0.5) / 2.0**64  # uniform in (0, 1)
    return ndtri(u)[inverse].reshape(values.shape)
