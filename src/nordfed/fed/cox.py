"""Exact federated Cox proportional hazards (Efron or Breslow ties), fitted by Newton-Raphson.

The pooled partial likelihood depends on the data only through, for every distinct pooled event time t,
the risk-set sums S0 = Σ w, S1 = Σ w x, S2 = Σ w x xᵀ (w = exp(xβ), over rows with time ≥ t), the same
sums over the events tied at t (E0, E1, E2), the number of tied events d, and Σ x over all events. Every
one is a sum over rows and therefore over sites, so the central half adds the sites' arrays and gets the
pooled likelihood, gradient and information exactly. Rounds: one to collect event times, one per
Newton iteration, one for concordance.

``strata_by_site=True`` fits a model with a separate baseline hazard per site: each site then releases only
its own log-likelihood, gradient and information (p + p² numbers), which every policy allows. The
unstratified model releases per-time risk-set sums and needs ``exact_event_times`` in each site's policy
(see :mod:`nordfed.fed.survival_data` for the disclosure rule).

Concordance is Harrell's C over pairs *within* a site, computed exactly at each site (sites release three
pair counts) and pooled as Σ concordant / Σ comparable. Pairs across sites are deliberately not compared: that
would need one site's row-level risk scores and event times at another (disclosure control). The pair rules are
those of lifelines' ``concordance_index``, so with one site the value equals lifelines' ``concordance_index_``
on the pooled rows, and with ``strata_by_site`` it equals lifelines' stratified value (strata = site); with
several sites and no strata it differs from a pooled fit, and :func:`concordance_note` says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from nordfed.fed.cox_concordance import concordance_counts
from nordfed.fed.inference import wald_table
from nordfed.fed.protocol import AlgorithmError, Federation, SiteData, algorithm
from nordfed.fed.survival_data import (
    SurvivalData,
    require_exact_event_times,
    require_survival_totals,
    survival_data,
)
from nordfed.privacy.disclosure import CONCENTRATED, require_params_ok, require_spread_weights

TIES = ("efron", "breslow")
ALL_PAIRS = "all pairs"
WITHIN_SITE = "within-site pairs"


# --------------------------------------------------------------------------------------------- pure math
def _sums_by(index: np.ndarray, w: np.ndarray, X: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Σ w, Σ w x, Σ w x xᵀ grouped by ``index`` (0..size-1), one bincount per entry: O(n p²), no row loop."""
    p = X.shape[1]
    s0 = np.bincount(index, weights=w, minlength=size)
    s1 = np.empty((size, p))
    s2 = np.empty((size, p, p))
    for a in range(p):
        wa = w * X[:, a]
        s1[:, a] = np.bincount(index, weights=wa, minlength=size)
        for b in range(a + 1):
            s2[:, a, b] = s2[:, b, a] = np.bincount(index, weights=wa * X[:, b], minlength=size)
    return s0, s1, s2


def risk_set_sums(data: SurvivalData, beta: np.ndarray, center: np.ndarray, grid: np.ndarray) -> dict[str, Any]:
    """Per-grid-time risk-set and tied-event sums of one site (rows sorted by time)."""
    T = len(grid)
    X = data.X - center
    w = np.exp(X @ beta)
    # block k holds rows with grid[k] <= time < grid[k+1]; rows before the first grid time are never at risk
    block = np.searchsorted(grid, data.time, side="right") - 1
    keep = block >= 0
    b0, b1, b2 = _sums_by(block[keep], w[keep], X[keep], T)
    S0, S1, S2 = (np.cumsum(a[::-1], axis=0)[::-1] for a in (b0, b1, b2))
    ev = data.event
    if not np.array_equal(grid[block[ev]], data.time[ev]):
        raise ValueError("the time grid does not contain every event time of this site")
    E0, E1, E2 = _sums_by(block[ev], w[ev], X[ev], T)
    d = np.bincount(block[ev], minlength=T).astype(float)
    return {"S0": S0, "S1": S1, "S2": S2, "E0": E0, "E1": E1, "E2": E2, "d": d, "xsum": X[ev].sum(axis=0)}


