"""Exact federated Kaplan-Meier curves with Greenwood confidence intervals and the log-rank test.

Each site releases, per group, its distinct times with the number of events and censorings at each and its
row count. Numbers at risk are sums over sites, so the central half rebuilds the pooled table exactly and
computes the curve as lifelines' ``KaplanMeierFitter`` does: Greenwood variance, log(-log) confidence
interval (alpha 0.05), and the (multivariate) log-rank test as ``lifelines.statistics``. Which per-time
counts a site may release is decided by :mod:`nordfed.fed.survival_data` (module docstring): exact counts
need ``exact_event_times`` in the site's policy; otherwise every count must reach the minimum cell count,
which ``time_grid`` (times rounded up to a multiple of the grid) can achieve at the price of exactness.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from nordfed.fed.protocol import Federation, SiteData, algorithm
from nordfed.fed.survival_data import (
    add_time_noise,
    check_count_table,
    count_table,
    require_survival_totals,
    round_times,
    survival_data,
)

ALL = "all"


# --------------------------------------------------------------------------------------------- pure math
def merge_tables(tables: list[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Sum per-time count tables (site or group) into one table on the union of their times."""
    if not tables:
        return {"times": np.empty(0), "events": np.empty(0), "censored": np.empty(0), "n": 0}
    times, idx = np.unique(np.concatenate([np.asarray(t["times"], float) for t in tables]), return_inverse=True)
    ev = np.concatenate([np.asarray(t["events"], float) for t in tables])
    ce = np.concatenate([np.asarray(t["censored"], float) for t in tables])
    return {
        "times": times,
        "events": np.bincount(idx, weights=ev, minlength=len(times)),
        "censored": np.bincount(idx, weights=ce, minlength=len(times)),
        "n": int(sum(int(t["n"]) for t in tables)),
    }


def at_risk(table: Mapping[str, Any], times: np.ndarray | None = None) -> np.ndarray:
    """Number at risk just before each of ``times`` (default: the table's own times)."""
    t = np.asarray(table["times"], float)
    removed = np.concatenate([[0.0], np.cumsum(np.asarray(table["events"]) + np.asarray(table["censored"]))])
    at = t if times is None else times
    return table["n"] - removed[np.searchsorted(t, at, side="left")]


@dataclass
class KMCurve:
    """A Kaplan-Meier curve at its distinct event times."""

    times: list[float]
    survival: list[float]
    ci_lower: list[float]
    ci_upper: list[float]
    at_risk: list[float]
    events: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def km_curve(table: Mapping[str, Any], alpha: float = 0.05) -> KMCurve:
    """Kaplan-Meier estimate with lifelines' exponential Greenwood ("log(-log)") interval."""
    n = at_risk(table)
    d = np.asarray(table["events"], float)
    m = d > 0
    t, n, d = np.asarray(table["times"], float)[m], n[m], d[m]
    with np.errstate(divide="ignore", invalid="ignore"):
        surv = np.cumprod(1 - d / n)
        terms = d / (n * (n - d))
        greenwood = np.cumsum(np.where(np.isinf(terms), 0.0, terms))
        z = stats.norm.ppf(1 - alpha / 2)
        v = np.log(surv)
        lower = np.exp(-np.exp(np.log(-v) - z * np.sqrt(greenwood) / v))
        upper = np.exp(-np.exp(np.log(-v) + z * np.sqrt(greenwood) / v))
    lower, upper = np.nan_to_num(lower, nan=1.0), np.nan_to_num(upper, nan=1.0)
    return KMCurve(*(list(map(float, a)) for a in (t, surv, lower, upper, n, d)))


