"""Federated evaluation of a logistic risk model without sharing individual predictions.

The model travels to the sites; they return aggregates (:mod:`nordfed.fed.score_hist`):

* AUROC = (sum of exact within-site Mann-Whitney U + between-site U from disclosure-safe score blocks, uniform
  within a block) / (events x non-events); with one site it is exact. 95 % CI by Hanley & McNeil (1982).
* AUPRC from the pooled block histogram (approximate, resolution of one block).
* Brier score: exact (sums). Calibration intercept (logit offset) and slope (logit as covariate): exact, by the
  federated logistic engine with no penalty. ICI (= E-avg) against the logistic recalibration curve.
* Calibration table by deciles of pooled predicted risk; demographic table by age group and sex when present.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nordfed.fed import score_hist
from nordfed.fed.lasso import fit_lasso
from nordfed.fed.protocol import AlgorithmError, Federation, InProcessFederation, SiteData, algorithm

_LP = "__lp__"


def as_model(model: Any) -> dict[str, Any]:
    """Accept a model dict, a LassoFit or a FederatedLogisticRegression."""
    if hasattr(model, "to_model"):
        return dict(model.to_model())
    if isinstance(model, Mapping) and {"covariates", "coef", "intercept"} <= set(model):
        return {"covariates": list(model["covariates"]), "coef": [float(c) for c in model["coef"]],
                "intercept": float(model["intercept"])}
    raise TypeError("model must have to_model() or be a dict with covariates, coef and intercept")


def hanley_mcneil_ci(auc: float, n_pos: int, n_neg: int, z: float = 1.959964) -> tuple[float, float, float]:
    """(se, lower, upper) of AUROC by Hanley & McNeil's exponential approximation."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (n_pos * n_neg)
    se = float(np.sqrt(max(var, 0.0)))
    return se, max(0.0, auc - z * se), min(1.0, auc + z * se)


@dataclass
class Evaluation:
    """Pooled performance of a model across sites (and AUROC / Brier per site)."""

    n: int
    n_events: int
    auroc: float
    auroc_se: float
    auroc_ci: tuple[float, float]
    auprc: float
    brier: float
    calibration_intercept: float
    calibration_slope: float
    ici: float
    calibration_table: list[dict[str, Any]]
    per_site: dict[str, dict[str, float]]
    demographics: dict[str, Any] = field(default_factory=dict)
    #: per ordered demographic table, the groups whose events sites released only together (first, last label)
    demographic_spans: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    auroc_method: str = "within-site exact U + between-site block histogram; CI Hanley-McNeil"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def auroc_from_scores(results: Mapping[str, Mapping[str, Any]],
                      cross: Mapping[str, Mapping[str, Any]] | None = None) -> tuple[float, int, int]:
    """Pooled AUROC from the sites' ``nordfed.eval.scores`` (and ``nordfed.eval.cross_u``) results.

    Between sites a and b the U of a's events against b's non-events is the mean of a's exact scores against
    b's blocks and b's exact scores against a's blocks (block against block without ``cross``).
    Returns (auc, events, non-events).
    """
    n_pos = sum(r["events"] for r in results.values())
    n_neg = sum(r["n"] - r["events"] for r in results.values())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs both events and non-events in the pooled data")
    u = sum(r["u"] for r in results.values())
    for a, ra in results.items():
        for b, rb in results.items():
            if a == b:
                continue
            if cross is None:
                u += score_hist.cross_u(ra["blocks"]["pos"], rb["blocks"]["neg"])
            else:
                u += 0.5 * (cross[a]["cross"][b]["pos_vs"] + cross[b]["cross"][a]["neg_vs"])
    return u / (n_pos * n_neg), n_pos, n_neg


