"""Harrell's concordance counts for one site, vectorised (no Python loop per row).

Pairs follow lifelines' ``concordance_index`` (and scikit-survival's ``concordance_index_censored``): an event
at time t is comparable with every row whose time is later, and with rows censored at the same time (events tied
in time are not compared); a pair is concordant when the event has the higher risk score, tied (counted 0.5 by
the caller) when the scores differ by at most ``tol``. lifelines ties only exactly equal partial hazards; ``tol``
keeps rows with equal covariates tied whatever the rounding in xβ, at the price of also tying the rare distinct
scores closer than 1e-8 (such a pair then counts 0.5 instead of 0 or 1).
"""

from __future__ import annotations

import numpy as np

_BLOCK = 1024


def _count_below(values: np.ndarray, starts: np.ndarray, thresholds: np.ndarray, strict: bool) -> np.ndarray:
    """For each query q: #{j >= starts[q] : values[j] < thresholds[q]} (``<=`` when not strict)."""
    n = len(values)
    side = "left" if strict else "right"
    out = np.zeros(len(starts), dtype=np.int64)
    n_blocks = (n + _BLOCK - 1) // _BLOCK
    # sorted copies of every suffix that starts at a block boundary: O(n^2 / BLOCK) memory, fine for 1e5 rows
    suffixes = [np.sort(values[b * _BLOCK:]) for b in range(n_blocks + 1)]
    blk = starts // _BLOCK
    for b in np.unique(blk):
        q = np.flatnonzero(blk == b)
        nxt = suffixes[b + 1] if b + 1 <= n_blocks else np.empty(0)
        out[q] = np.searchsorted(nxt, thresholds[q], side=side)
        lo, hi = b * _BLOCK, min((b + 1) * _BLOCK, n)
        seg = values[lo:hi]
        in_suffix = np.arange(lo, hi)[None, :] >= starts[q][:, None]
        below = seg[None, :] < thresholds[q][:, None] if strict else seg[None, :] <= thresholds[q][:, None]
        out[q] += (below & in_suffix).sum(axis=1)
    return out


def concordance_counts(time: np.ndarray, event: np.ndarray, score: np.ndarray, tol: float = 1e-8) -> dict[str, int]:
    """Concordant, discordant and tied-risk pair counts (higher ``score`` = higher risk)."""
    # events before censorings at equal times, so an event's comparable rows form a suffix
    order = np.lexsort((~event, time))
    t, e, s = time[order], event[order], score[order]
    ev = np.flatnonzero(e)
    if ev.size == 0:
        return {"concordant": 0, "discordant": 0, "tied_risk": 0}
    # first row after the last event at the same time: group start + events in the group
    key_t = t[ev]
    last_event_pos = np.searchsorted(t, key_t, side="right")  # end of the time group
    group_start = np.searchsorted(t, key_t, side="left")
    events_cum = np.concatenate([[0], np.cumsum(e)])
    starts = group_start + (events_cum[last_event_pos] - events_cum[group_start])
    comparable = len(t) - starts
    less = _count_below(s, starts, s[ev] - tol, strict=True)
    less_eq = _count_below(s, starts, s[ev] + tol, strict=False)
    tied = less_eq - less
    return {
        "concordant": int(less.sum()),
        "discordant": int((comparable - less_eq).sum()),
        "tied_risk": int(tied.sum()),
    }
