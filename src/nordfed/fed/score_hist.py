"""Disclosure-safe score histograms and the site-side scoring partials behind evaluation and risk groups.

Histogram rule (what a node releases about predicted risks): scores are put on a shared grid of
``GRID_BINS`` equal bins of the logit between ``-GRID_LIMIT`` and ``+GRID_LIMIT`` (plus two open end bins).
Per class (events, non-events, and all rows) adjacent grid bins are merged left to right into *blocks* until a
block holds at least the node's minimum cell count; a short tail joins the last block. A block is released as
(lower edge of its first non-empty bin, upper edge of its last non-empty bin, count, mean logit), so every
released count and mean covers at least the minimum cell count and no single score is released. The exact
within-site Mann-Whitney U is released as one number over all of the site's pairs, and in a second round each
site's events / non-events are compared with the other sites' released blocks (sums over all its rows).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit
from scipy.stats import rankdata

from nordfed.fed.lasso_site import site_table
from nordfed.fed.protocol import SiteData, algorithm
from nordfed.privacy.disclosure import (
    DisclosurePolicy,
    check_counts,
    hidden_spans,
    require_min_rows,
    suppress_cells_of_total,
)

#: the last age group, always sent so every site has the same labels (the client drops it when empty everywhere)
UNKNOWN_AGE = "unknown"
GRID_BINS = 4000
GRID_LIMIT = 12.0
_LP = "__lp__"


def grid_edges() -> np.ndarray:
    """Edges of the shared logit grid; the end bins are closed at one bin width beyond the limits."""
    inner = np.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_BINS + 1)
    w = inner[1] - inner[0]
    return np.r_[inner[0] - w, inner, inner[-1] + w]


def bin_index(lp: np.ndarray) -> np.ndarray:
    """Grid bin of each logit (0 .. GRID_BINS + 1)."""
    return np.searchsorted(np.linspace(-GRID_LIMIT, GRID_LIMIT, GRID_BINS + 1), lp, side="right")


def merge_blocks(counts: np.ndarray, min_count: int) -> np.ndarray:
    """Blocks (lo_bin, hi_bin, count) of adjacent non-empty bins, each holding >= ``min_count`` rows."""
    nz = np.flatnonzero(counts)
    blocks: list[list[int]] = []
    cur: list[int] | None = None
    for b in nz:
        if cur is None:
            cur = [int(b), int(b), 0]
        cur[1] = int(b)
        cur[2] += int(counts[b])
        if cur[2] >= min_count:
            blocks.append(cur)
            cur = None
    if cur is not None:
        if blocks:
            blocks[-1][1], blocks[-1][2] = cur[1], blocks[-1][2] + cur[2]
        else:
            blocks.append(cur)
    return np.array(blocks, dtype=np.int64).reshape(-1, 3)


def release_blocks(idx: np.ndarray, lp: np.ndarray, min_count: int) -> np.ndarray:
    """What a site releases for one class: rows (lower edge, upper edge, count, mean logit) per block."""
    blocks = merge_blocks(np.bincount(idx, minlength=GRID_BINS + 2), min_count)
    e = grid_edges()
    sums = np.bincount(idx, weights=lp, minlength=GRID_BINS + 2)
    csum = np.r_[0.0, np.cumsum(sums)]
    means = (csum[blocks[:, 1] + 1] - csum[blocks[:, 0]]) / np.maximum(blocks[:, 2], 1)
    return np.column_stack([e[blocks[:, 0]], e[blocks[:, 1] + 1], blocks[:, 2], means]).reshape(-1, 4)


def pieces(blocks: np.ndarray) -> np.ndarray:
    """Within-block density used centrally: two uniform pieces split at the block's mean, weighted so the
    mean is kept. Returns rows (lower, upper, count)."""
    b = np.asarray(blocks, dtype=float).reshape(-1, 4)
    lo, hi, c = b[:, 0], b[:, 1], b[:, 2]
    mu = np.clip(b[:, 3], lo + 1e-9 * (hi - lo), hi - 1e-9 * (hi - lo))
    w_left = (hi - mu) / (hi - lo)
    left = np.column_stack([lo, mu, c * w_left])
    right = np.column_stack([mu, hi, c * (1.0 - w_left)])
    out = np.empty((2 * len(b), 3))
    out[0::2], out[1::2] = left, right
    return out


def prob_greater(a1: np.ndarray, b1: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """P(X > Y) for X ~ U[a1, b1], Y ~ U[a2, b2] (broadcasting)."""
    w2 = b2 - a2

    def integral_cdf(x: np.ndarray) -> np.ndarray:  # integral of F_Y from -inf to x
        inside = np.clip(x - a2, 0.0, w2)
        return inside**2 / (2 * w2) + np.maximum(x - b2, 0.0)

    return (integral_cdf(b1) - integral_cdf(a1)) / (b1 - a1)


def cross_u(pos_blocks: np.ndarray, neg_blocks: np.ndarray) -> float:
    """Expected Mann-Whitney U between one site's events and another's non-events from their blocks only."""
    pp, nn = pieces(pos_blocks), pieces(neg_blocks)
    if len(pp) == 0 or len(nn) == 0:
        return 0.0
    prob = prob_greater(pp[:, 0, None], pp[:, 1, None], nn[None, :, 0], nn[None, :, 1])
    return float(pp[:, 2] @ prob @ nn[:, 2])


def block_cdf(blocks: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Expected number of a block set's rows below ``x``."""
    pc = pieces(blocks)
    if len(pc) == 0:
        return np.zeros_like(np.asarray(x), dtype=float)
    knots = pc[:, :2].ravel()
    cum = np.cumsum(pc[:, 2])
    level = np.column_stack([np.r_[0.0, cum[:-1]], cum]).ravel()
    return np.interp(x, knots, level)


