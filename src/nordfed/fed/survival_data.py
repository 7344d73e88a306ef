"""Site-side survival data and the disclosure rule for per-time survival aggregates.

Exact federated Kaplan-Meier curves and Cox models need, from every site, aggregates *per distinct event
time*: how many events and censorings happened at each time, and (Cox) sums over the site's risk set at each
pooled event time. These per-time counts are mostly 1 or 2, which conflicts with a minimum cell count. The
rule every survival partial applies:

1. Always: the site's analysed rows and its number of events are each at least the minimum cell count
   (``require_min_rows``); models also pass DataSHIELD's ``nfilter.glm`` (``require_params_ok``).
2. Default policy (``exact_event_times=False``): every released per-time count (events, censorings, and the
   number at risk the central half derives from them) must be zero or at least the minimum cell count.
   A site can reach that by coarsening its times, ``time_grid=g`` rounds every time *up* to a multiple of
   ``g`` (e.g. 30 days), so that events pool into larger cells; otherwise the partial refuses and names
   the rule. Rounding works when follow-up ends administratively (a large last cell); a tail that thins out
   one subject at a time still refuses, as it should. Risk-set sums for a pooled Cox model are never
   released under this policy, because differencing two consecutive risk sets reveals one person's
   covariates; Cox stratified by site releases only the site's partial-likelihood value, gradient and
   information and needs no exception.
3. A site whose policy sets ``exact_event_times=True`` releases exact per-time counts and risk-set sums.
   This is the registry practice for survival tables (a bare event time carries no attributes) and is
   the site's explicit choice, recorded in its policy and therefore on the ledger.
4. A site whose policy sets ``event_time_noise=sd`` adds Gaussian noise with that standard deviation to
   every time (kept ≥ 0, drawn from the operating system's entropy so the researcher cannot undo it) before
   it counts, and then releases its Kaplan-Meier counts on the noised times: no released time is a real
   one. The pooled curve is then approximate; Cox risk-set sums are never released on this ground.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nordfed.privacy.disclosure import (
    DisclosureError,
    DisclosurePolicy,
    check_counts,
    keyed_normals,
    require_min_rows,
)


@dataclass(frozen=True)
class SurvivalData:
    """A site's complete-case survival rows, sorted by time."""

    time: np.ndarray
    event: np.ndarray  # bool
    X: np.ndarray  # (n, p) float, may have p = 0
    group: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.time.shape[0])


def numeric_columns(frame: pd.DataFrame, columns: Sequence[str], site: str) -> pd.DataFrame:
    """The named columns as float, complete cases only; a missing or non-numeric column is an error."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"site {site}: missing column(s) {', '.join(missing)}")
    out = pd.DataFrame(index=frame.index)
    for col in columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            # name the column only: the message reaches the researcher, a value would be one row's data
            raise ValueError(f"site {site}: column {col!r} has non-numeric values")
        out[col] = values.astype(float)
    return out.dropna()


def survival_data(
    frame: pd.DataFrame,
    site: str,
    duration: str,
    event: str,
    covariates: Sequence[str] = (),
    group: str | None = None,
) -> SurvivalData:
    """Extract sorted survival rows; group values are kept as strings (they become released labels)."""
    cols = [duration, event, *covariates]
    num = numeric_columns(frame, cols, site)
    grp = None
    if group is not None:
        if group not in frame.columns:
            raise ValueError(f"site {site}: missing column {group}")
        keep = frame.loc[num.index, group].notna()
        num = num[keep]
        grp = frame.loc[num.index, group].astype(str).to_numpy()
    t = num[duration].to_numpy()
    if (t < 0).any():
        raise ValueError(f"site {site}: column {duration!r} has negative durations")
    e = num[event].to_numpy()
    if not np.isin(e, (0.0, 1.0)).all():
        raise ValueError(f"site {site}: column {event!r} must be 0/1 (or false/true)")
    order = np.argsort(t, kind="stable")
    X = num[list(covariates)].to_numpy(dtype=float)[order] if covariates else np.zeros((len(t), 0))
    return SurvivalData(time=t[order], event=e[order].astype(bool), X=X, group=None if grp is None else grp[order])


def round_times(time: np.ndarray, grid: float | None) -> np.ndarray:
    """Round times up to a multiple of ``grid`` (coarsening for disclosure); ``None`` keeps them exact."""
    if not grid:
        return time
    if grid <= 0:
        raise ValueError("time_grid must be positive")
    return np.ceil(time / grid) * grid


def require_survival_totals(data: SurvivalData, policy: DisclosurePolicy, what: str = "rows") -> None:
    """Rule 1: enough rows and enough events at this site."""
    require_min_rows(data.n, policy, what)
    require_min_rows(int(data.event.sum()), policy, f"events in {what}")


def count_table(time: np.ndarray, event: np.ndarray) -> dict[str, np.ndarray]:
    """Distinct times with the number of events and censorings at each (inputs sorted by time)."""
    times, idx = np.unique(time, return_inverse=True)
    d = np.bincount(idx, weights=event.astype(float), minlength=len(times))
    total = np.bincount(idx, minlength=len(times)).astype(float)
    return {"times": times, "events": d, "censored": total - d}


def add_time_noise(time: np.ndarray, policy: DisclosurePolicy) -> np.ndarray:
    """Rule 4: the site's own noise on released times, keyed by the node's secret and the time itself (never a
    researcher's seed): a request repeated 200 times gets the same noise each time, so averaging the answers
    does not recover the times (with fresh noise per request it gave one patient's time to ±0.3)."""
    if not policy.event_time_noise:
        return time
    noisy = time + policy.event_time_noise * keyed_normals(policy, "event-time-noise", time)
    return np.maximum(noisy, 0.0)


def check_count_table(table: dict[str, np.ndarray], n: int, policy: DisclosurePolicy, what: str) -> None:
    """Rules 2-4 for a per-time count table about to be released."""
    if policy.exact_event_times or policy.event_time_noise:
        return
    at_risk = n - np.concatenate([[0.0], np.cumsum(table["events"] + table["censored"])[:-1]])
    try:
        check_counts(table["events"], policy, f"per-time event counts in {what}")
        check_counts(table["censored"], policy, f"per-time censoring counts in {what}")
        check_counts(at_risk, policy, f"per-time numbers at risk in {what}")
    except DisclosureError as exc:
        raise DisclosureError(
            f"{exc}; coarsen times with time_grid, or the site must allow exact_event_times in its policy"
        ) from None


def require_exact_event_times(policy: DisclosurePolicy, what: str) -> None:
    if not policy.exact_event_times:
        raise DisclosureError(
            f"refused: {what} releases exact per-time risk-set aggregates, which this node's policy does not "
            "allow (exact_event_times is off); fit the model stratified by site instead"
        )


def float_list(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=float)]
