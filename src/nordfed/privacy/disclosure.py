"""Statistical disclosure control applied by every node before a partial result leaves it.

The rules follow DataSHIELD's defaults: no count below the minimum cell count (``nfilter.tab``), no
model with too many parameters for the rows (``nfilter.glm``), no subset smaller than the minimum.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any, TypeVar

import numpy as np
from scipy.special import ndtri

K = TypeVar("K")
C = TypeVar("C")

#: largest share of a weighted sum's total weight one row may carry (see require_spread_weights)
MAX_WEIGHT_SHARE = 0.5
#: how require_spread_weights' refusal begins after "refused: ": a client may step back from such coefficients
CONCENTRATED = "one row would carry most of"


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


def suppress_cells_of_total(cells: Mapping[K, C], policy: DisclosurePolicy, strategy: str = "smallest",
                            hidden: Iterable[K] = ()) -> dict[K, C | None]:
    """:func:`suppress_counts` for cells that partition a released total (complementary suppression).

    Each cell carries one count or a tuple of counts (e.g. events, non-events). The hidden set starts with the
    cells holding any count in ``1 .. min_cell_count-1`` (and ``hidden``: cells withheld for another reason)
    and grows until, for every count, its sum over the hidden cells is 0 or at least the minimum, since the
    total minus the released cells is that sum; or until every cell is hidden (the total is checked
    elsewhere). ``strategy``: ``"smallest"`` (categories) adds the smallest other cell that is non-zero where
    the sum falls short; ``"adjacent"`` (ordered groups, in the mapping's order) grows each run of hidden cells
    into its neighbour with the smaller total, so every run passes on its own and may be released summed
    (see :func:`hidden_spans`). Hidden cells come back as ``None``.

    >>> suppress_cells_of_total({"a": 50, "b": 3, "c": 4, "d": 30}, DisclosurePolicy())
    {'a': 50, 'b': None, 'c': None, 'd': None}
    >>> suppress_cells_of_total({1: (0, 80), 2: (7, 90), 3: (40, 60)}, DisclosurePolicy(), "adjacent")
    {1: (0, 80), 2: None, 3: None}
    """
    if strategy not in ("smallest", "adjacent"):
        raise ValueError(f"unknown strategy {strategy!r} (expected 'smallest' or 'adjacent')")
    keys = list(cells)
    if not keys:
        return {}
    vals = np.array([np.atleast_1d(np.asarray(cells[k], dtype=np.int64)) for k in keys]).reshape(len(keys), -1)
    m = policy.min_cell_count
    extra = set(hidden)
    mask = np.array([k in extra for k in keys], dtype=bool) | ((vals > 0) & (vals < m)).any(axis=1)
    grow = _grow_adjacent if strategy == "adjacent" else _grow_smallest
    while mask.any() and not mask.all():
        nxt = grow(vals, mask, m)
        if nxt is None:
            break
        mask[nxt] = True
    return {k: None if h else cells[k] for k, h in zip(keys, mask, strict=True)}


def _short(sums: np.ndarray, m: int) -> np.ndarray:
    """Which counts of a hidden set fall short: a sum in 1..m-1 is the total minus the released cells."""
    return (sums > 0) & (sums < m)


def _grow_smallest(vals: np.ndarray, mask: np.ndarray, m: int) -> int | None:
    """The next cell to hide: the smallest released cell non-zero in a count that falls short."""
    short = _short(vals[mask].sum(axis=0), m)
    if not short.any():
        return None
    helps = ~mask & (vals[:, short] > 0).any(axis=1)
    if not helps.any():  # the total itself falls short: only hiding everything leaves nothing to subtract
        helps = ~mask
    idx = np.flatnonzero(helps)
    return int(idx[np.argmin(vals[idx].sum(axis=1))])


def _grow_adjacent(vals: np.ndarray, mask: np.ndarray, m: int) -> int | None:
    """The next cell to hide: a neighbour of the first run that falls short, preferring one that is non-zero in
    a count that falls short, then the smaller total."""
    for a, b in _runs(mask):
        short = _short(vals[a:b + 1].sum(axis=0), m)
        if not short.any():
            continue
        sides = [i for i in (a - 1, b + 1) if 0 <= i < len(mask)]
        return min(sides, key=lambda i: (not (vals[i, short] > 0).any(), int(vals[i].sum())))
    return None


def _runs(mask: Sequence[bool] | np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive hidden cells as (first, last) positions, inclusive."""
    runs: list[tuple[int, int]] = []
    for i, h in enumerate(mask):
        if not h:
            continue
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def hidden_spans(cells: Sequence[Sequence[int]] | np.ndarray, hidden: Sequence[bool] | np.ndarray,
                 policy: DisclosurePolicy) -> list[tuple[int, int]]:
    """The spans (first, last positions, inclusive) over which ordered hidden cells may be released summed.

    Each run of consecutive hidden cells is cut, left to right, into the shortest pieces in which every count
    is 0 or at least the minimum; a short tail joins the piece before it. (Two runs that
    :func:`suppress_cells_of_total` grew until they touched stay apart.) A run that cannot pass as a whole,
    which happens only when its sum is the site's short total, gives no span.

    >>> hidden_spans([(0, 80), (3, 70), (20, 60), (40, 30), (4, 50)], [False, True, True, True, True],
    ...              DisclosurePolicy())
    [(1, 2), (3, 4)]
    """
    if not len(hidden):
        return []
    vals = np.asarray(cells, dtype=np.int64).reshape(len(hidden), -1)
    m = policy.min_cell_count

    def short(a: int, b: int) -> bool:
        return bool(_short(vals[a:b + 1].sum(axis=0), m).any())

    spans = []
    for a, b in _runs(hidden):
        pieces: list[list[int]] = []
        start = a
        for i in range(a, b + 1):
            if not short(start, i):
                pieces.append([start, i])
                start = i + 1
        if start <= b:
            pieces.append([start, b])
        # a tail joins the piece before it until it passes (a piece with none of a count plus a few does not)
        while len(pieces) > 1 and short(*pieces[-1]):
            last = pieces.pop()
            pieces[-1][1] = last[1]
        spans += [(lo, hi) for lo, hi in pieces if not short(lo, hi)]
    return spans


def suppress_steps(counts: Sequence[int], policy: DisclosurePolicy) -> list[int | None]:
    """Counts of an attrition chain (each step keeps part of the one before), withheld where the difference from
    the step released before it, which is what that step removed, would be a small count.

    The first and last steps are anchors: the cohort's size and the study population's rows are released
    elsewhere, so each is shown whenever it passes on its own, and a step in between is released only when
    neither its gap to the previous released step nor its gap to the last step (when that is shown) is small.

    >>> suppress_steps([1000, 997, 990, 990, 985], DisclosurePolicy())
    [1000, None, None, None, 985]
    >>> suppress_steps([1000, 980, 980, 950], DisclosurePolicy())
    [1000, 980, 980, 950]
    """
    m = policy.min_cell_count

    def ok(v: int) -> bool:
        return not 0 < v < m

    c = [int(v) for v in counts]
    if len(c) < 2:
        return [v if ok(v) else None for v in c]
    out: list[int | None] = [None] * len(c)
    last, end = c[0], c[-1]
    for i, v in enumerate(c):
        anchor = i in (0, len(c) - 1)
        if ok(v) and (anchor or (ok(last - v) and (not ok(end) or ok(v - end)))):
            out[i] = v
            last = v
    return out


def suppress_part(part: int, total: int, policy: DisclosurePolicy) -> int | None:
    """A count of the rows of a released ``total`` that satisfy something: withheld when it, or the rows that do
    not, lie in ``1 .. min_cell_count-1`` (the total minus it would give those away): the two cells of
    :func:`suppress_cells_of_total`."""
    return suppress_cells_of_total({"part": int(part), "rest": int(total) - int(part)}, policy)["part"]


def round_up_significant(value: float, digits: int = 2) -> float:
    """``value`` (zero or positive) rounded up to ``digits`` significant digits: a bound at least as large, which
    says no more of a released maximum's row than that it lies below (a round maximum, 1800, stays itself).

    >>> round_up_significant(1730.0), round_up_significant(0.0123), round_up_significant(1800.0)
    (1800.0, 0.013, 1800.0)
    >>> round_up_significant(0.0)
    0.0
    """
    if not value >= 0 or not np.isfinite(value):
        raise ValueError(f"expected a finite value of zero or more, got {value!r}")
    if value == 0:
        return 0.0
    # decimal arithmetic on the shortest repr: float division would turn 0.29 into 28.999... and 29.000...01
    exact = Decimal(repr(float(value)))
    step = Decimal(1).scaleb(exact.adjusted() - digits + 1)
    return float(exact.quantize(step, rounding=ROUND_CEILING))


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
            f"refused: {CONCENTRATED} {what} at these coefficients (the weights concentrate on it)"
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