def pooled_density(block_sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Expected count per shared grid bin, all sites' blocks added: (edges, counts)."""
    e = grid_edges()
    dens = np.zeros(len(e) - 1)
    for blocks in block_sets:
        dens += np.diff(block_cdf(blocks, e))
    return e, dens


def average_precision(pos: np.ndarray, neg: np.ndarray) -> float:
    """Average precision (scikit-learn's step definition) from per-bin event / non-event counts."""
    tp = np.cumsum(pos[::-1])
    fp = np.cumsum(neg[::-1])
    keep = (pos[::-1] + neg[::-1]) > 0
    tp, fp = tp[keep], fp[keep]
    recall = tp / tp[-1]
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def pooled_quantiles(block_sets: list[np.ndarray], probs: np.ndarray) -> np.ndarray:
    """Quantiles of predicted risk from all sites' blocks (linear within grid bins), as probabilities."""
    edges, dens = pooled_density(block_sets)
    cum = np.r_[0.0, np.cumsum(dens)]
    return expit(np.interp(np.asarray(probs) * cum[-1], cum, edges))


def _scored(data: SiteData, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(logit, outcome) for the rows with the model covariates and the outcome complete."""
    t = site_table(data, {"dataset": params.get("dataset"), "covariates": [], "outcome": params["outcome"],
                          "derived": {_LP: params["model"]}, "offset": _LP, "where": params.get("where")})
    return t["offset"], t["y"]


@algorithm("nordfed.eval.scores", "1")
def scores(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Aggregates of the model's predictions at this site: n, events, Brier sum, exact U, score blocks."""
    lp, y = _scored(data, params)
    pol: DisclosurePolicy = data.policy
    n, events = len(y), int(y.sum())
    require_min_rows(n, pol, "rows")
    check_counts([events, n - events], pol, "outcome class count(s)")
    p = expit(lp)
    ranks = rankdata(lp)
    u = float(ranks[y == 1].sum() - events * (events + 1) / 2) if 0 < events < n else 0.0
    idx = bin_index(lp)
    m = pol.min_cell_count
    masks = {"pos": y == 1, "neg": y == 0, "all": np.ones(n, bool)}
    blocks = {k: release_blocks(idx[mask], lp[mask], m) for k, mask in masks.items()}
    return {"n": n, "events": events, "brier": float(np.sum((p - y) ** 2)), "u": u, "blocks": blocks,
            "sum_p": float(p.sum())}


@algorithm("nordfed.eval.groups", "1")
def groups(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Per risk group (cut-offs on predicted probability) n, events and expected events; small cells withheld.

    The groups partition the site's rows, whose total n and events the site releases anyway, so withheld cells
    get complementary suppression (:func:`~nordfed.privacy.disclosure.suppress_cells_of_total`): first persons
    per group, then events per group. A run of neighbouring groups whose events are withheld is released as one
    ``spans`` entry ``{"groups": [first, last], "n", "events", "expected"}`` (positions, inclusive): its sums
    are implied by the totals anyway, and each passes the minimum cell count.
    Optional ``recalibration`` (a, b) adds the sum of |p - expit(a + b*logit)| (for ICI / E-avg).
    Optional ``by`` {name: column} adds the same table by the column's values (e.g. sex, age group; age groups
    are ordered and get spans, other columns are categories and do not); a value held by fewer rows than the
    minimum cell count is not released as a label (``withheld`` says some were), and its rows count as a hidden
    cell of the table.
    With ``hidden_only`` only ``{"hidden": [...]}`` comes back: whether each group holds a count below the
    minimum itself, and no count (the client merges such groups before asking for their counts).
    """
    t = site_table(data, {"dataset": params.get("dataset"), "covariates": [], "outcome": params["outcome"],
                          "derived": {_LP: params["model"]}, "offset": _LP, "where": params.get("where"),
                          "keep": list((params.get("by") or {}).values())})
    lp, y = t["offset"], t["y"]
    require_min_rows(len(y), data.policy, "rows")
    p = expit(lp)
    g = np.searchsorted(np.asarray(params["cutoffs"], dtype=float), p, side="right")
    k = len(params["cutoffs"]) + 1
    if params.get("hidden_only"):
        n, ev = np.bincount(g, minlength=k), np.bincount(g, weights=y, minlength=k)
        cells = np.column_stack([n, ev, n - ev])
        return {"hidden": ((cells > 0) & (cells < data.policy.min_cell_count)).any(axis=1).tolist()}
    rows, spans = _table(g, y, p, k, data.policy, "adjacent")
    out: dict[str, Any] = {"groups": rows, "spans": spans}
    if params.get("recalibration") is not None:
        a, b = params["recalibration"]
        out["abs_diff"] = float(np.sum(np.abs(p - expit(a + b * lp))))
        out["n"] = len(y)
    for name, col in (params.get("by") or {}).items():
        codes, labels = _group_codes(t["keep"][col], name, params)
        withheld = False
        if name != "age_group":  # age_group labels are the researcher's cuts, never data values
            codes, kept = _released_levels(codes, labels, data.policy)
            withheld, labels = len(kept) < len(labels), kept
        ordered = name == "age_group"
        rows, spans = _table(codes, y, p, len(labels), data.policy, "adjacent" if ordered else "smallest")
        out[name] = {"labels": labels, "table": rows, "withheld": withheld, **({"spans": spans} if ordered else {})}
    return out


def _group_codes(values: np.ndarray, name: str, params: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    if name == "age_group":
        cuts = [float(c) for c in params.get("age_cuts", [50, 60, 70, 80])]
        labels = [f"<{cuts[0]:g}", *(f"{a:g}-{b - 1:g}" for a, b in itertools.pairwise(cuts)),
                  f"{cuts[-1]:g}+", UNKNOWN_AGE]
        ages = pd.to_numeric(pd.Series(values), errors="coerce")
        if (ages.isna() & pd.Series(values).notna()).any():  # numpy's own error would quote a value
            raise ValueError("the age column for age_group is not numeric")
        a = ages.to_numpy(dtype=float)
        # a missing age sorts past every cut: it would be counted as the oldest group
        return np.where(np.isnan(a), len(cuts) + 1, np.searchsorted(cuts, a, side="right")), labels
    labels = sorted({str(v) for v in values})
    lookup = {v: i for i, v in enumerate(labels)}
    return np.array([lookup[str(v)] for v in values], dtype=int), labels


def _released_levels(codes: np.ndarray, labels: list[str], pol: DisclosurePolicy) -> tuple[np.ndarray, list[str]]:
    """Drop the levels held by 1..min_cell_count-1 rows: their label is then a value of fewer rows than the
    minimum (a birth date, a name), not a category. Their rows leave the ``by`` table, which says so with
    ``withheld``; levels with enough rows keep their label even when a count in their cell is suppressed."""
    n = np.bincount(codes, minlength=len(labels))
    keep = (n == 0) | (n >= pol.min_cell_count)
    if keep.all():
        return codes, labels
    new = np.cumsum(keep) - 1
    rows = keep[codes]
    return np.where(rows, new[codes], -1), [lab for lab, k in zip(labels, keep, strict=True) if k]


def _table(g: np.ndarray, y: np.ndarray, p: np.ndarray, k: int, pol: DisclosurePolicy,
           strategy: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows (n, events, expected) of groups ``0 .. k-1`` and, for ordered groups, the spans of merged events.

    Rows with ``g == -1`` (withheld labels) form one more cell that is always hidden, so the released cells
    never differ from the site's total by a small count.
    """
    codes = np.where(g < 0, k, g)
    n = np.bincount(codes, minlength=k + 1)
    ev = np.bincount(codes, weights=y, minlength=k + 1).astype(int)
    ex = np.bincount(codes, weights=p, minlength=k + 1)
    rest = [k] if n[k] else []
    persons = suppress_cells_of_total({i: int(n[i]) for i in range(k + 1)}, pol, strategy, hidden=rest)
    no_n = [i for i, v in persons.items() if v is None]
    events = suppress_cells_of_total({i: (int(ev[i]), int(n[i] - ev[i])) for i in range(k + 1)}, pol, strategy,
                                     hidden=no_n)
    rows = [{"n": None if persons[i] is None else int(n[i]), "events": None if events[i] is None else int(ev[i]),
             "expected": None if events[i] is None else float(ex[i])} for i in range(k)]
    spans = []
    if strategy == "adjacent":
        # a span's n less its groups' released n is its withheld persons: a count it must pass on too
        counts = np.column_stack([ev, n - ev, np.where([persons[i] is None for i in range(k + 1)], n, 0)])[:k]
        for a, b in hidden_spans(counts, [events[i] is None for i in range(k)], pol):
            spans.append({"groups": [a, b], "n": int(n[a:b + 1].sum()), "events": int(ev[a:b + 1].sum()),
                          "expected": float(ex[a:b + 1].sum())})
    return rows, spans


@algorithm("nordfed.eval.cross_u", "1")
def cross_u_partial(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Between-site Mann-Whitney U against every other site's released blocks, summed over this site's rows.

    For each other site b: ``pos_vs`` = sum over own events of b's non-events below, ``neg_vs`` = sum over
    own non-events of b's events above (each an aggregate over all of this site's events / non-events).
    """
    lp, y = _scored(data, params)
    require_min_rows(len(y), data.policy, "rows")
    out = {}
    for other, blocks in params["blocks"].items():
        if other == data.site:
            continue
        pos_vs = float(block_cdf(np.asarray(blocks["neg"]), lp[y == 1]).sum())
        total_pos = float(np.asarray(blocks["pos"]).reshape(-1, 4)[:, 2].sum())
        neg_vs = float((total_pos - block_cdf(np.asarray(blocks["pos"]), lp[y == 0])).sum())
        out[other] = {"pos_vs": pos_vs, "neg_vs": neg_vs}
    return {"cross": out}