def pooled_table(results: Sequence[list[dict[str, Any]]], spans: Sequence[list[dict[str, Any]]] | None = None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Add the sites' group rows (``nordfed.eval.groups``): (rows, merged spans).

    ``n`` adds the released persons; ``sites_suppressed`` says how many sites withheld theirs (then ``n`` is a
    lower bound, and ``None`` when every site did). With ``spans`` (ordered groups) every site's merged span
    is widened to the finest common coarsening: overlapping spans join, and the joined span's sums are exact
    (each site's spans inside it plus its released rows there). A row inside a span has ``observed`` and
    ``expected`` ``None`` and names its span; other rows are exact sums. Without spans (categories) a row adds
    the sites that released its events, counted in ``sites_events_suppressed``, and its rates are theirs.
    """
    spans = spans if spans is not None else [[] for _ in results]
    joined: list[list[int]] = []
    for a, b in sorted(tuple(s["groups"]) for site in spans for s in site):
        if joined and a <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], b)
        else:
            joined.append([a, b])
    where = {i: (a, b) for a, b in joined for i in range(a, b + 1)}
    rows = []
    for i, cells in enumerate(zip(*results, strict=True)):
        with_n = [c for c in cells if c["n"] is not None]
        full = [c for c in with_n if c["events"] is not None]
        n = sum(c["n"] for c in with_n) if with_n else None
        n_full = sum(c["n"] for c in full)
        ev, ex = sum(c["events"] for c in full), sum(c["expected"] for c in full)
        row = {"n": n, "observed": ev if full else None, "expected": ex if full else None,
               "observed_rate": ev / n_full if n_full else None, "expected_rate": ex / n_full if n_full else None,
               "sites_suppressed": len(cells) - len(with_n), "sites_events_suppressed": len(cells) - len(full),
               "span": list(where[i]) if i in where else None}
        if i in where:
            row.update(observed=None, expected=None, observed_rate=None, expected_rate=None)
        rows.append(row)
    return rows, [span_sums(a, b, results, spans) for a, b in joined]


def span_sums(a: int, b: int, results: Sequence[list[dict[str, Any]]],
              spans: Sequence[list[dict[str, Any]]]) -> dict[str, Any]:
    """Sums over groups ``a .. b`` (a run that no site's span crosses) from every site's spans inside them and
    its released rows there; ``None`` with ``sites_suppressed`` when a site released neither."""
    n = ev = 0
    ex = 0.0
    missing = 0
    for rows, own in zip(results, spans, strict=True):
        inside = [s for s in own if a <= s["groups"][0] and s["groups"][1] <= b]
        covered = {i for s in inside for i in range(s["groups"][0], s["groups"][1] + 1)}
        rest = [rows[i] for i in range(a, b + 1) if i not in covered]
        if any(r["n"] is None or r["events"] is None for r in rest):  # a span the site could not release
            missing += 1
            continue
        n += sum(s["n"] for s in inside) + sum(r["n"] for r in rest)
        ev += sum(s["events"] for s in inside) + sum(r["events"] for r in rest)
        ex += sum(s["expected"] for s in inside) + sum(r["expected"] for r in rest)
    exact = not missing
    return {"groups": [a, b], "n": n if exact else None, "observed": ev if exact else None,
            "expected": ex if exact else None, "observed_rate": ev / n if exact and n else None,
            "expected_rate": ex / n if exact and n else None, "sites_suppressed": missing}


def score_round(fed: Federation, base: dict[str, Any],
                site_list: list[str]) -> tuple[dict[str, Any], float, int, int]:
    """The sites' score aggregates for ``base`` params and the pooled AUROC with its class counts."""
    res = fed.run("nordfed.eval.scores", base, site_list)
    cross = None
    if len(res) > 1:
        blocks = {s: {"pos": r["blocks"]["pos"], "neg": r["blocks"]["neg"]} for s, r in res.items()}
        cross = fed.run("nordfed.eval.cross_u", {**base, "blocks": blocks}, site_list)
    auc, n_pos, n_neg = auroc_from_scores(res, cross)
    return res, auc, n_pos, n_neg


def merge_suppressed_groups(fed: Federation, base: dict[str, Any], cutoffs: np.ndarray,
                            site_list: list[str]) -> np.ndarray:
    """The calibration groups' cut-offs, with each group some site would suppress merged into a neighbour until
    none is (a decile of 800 persons at 2 % risk has about 5 outcomes per site: a gap in the plot otherwise).

    The sites only say which groups they would suppress, never a count, until the groups are final: releasing
    a group's counts and then those of its merger with a suppressed neighbour would give the suppressed cell by
    difference. Neighbouring suppressed groups merge in pairs, a single one with its neighbour towards the middle
    of the risk range, and the sites are asked again.
    """
    cuts = list(np.asarray(cutoffs, dtype=float))
    while cuts:
        flags = fed.run("nordfed.eval.groups", {**base, "cutoffs": cuts, "hidden_only": True}, site_list)
        hidden = np.any([r["hidden"] for r in flags.values()], axis=0)
        if not hidden.any():
            break
        drop: set[int] = set()  # cut-off i separates group i from group i + 1
        i = 0
        while i < len(hidden):
            if not hidden[i]:
                i += 1
                continue
            end = i
            while end + 1 < len(hidden) and hidden[end + 1]:
                end += 1
            if end > i:  # a run: pairs first, so the merged groups stay as narrow as they can
                drop.update(range(i, end, 2))
            else:  # alone: towards the middle of the risk range
                drop.add(i if i < len(hidden) / 2 else i - 1)
            i = end + 1
        cuts = [c for i, c in enumerate(cuts) if i not in drop]
    return np.asarray(cuts, dtype=float)


def recalibration(fed: Federation, outcome: str, model: Mapping[str, Any], dataset: Any, sites: Sequence[str],
                  where: Mapping[str, Any] | None) -> tuple[float, float, float]:
    """``(calibration intercept, recalibration intercept, calibration slope)`` of ``model`` on the sites' rows:
    the intercept with the model's logit as offset, and the logistic fit on that logit (no penalty)."""
    derived = {_LP: model}
    cal_int = fit_lasso(fed, [], outcome, lam=0.0, dataset=dataset, sites=sites, where=where, derived=derived,
                        offset=_LP).original()[0]
    a, b = fit_lasso(fed, [_LP], outcome, lam=0.0, standardize=False, dataset=dataset, sites=sites, where=where,
                     derived=derived).original()
    return float(cal_int), float(a), float(b[0])


@algorithm("nordfed.eval.recalibration", "1")
def recalibration_partial(data: SiteData, params: dict[str, Any]) -> dict[str, float]:
    """This site's calibration intercept and slope of ``model``, fitted here on its rows alone by the same engine.

    Over one site, the federated fit's per-round sums would be the site's own, and a node that releases
    ``nordfed.lasso.newton`` only as a secure sum over several sites refuses them; these three numbers are all
    the evaluation needs, and what it releases of a site anyway.
    """
    cal_int, a, slope = recalibration(InProcessFederation({data.site: data}), params["outcome"],
                                      as_model(params["model"]), params.get("dataset"), [data.site],
                                      params.get("where"))
    return {"calibration_intercept": cal_int, "intercept": a, "slope": slope}


def evaluate(fed: Federation, model: Any, outcome: str, dataset: Any = None, sites: Sequence[str] | None = None,
             where: Mapping[str, Any] | None = None, n_groups: int = 10, age_column: str | None = "age",
             sex_column: str | None = "sex") -> Evaluation:
    """Evaluate ``model`` on the sites' rows (optionally filtered by ``where``) without row-level results."""
    mdl = as_model(model)
    base = {"dataset": dataset, "model": mdl, "outcome": outcome, "where": dict(where) if where else None}
    site_list = list(sites) if sites is not None else fed.sites
    res, auc, n_pos, n_neg = score_round(fed, base, site_list)
    se, lo, hi = hanley_mcneil_ci(auc, n_pos, n_neg)
    n = n_pos + n_neg
    _, dpos = score_hist.pooled_density([r["blocks"]["pos"] for r in res.values()])
    _, dneg = score_hist.pooled_density([r["blocks"]["neg"] for r in res.values()])
    auprc = score_hist.average_precision(dpos, dneg)
    brier = sum(r["brier"] for r in res.values()) / n
    per_site = {s: {"n": r["n"], "events": r["events"], "brier": r["brier"] / r["n"],
                    "auroc": r["u"] / (r["events"] * (r["n"] - r["events"])) if 0 < r["events"] < r["n"] else None}
                for s, r in res.items()}
    if len(site_list) == 1:  # a held-out site: fitted there (see recalibration_partial)
        rec = fed.run("nordfed.eval.recalibration", base, site_list)[site_list[0]]
        cal_int, a, slope = rec["calibration_intercept"], rec["intercept"], rec["slope"]
    else:
        cal_int, a, slope = recalibration(fed, outcome, mdl, dataset, site_list, where)
    cutoffs = score_hist.pooled_quantiles([r["blocks"]["all"] for r in res.values()],
                                          np.arange(1, n_groups) / n_groups)
    cutoffs = merge_suppressed_groups(fed, base, cutoffs, site_list)
    by = {}
    if age_column:
        by["age_group"] = age_column
    if sex_column:
        by["sex"] = sex_column
    gparams = {**base, "cutoffs": cutoffs, "recalibration": [a, slope]}
    try:
        groups = fed.run("nordfed.eval.groups", {**gparams, "by": by}, site_list)
    except (ValueError, KeyError, AlgorithmError) as exc:  # demographic columns absent at a site: no such table
        if "not in the data" not in str(exc):
            raise
        by = {}
        groups = fed.run("nordfed.eval.groups", gparams, site_list)
    ici = sum(g["abs_diff"] for g in groups.values()) / sum(g["n"] for g in groups.values())
    # the deciles were merged until no site holds a small cell in them, so no site merges their events further
    table, _ = pooled_table([g["groups"] for g in groups.values()], [g["spans"] for g in groups.values()])
    for i, row in enumerate(table):
        row["risk_from"] = float(cutoffs[i - 1]) if i else 0.0
        row["risk_to"] = float(cutoffs[i]) if i < len(cutoffs) else 1.0
    demo, demo_spans = {}, {}
    for name in by:
        ordered = name == "age_group"  # the researcher's age cuts: the same labels, in order, at every site
        labels = list(next(iter(groups.values()))[name]["labels"]) if ordered else \
            sorted({lab for g in groups.values() for lab in g[name]["labels"]})
        tables = []
        for g in groups.values():  # align each site's labels to the pooled label set
            own = dict(zip(g[name]["labels"], g[name]["table"], strict=True))
            # a site that withheld rare levels may hold a few rows of a label it did not send: suppressed, not 0
            absent = {"n": None, "events": None, "expected": None} if g[name].get("withheld") else \
                {"n": 0, "events": 0, "expected": 0.0}
            tables.append([own.get(lab, absent) for lab in labels])
        rows, spans = pooled_table(tables, [g[name]["spans"] for g in groups.values()] if ordered else None)
        demo[name] = [{"group": lab, **row, "span": row["span"] and [labels[i] for i in row["span"]]}
                      for lab, row in zip(labels, rows, strict=True)]
        last = demo[name][-1] if ordered else None
        if last and last["group"] == score_hist.UNKNOWN_AGE and last["n"] == 0 and not last["sites_suppressed"] \
                and not last["span"]:
            demo[name].pop()  # nobody's age is missing at any site
        if spans:
            demo_spans[name] = [{**s, "groups": [labels[s["groups"][0]], labels[s["groups"][1]]]} for s in spans]
    return Evaluation(n=n, n_events=n_pos, auroc=auc, auroc_se=se, auroc_ci=(lo, hi), auprc=auprc, brier=brier,
                      calibration_intercept=float(cal_int), calibration_slope=float(slope), ici=ici,
                      calibration_table=table, per_site=per_site, demographics=demo,
                      demographic_spans=demo_spans)


def leave_one_site_out(fed: Federation, covariates: Sequence[str], outcome: str, lam: float, alpha: float = 1.0,
                       dataset: Any = None, **eval_kw: Any) -> dict[str, Evaluation]:
    """External validation: for each site, fit on all the others and evaluate on it."""
    if len(fed.sites) < 2:
        raise ValueError("leave-one-site-out needs at least two sites")
    out = {}
    for site in fed.sites:
        others = [s for s in fed.sites if s != site]
        fit = fit_lasso(fed, covariates, outcome, lam=lam, alpha=alpha, dataset=dataset, sites=others)
        out[site] = evaluate(fed, fit, outcome, dataset=dataset, sites=[site], **eval_kw)
    return out


def temporal_validation(fed: Federation, covariates: Sequence[str], outcome: str, time_column: str, cutoff: Any,
                        lam: float, alpha: float = 1.0, dataset: Any = None,
                        **eval_kw: Any) -> tuple[dict[str, Any], Evaluation]:
    """Fit on rows with ``time_column < cutoff`` (date or year), evaluate on rows at or after it."""
    value = cutoff if isinstance(cutoff, int | float) else str(cutoff)
    fit = fit_lasso(fed, covariates, outcome, lam=lam, alpha=alpha, dataset=dataset,
                    where={"column": time_column, "op": "<", "value": value})
    ev = evaluate(fed, fit, outcome, dataset=dataset, where={"column": time_column, "op": ">=", "value": value},
                  **eval_kw)
    return fit.to_model(), ev