def logrank(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """(Multivariate) log-rank test between groups, as ``lifelines.statistics.multivariate_logrank_test``."""
    labels = sorted(tables)
    pooled = merge_tables(list(tables.values()))
    m = pooled["events"] > 0
    times, d = pooled["times"][m], pooled["events"][m]
    n = at_risk(pooled, times)
    n_g = np.column_stack([at_risk(tables[g], times) for g in labels])
    d_g = np.column_stack([
        np.bincount(np.searchsorted(times, np.asarray(tables[g]["times"])[np.asarray(tables[g]["events"]) > 0]),
                    weights=np.asarray(tables[g]["events"], float)[np.asarray(tables[g]["events"]) > 0],
                    minlength=len(times))
        for g in labels
    ])
    expected = n_g * (d / n)[:, None]
    obs_minus_exp = (d_g - expected).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(n > 1, d * (n - d) / (n - 1), 0.0) / n
    frac = n_g / n[:, None]
    V = np.einsum("t,tg,gh->gh", factor * n, frac, np.eye(len(labels))) - np.einsum("t,tg,th->gh", factor * n, frac,
                                                                                       frac)
    k = len(labels) - 1
    chi2 = float(obs_minus_exp[:k] @ np.linalg.solve(V[:k, :k], obs_minus_exp[:k]))
    return {"chi2": chi2, "df": k, "p_value": float(stats.chi2.sf(chi2, k)),
            "observed": dict(zip(labels, d_g.sum(axis=0).tolist(), strict=True)),
            "expected": dict(zip(labels, expected.sum(axis=0).tolist(), strict=True))}


# --------------------------------------------------------------------------------------------- partial
@algorithm("nordfed.km.counts")
def km_counts(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Per-time event and censoring counts of this site, per group (``"all"`` without a group column)."""
    frame = data.frame(params.get("dataset"))
    sd = survival_data(frame, data.site, params["duration"], params["event"], group=params.get("group"))
    time = add_time_noise(round_times(sd.time, params.get("time_grid")), data.policy)
    require_survival_totals(sd, data.policy)
    labels = np.full(sd.n, ALL) if sd.group is None else sd.group
    out: dict[str, Any] = {}
    for g in np.unique(labels):
        m = labels == g
        # a refusal names the group only when at least min_cell_count rows share its label (a label held by
        # fewer rows is one of their values, e.g. a birth date)
        named = int(m.sum()) >= data.policy.min_cell_count
        what = "rows" if sd.group is None else f"group {g}" if named else "rows of a group"
        require_survival_totals(type(sd)(time[m], sd.event[m], sd.X[m]), data.policy, what)
        table = count_table(time[m], sd.event[m])
        check_count_table(table, int(m.sum()), data.policy, what)
        out[str(g)] = {**table, "n": int(m.sum())}
    return {"groups": out}


# --------------------------------------------------------------------------------------------- central
@dataclass
class KMResult(KMCurve):
    """Pooled curve plus per-site and per-group curves and, with groups, the log-rank test."""

    per_site: dict[str, KMCurve] = field(default_factory=dict)
    by_group: dict[str, KMCurve] = field(default_factory=dict)
    logrank: dict[str, Any] | None = None
    n: int = 0
    time_grid: float | None = None


def fit_km(
    fed: Federation,
    *,
    duration: str,
    event: str,
    group: str | None = None,
    dataset: Any = None,
    time_grid: float | None = None,
    alpha: float = 0.05,
) -> KMResult:
    """Kaplan-Meier on the pooled rows of all sites; exact unless ``time_grid`` coarsens the times."""
    parts = fed.run("nordfed.km.counts", {"duration": duration, "event": event, "group": group,
                                          "dataset": dataset, "time_grid": time_grid})
    site_tables = {s: merge_tables(list(r["groups"].values())) for s, r in parts.items()}
    labels = sorted({g for r in parts.values() for g in r["groups"]})
    group_tables = {g: merge_tables([r["groups"][g] for r in parts.values() if g in r["groups"]]) for g in labels}
    pooled = merge_tables(list(site_tables.values()))
    curve = km_curve(pooled, alpha)
    return KMResult(
        **asdict(curve),
        per_site={s: km_curve(t, alpha) for s, t in site_tables.items()},
        by_group={g: km_curve(t, alpha) for g, t in group_tables.items()} if group else {},
        logrank=logrank(group_tables) if group and len(labels) > 1 else None,
        n=pooled["n"],
        time_grid=time_grid,
    )
