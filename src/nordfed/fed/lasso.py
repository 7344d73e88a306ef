"""Federated penalised (LASSO / elastic-net / ridge) logistic regression, exact on the pooled rows.

Proximal Newton: every round the sites return summed logloss, gradient and Hessian at the client's
candidate coefficients (:mod:`nordfed.fed.lasso_site`); the client solves the penalised quadratic model by
coordinate descent and accepts the step by an Armijo line search on the summed objective. Several problems
(the full data and each CV fold) advance in lock-step, so a round serves them all.
The Hessian is asked for a working set only, as glmnet's active sets: the coefficients that are or may become
non-zero (the non-zero ones, the unpenalised ones, the sequential strong rule's candidates). The step keeps the
others at zero, and the gradient of every coefficient, always sent, checks that they stay there: a coefficient
violating its optimality condition joins the set (its Hessian comes with the next point's, so it costs no round of
its own unless nothing else moves). The optimum is the same; along the CRC study's path (197 covariates, CV) the
Hessians hold 23 % of the full ones' cells: its fit took 6.2 s instead of 10.2 s in process, in 83 rounds
instead of 80, and the sites send a quarter of the bytes.
Standardisation follows glmnet: pooled means and population standard deviations; coefficients are reported
on the original scale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nordfed.fed import lasso_site  # noqa: F401  (registers the partials)
from nordfed.fed.lasso_solver import (
    kkt_violation,
    kkt_violations,
    lambda_max,
    lambda_path,
    penalty,
    pooled_moments,
    solve_quadratic,
    to_original_scale,
    unpack_symmetric,
)
from nordfed.fed.protocol import Federation

_ARMIJO = 1e-4


@dataclass
class CVResult:
    """Cross-validated deviance per lambda (glmnet's cvm/cvsd) and the chosen lambdas."""

    lambdas: np.ndarray
    cvm: np.ndarray
    cvsd: np.ndarray
    lambda_min: float
    lambda_1se: float
    n_folds: int


@dataclass
class LassoFit:
    """A fitted path (one or more lambdas); ``coef[k]``/``intercept[k]`` are on the original scale."""

    covariates: list[str]
    lambdas: np.ndarray
    alpha: float
    betas: np.ndarray  # (L, p+1) standardised
    center: np.ndarray
    scale: np.ndarray
    n: int
    n_events: int
    iterations: int  # Newton rounds for the reported fit
    rounds: int  # federation round trips in total
    kkt: float  # largest KKT violation at the chosen lambda (standardised scale)
    chosen: int = 0
    cv: CVResult | None = None
    sites: list[str] = field(default_factory=list)

    @property
    def lam(self) -> float:
        return float(self.lambdas[self.chosen])

    def original(self, k: int | None = None) -> tuple[float, np.ndarray]:
        return to_original_scale(self.betas[self.chosen if k is None else k], self.center, self.scale)

    def to_model(self) -> dict[str, Any]:
        """Plain-JSON model (what travels to sites for scoring)."""
        b0, coef = self.original()
        return {"covariates": list(self.covariates), "coef": [float(c) for c in coef], "intercept": b0}


class _Problem:
    """Proximal-Newton state for one data subset (a CV fold or all rows) along a lambda path."""

    def __init__(self, fold: int, n: int, center: np.ndarray, scale: np.ndarray, pf: np.ndarray, alpha: float,
                 beta0: np.ndarray, tol: float, max_iter: int):
        self.fold, self.n, self.center, self.scale, self.pf, self.alpha = fold, n, center, scale, pf, alpha
        self.beta, self.tol, self.max_iter = beta0, tol, max_iter
        self.lambdas: np.ndarray = np.array([0.0])
        self.k = 0
        self.g: np.ndarray | None = None
        self.h: np.ndarray | None = None
        self.loss = np.nan
        self.cand: np.ndarray | None = None
        self.d = np.zeros_like(beta0)
        self.delta = 0.0
        self.t = 1.0
        self.iters = 0
        self.total_iters = 0
        self.path: list[np.ndarray] = []
        self.done = False
        self.kkt = np.nan
        # the working set: the coefficients the Hessian is asked for (the unpenalised ones to begin with)
        self.work = np.flatnonzero(np.isfinite(pf) & ((pf == 0) | (beta0 != 0)))
        self.h_work = self.work  # the coefficients self.h belongs to
        self.asked = self.work  # the working set of the request in flight
        self.refresh = False  # the request in flight asks for a bigger working set's Hessian at self.beta

    def start(self, lambdas: np.ndarray) -> None:
        self.lambdas, self.k, self.path, self.done = np.asarray(lambdas, float), 0, [], False
        if self.g is not None:
            self._advance()

    def request(self) -> dict[str, Any]:
        beta = self.beta if self.g is None or self.refresh else self.cand
        self.asked = self.work
        return {"fold": self.fold, "beta": beta, "center": self.center, "scale": self.scale,
                "columns": self.work.tolist()}

    def _objective(self, loss: float, beta: np.ndarray) -> float:
        return loss + penalty(beta, float(self.lambdas[self.k]), self.alpha, self._pf_finite)

    @property
    def _pf_finite(self) -> np.ndarray:
        return np.where(np.isfinite(self.pf), self.pf, 0.0)

    def receive(self, res: Mapping[str, Any]) -> None:
        loss, g, h = res["loss"] / self.n, res["grad"] / self.n, unpack_symmetric(res["hess"]) / self.n
        if len(h) != len(self.asked):
            raise ValueError(f"the sites sent a Hessian of {len(h)} coefficients for a working set of "
                             f"{len(self.asked)}")
        if self.g is None or self.refresh:
            self.loss, self.g, self.h, self.h_work, self.refresh = loss, g, h, self.asked, False
            self._advance()
            return
        assert self.cand is not None
        f_old = self._objective(self.loss, self.beta)
        f_new = self._objective(loss, self.cand)
        # near the optimum the predicted decrease drops below rounding noise of F: trust the Newton model then
        noise = 1e-13 * max(1.0, abs(f_old))
        if f_new <= f_old + _ARMIJO * self.t * self.delta or (-self.delta < 1e2 * noise and f_new <= f_old + noise):
            self.beta, self.loss, self.g, self.h, self.h_work = self.cand, loss, g, h, self.asked
            self.iters += 1
            self.total_iters += 1
            self._advance()
        elif self.t < 1e-10:
            self._record()  # no descent possible at machine precision
            self._advance()
        else:
            self.t *= 0.5
            self.cand = self.beta + self.t * self.d

    def _record(self) -> None:
        assert self.g is not None
        self.kkt = kkt_violation(self.g, self.beta, float(self.lambdas[self.k]), self.alpha, self.pf)
        self.path.append(self.beta.copy())
        self.k += 1
        self.iters = 0
        if self.k == len(self.lambdas):
            self.done = True

    def _grown(self, lam: float, viol: np.ndarray) -> np.ndarray:
        """The working set for ``lam``: what it holds, the coefficients violating their optimality condition and
        the sequential strong rule's candidates (|gradient| >= alpha (2 lam - previous lam) pf)."""
        assert self.g is not None
        fin = np.isfinite(self.pf)
        want = fin & (viol > self.tol)
        if self.k > 0:
            prev = float(self.lambdas[self.k - 1])
            want |= fin & (np.abs(self.g) >= self.alpha * (2 * lam - prev) * np.where(fin, self.pf, 0.0))
        return np.union1d(self.work, np.flatnonzero(want))

    def _advance(self) -> None:
        """Move to the next point to evaluate, recording every lambda already solved (warm starts)."""
        assert self.g is not None and self.h is not None
        while not self.done:
            lam = float(self.lambdas[self.k])
            viol = kkt_violations(self.g, self.beta, lam, self.alpha, self.pf)
            if viol.max(initial=0.0) < self.tol or self.iters >= self.max_iter:
                self._record()
                continue
            # the step moves the coefficients whose Hessian we have; the next point's request brings the Hessian
            # of the grown set, so a joining coefficient moves one step later without a round of its own
            self.work = self._grown(lam, viol)
            w = self.h_work
            new = np.zeros_like(self.beta)  # outside the working set the coefficients stay zero
            new[w] = solve_quadratic(self.g[w], self.h, self.beta[w], lam, self.alpha, self.pf[w])
            self.d = new - self.beta
            pf = self._pf_finite
            self.delta = float(self.g @ self.d) + penalty(new, lam, self.alpha, pf) - penalty(self.beta, lam,
                                                                                              self.alpha, pf)
            if np.max(np.abs(self.d)) < 1e-14 or self.delta > -1e-17:
                if len(self.work) > len(self.h_work):  # the violators are outside: their Hessian, at this point
                    self.refresh = True
                    return
                self._record()
                continue
            self.t = 1.0
            self.cand = new
            return


def _drive(fed: Federation, base: Mapping[str, Any], problems: Sequence[_Problem], sites: Sequence[str] | None,
           counter: list[int]) -> None:
    """Run rounds until every problem has solved its whole lambda path."""
    while True:
        live = [p for p in problems if not p.done]
        if not live:
            return
        points = [p.request() for p in live]
        # only the sums over sites: a site's own gradient would give its Σ x·y per covariate
        out = fed.aggregate("nordfed.lasso.newton", {**base, "points": points}, sites)
        counter[0] += 1
        for i, prob in enumerate(live):
            prob.receive({key: out["results"][i][key] for key in ("loss", "grad", "hess")})


def _standardisation(n: float, mean: np.ndarray, m2: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    sd = np.sqrt(m2 / n)
    scale = np.where(sd > 0, sd, 1.0) if standardize else np.ones_like(mean)
    return mean, scale


def fit_lasso(
    fed: Federation,
    covariates: Sequence[str],
    outcome: str,
    lam: float | None = None,
    alpha: float = 1.0,
    standardize: bool = True,
    cv_folds: int | None = None,
    select: str = "min",
    n_lambda: int = 100,
    lambda_min_ratio: float | None = None,
    seed: int = 0,
    dataset: Any = None,
    sites: Sequence[str] | None = None,
    where: Mapping[str, Any] | None = None,
    derived: Mapping[str, Any] | None = None,
    offset: str | None = None,
    tol: float = 1e-10,
    max_iter: int = 100,
) -> LassoFit:
    """Fit at ``lam`` (or along glmnet's path; with ``cv_folds`` pick lambda by federated k-fold CV).

    ``select`` is "min" or "1se". ``lam=0`` gives plain maximum likelihood. ``where``/``derived``/``offset``
    are passed to the sites (see :func:`nordfed.fed.lasso_site.site_table`).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if lam is not None and lam < 0:
        raise ValueError(f"lambda must be non-negative, got {lam}")
    if select not in ("min", "1se"):
        raise ValueError(f"select must be 'min' or '1se', got {select!r}")
    if cv_folds is not None and cv_folds < 2:
        raise ValueError(f"cv_folds must be at least 2, got {cv_folds}")
    covariates = list(covariates)
    k = int(cv_folds or 0)
    base: dict[str, Any] = {"dataset": dataset, "covariates": covariates, "outcome": outcome, "n_folds": k,
                            "seed": seed, "where": dict(where) if where else None,
                            "derived": dict(derived) if derived else None, "offset": offset}
    counter = [0]
    site_list = list(sites) if sites is not None else fed.sites
    mom = fed.run("nordfed.lasso.moments", base, site_list)
    counter[0] += 1
    n_parts = max(k, 1)
    fold_parts = [[(r["parts"][f]["n"], r["parts"][f]["mean"], r["parts"][f]["m2"]) for r in mom.values()]
                  for f in range(n_parts)]
    events = [sum(r["parts"][f]["events"] for r in mom.values()) for f in range(n_parts)]
    p = len(covariates)

    def make(fold: int) -> _Problem:
        parts = [x for f in range(n_parts) if f != fold for x in fold_parts[f]] if fold >= 0 else \
            [x for fp in fold_parts for x in fp]
        ev = sum(e for f, e in enumerate(events) if f != fold)
        n, mean, m2 = pooled_moments(parts)
        center, scale = _standardisation(n, mean, m2, standardize)
        pf = np.ones(p + 1)
        pf[0] = 0.0
        pf[1:][m2 <= 1e-12 * np.maximum(1.0, n * mean**2)] = np.inf  # constant columns stay out
        beta0 = np.zeros(p + 1)
        if 0 < ev < n:
            beta0[0] = np.log(ev / (n - ev))
        return _Problem(fold, int(n), center, scale, pf, alpha, beta0, tol, max_iter)

    full = make(-1)
    n_total, n_events = full.n, int(sum(events))
    # pilot: intercept-only fit (exact after one round without offset) gives the gradient for lambda_max
    pen_pf = full.pf.copy()
    full.pf = np.where(pen_pf > 0, np.inf, pen_pf)
    full.start(np.array([0.0]))
    _drive(fed, base, [full], site_list, counter)
    full.pf = pen_pf
    assert full.g is not None
    lmax = lambda_max(full.g, alpha, pen_pf)
    if lambda_min_ratio is None:
        lambda_min_ratio = 1e-4 if n_total > p else 1e-2
    if k:
        lambdas = lambda_path(lmax, n_lambda, lambda_min_ratio) if lam is None else \
            np.unique(np.r_[lambda_path(lmax, n_lambda, lambda_min_ratio), lam])[::-1]
        problems = [full, *(make(f) for f in range(k))]
    else:
        lambdas = np.array([lam]) if lam is not None else lambda_path(lmax, n_lambda, lambda_min_ratio)
        problems = [full]
    full.total_iters = 0
    for prob in problems:
        prob.start(lambdas)
    _drive(fed, base, problems, site_list, counter)
    fit = LassoFit(covariates=covariates, lambdas=lambdas, alpha=alpha, betas=np.array(full.path),
                   center=full.center, scale=full.scale, n=n_total, n_events=n_events,
                   iterations=full.total_iters, rounds=counter[0], kkt=full.kkt, sites=list(mom))
    if k:
        from nordfed.fed.cv import cross_validate

        fit.cv = cross_validate(fed, base, problems[1:], lambdas, site_list)
        counter[0] += 1
        fit.rounds = counter[0]
        target = fit.cv.lambda_min if select == "min" else fit.cv.lambda_1se
        fit.chosen = int(np.argmin(np.abs(lambdas - target)))
    elif lam is None:
        fit.chosen = len(lambdas) - 1
    lam_c = float(lambdas[fit.chosen])
    fit.kkt = _final_kkt(fed, base, full, fit.betas[fit.chosen], lam_c, site_list, counter) if k or lam is None \
        else full.kkt
    fit.rounds = counter[0]
    return fit


def _final_kkt(fed: Federation, base: Mapping[str, Any], full: _Problem, beta: np.ndarray, lam: float,
               sites: Sequence[str], counter: list[int]) -> float:
    """KKT violation at a path point other than the last one (needs the gradient there: one more round)."""
    out = fed.aggregate("nordfed.lasso.newton", {**base, "points": [{"fold": -1, "beta": beta, "center": full.center,
                                                                     "scale": full.scale, "hessian": False}]}, sites)
    counter[0] += 1
    g = out["results"][0]["grad"] / full.n
    return kkt_violation(g, beta, lam, full.alpha, full.pf)