def expected_events(data: SurvivalData, beta: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Each row's expected number of events at ``beta``, μ = w·Λ₀(t), with Breslow's baseline from this site's rows.

    The partial-likelihood gradient is Σ_events x − Σ μ x and the information's first term Σ μ x xᵀ (Breslow;
    Efron differs only at tied events), so μ is the Cox model's counterpart of a Poisson GLM's weight: each row's
    share of the sums a Cox partial releases. μ sums to the number of events.
    """
    w = np.exp((data.X - center) @ beta)
    times, idx = np.unique(data.time, return_inverse=True)
    d = np.bincount(idx, weights=data.event.astype(float), minlength=len(times))
    at_risk = np.cumsum(np.bincount(idx, weights=w, minlength=len(times))[::-1])[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        hazard = np.where(d > 0, d / at_risk, 0.0)
    return w * np.cumsum(hazard)[idx]


def partial_likelihood(agg: dict[str, Any], beta: np.ndarray, ties: str) -> tuple[float, np.ndarray, np.ndarray]:
    """Log partial likelihood, gradient and observed information from (summed) risk-set sums."""
    d, S0, S1, S2 = agg["d"], agg["S0"], agg["S1"], agg["S2"]
    loglik = float(agg["xsum"] @ beta)
    grad = np.array(agg["xsum"], dtype=float)
    info = np.zeros((len(beta), len(beta)))
    if ties == "breslow":
        m = d > 0
        a = S1[m] / S0[m, None]
        loglik -= float((d[m] * np.log(S0[m])).sum())
        grad -= (d[m, None] * a).sum(axis=0)
        info += np.einsum("t,tij->ij", d[m], S2[m] / S0[m, None, None]) - (a.T * d[m]) @ a
        return loglik, grad, info
    # Efron: the l-th of d tied events sees the risk set minus l/d of the tied events
    for ll in range(int(d.max(initial=0))):
        m = d > ll
        f = ll / d[m]
        den = S0[m] - f * agg["E0"][m]
        a = (S1[m] - f[:, None] * agg["E1"][m]) / den[:, None]
        loglik -= float(np.log(den).sum())
        grad -= a.sum(axis=0)
        info += ((S2[m] - f[:, None, None] * agg["E2"][m]) / den[:, None, None]).sum(axis=0) - a.T @ a
    return loglik, grad, info


def newton(evaluate: Any, p: int, max_iter: int = 50, tol: float = 1e-10) -> tuple[np.ndarray, float, np.ndarray, int]:
    """Newton-Raphson with step halving; ``evaluate(beta) -> (loglik, grad, info)``.

    A trial point a site refuses because one row would dominate its sums (an overshooting step) is halved like one
    that lowers the likelihood; the last refusal is raised when no halving helps.
    """
    beta = np.zeros(p)
    ll, grad, info = evaluate(beta)
    for it in range(1, max_iter + 1):
        step = np.linalg.solve(info, grad)
        refusal: AlgorithmError | None = None
        for _ in range(30):
            try:
                ll_new, grad_new, info_new = evaluate(beta + step)
            except AlgorithmError as exc:
                if not (exc.refused and CONCENTRATED in exc.message):
                    raise
                refusal, ll_new = exc, -np.inf
            if np.isfinite(ll_new) and ll_new >= ll - 1e-12 * max(1.0, abs(ll)):
                break
            step = step / 2
        if not np.isfinite(ll_new) and refusal is not None:
            raise refusal
        beta, ll, grad, info = beta + step, ll_new, grad_new, info_new
        if np.max(np.abs(step)) < tol:
            return beta, ll, info, it
    raise RuntimeError(f"Cox model did not converge in {max_iter} iterations")


# --------------------------------------------------------------------------------------------- partials
def _site_data(data: SiteData, params: dict[str, Any]) -> SurvivalData:
    frame = data.frame(params.get("dataset"))
    sd = survival_data(frame, data.site, params["duration"], params["event"], params["covariates"])
    require_survival_totals(sd, data.policy)
    require_params_ok(len(params["covariates"]), sd.n, data.policy)
    return sd


def _require_spread_risk(sd: SurvivalData, beta: np.ndarray, center: np.ndarray) -> None:
    """Refuse coefficients at which one row carries most of the released gradient and information.

    A steep researcher-chosen β gives one row nearly all the risk weight, and the gradient is then the event
    sum minus the number of events times that row's covariates. The unit is each row's expected events μ over
    the whole site: per risk set, the last ones hold a row or two at any β, so every fit would be refused; the
    raw weights exp(xβ) over all rows miss a row that shares the top weight with rows that left early and then
    has the late risk sets to itself.
    """
    require_spread_weights(expected_events(sd, beta, center), "the partial-likelihood gradient and information")


@algorithm("nordfed.cox.summary")
def cox_summary(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Row and event totals, covariate sums (for centering) and, unless stratified, the distinct event times."""
    sd = _site_data(data, params)
    out: dict[str, Any] = {"n": sd.n, "events": int(sd.event.sum()), "xsum": sd.X.sum(axis=0)}
    if not params.get("strata_by_site"):
        require_exact_event_times(data.policy, "an unstratified Cox model")
        out["event_times"] = np.unique(sd.time[sd.event])
    return out


@algorithm("nordfed.cox.risk_sets")
def cox_risk_sets(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Risk-set sums on the pooled event-time grid at the given coefficients."""
    require_exact_event_times(data.policy, "an unstratified Cox model")
    sd = _site_data(data, params)
    beta, center = np.asarray(params["beta"], float), np.asarray(params["center"], float)
    # the site's own events and risk sets stand in for the pooled ones, which it does not know
    _require_spread_risk(sd, beta, center)
    return risk_set_sums(sd, beta, center, np.asarray(params["grid"], float))


@algorithm("nordfed.cox.stratum")
def cox_stratum(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """This site's own partial likelihood (its own stratum): value, gradient, information."""
    sd = _site_data(data, params)
    beta, center = np.asarray(params["beta"], float), np.asarray(params["center"], float)
    _require_spread_risk(sd, beta, center)
    grid = np.unique(sd.time[sd.event])
    agg = risk_set_sums(sd, beta, center, grid)
    ll, grad, info = partial_likelihood(agg, beta, params["ties"])
    return {"loglik": ll, "grad": grad, "info": info}


@algorithm("nordfed.cox.concordance")
def cox_concordance(data: SiteData, params: dict[str, Any]) -> dict[str, int]:
    """Harrell's pair counts within this site for the risk score xβ."""
    sd = _site_data(data, params)
    return concordance_counts(sd.time, sd.event, sd.X @ np.asarray(params["beta"], float))


# --------------------------------------------------------------------------------------------- central
@dataclass
class CoxResult:
    """A fitted federated Cox model (lifelines-like names)."""

    covariates: list[str]
    coefficients: dict[str, float]
    standard_errors: dict[str, float]
    ci_lower: dict[str, float]
    ci_upper: dict[str, float]
    z: dict[str, float]
    p_values: dict[str, float]
    log_likelihood: float
    iterations: int
    concordance: float
    n: int
    events: int
    ties: str
    strata_by_site: bool
    variance: list[list[float]]
    concordance_scope: str = ALL_PAIRS
    concordance_pairs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def hazard_ratios(self) -> dict[str, float]:
        return {k: float(np.exp(v)) for k, v in self.coefficients.items()}


def fit_cox(
    fed: Federation,
    *,
    duration: str,
    event: str,
    covariates: Sequence[str],
    ties: str = "efron",
    strata_by_site: bool = False,
    dataset: Any = None,
    alpha: float = 0.05,
    max_iter: int = 50,
) -> CoxResult:
    """Fit a Cox PH model on the pooled rows of all sites without moving them."""
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}, not {ties!r}")
    covariates = list(covariates)
    if not covariates:
        raise ValueError("a Cox model needs at least one covariate")
    base = {"duration": duration, "event": event, "covariates": covariates, "dataset": dataset,
            "strata_by_site": strata_by_site, "ties": ties}
    summaries = fed.run("nordfed.cox.summary", base)
    n = sum(int(s["n"]) for s in summaries.values())
    events = sum(int(s["events"]) for s in summaries.values())
    if events == 0:
        raise AlgorithmError("all", "no events at any site")
    center = sum(np.asarray(s["xsum"], float) for s in summaries.values()) / n
    p = len(covariates)

    if strata_by_site:
        # Newton needs only the sums over sites, so they come masked (secure aggregation)
        def evaluate(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            sums = fed.aggregate("nordfed.cox.stratum", {**base, "beta": beta, "center": center})
            return float(sums["loglik"]), np.asarray(sums["grad"]), np.asarray(sums["info"])
    else:
        grid = np.unique(np.concatenate([np.asarray(s["event_times"], float) for s in summaries.values()]))

        def evaluate(beta: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
            sums = fed.aggregate("nordfed.cox.risk_sets", {**base, "beta": beta, "center": center, "grid": grid})
            return partial_likelihood({k: np.asarray(v) for k, v in sums.items()}, beta, ties)

    beta, loglik, info, iterations = newton(evaluate, p, max_iter=max_iter)
    cov = np.linalg.inv(info)
    pairs = fed.run("nordfed.cox.concordance", {**base, "beta": beta})
    conc = sum(r["concordant"] for r in pairs.values())
    tied = sum(r["tied_risk"] for r in pairs.values())
    total = conc + tied + sum(r["discordant"] for r in pairs.values())
    # with one site "within-site" is every pair, i.e. exactly what a pooled analysis compares
    scope = WITHIN_SITE if len(pairs) > 1 else ALL_PAIRS

    return CoxResult(
        covariates=covariates,
        **wald_table(covariates, beta, cov, alpha),
        log_likelihood=float(loglik),
        iterations=iterations,
        concordance=float((conc + 0.5 * tied) / total) if total else float("nan"),
        n=n,
        events=events,
        ties=ties,
        strata_by_site=strata_by_site,
        variance=cov.tolist(),
        concordance_scope=scope,
        concordance_pairs=int(total),
    )


def concordance_note(res: CoxResult) -> str | None:
    """Why the concordance differs from a pooled analysis of the same rows, or None when it does not."""
    # stratified by site, within-site pairs are what lifelines compares too (pairs within each stratum)
    if res.concordance_scope != WITHIN_SITE or res.strata_by_site:
        return None
    pairs = f" ({res.concordance_pairs:,} comparable pairs)" if res.concordance_pairs is not None else ""
    return ("Concordance compares only pairs of rows from the same site" + pairs + "; a pooled analysis "
            "(e.g. lifelines' concordance_index_) also compares rows across sites, so its value differs. "
            "Cross-site pairs would need row-level risk scores and event times to leave the sites "
            "(disclosure control). With one site, or a model stratified by site, it equals lifelines' value.")
