"""PatientLevelPrediction's covariate summary, federated: each covariate's mean (prevalence when binary) and SD
among persons with and without the outcome, and the standardized mean difference (SMD).

Node side (``nordfed.plp.covariate_summary``): per outcome class, the class total and per covariate the number
of non-zero rows, the sum and the sum of squares, over the site's analysis table (:func:`site_table`, optionally
a train/test part). Disclosure: the table needs the minimum rows and its class totals pass
:func:`check_counts`. A covariate's two class cells partition its total over the same rows, which the site
gives away elsewhere (the LASSO's moments release every covariate's mean over the training part), so they are
protected as cells of a released total (:func:`suppress_cells_of_total`) with counts (non-zero rows, zero
rows): a class holding 1..min-1 persons with (or without) the covariate is withheld, and so is the other class,
which would give it away by subtraction. A withheld cell releases no sums. Per covariate the site also says
whether every value is 0 or 1 (a flag, no count).

Client side (:func:`covariate_summary`): pooled and per-site rows with PatientLevelPrediction's definitions:
population SD from sums of squares, SMD = (m1 - m0) / sqrt((s1² + s0²) / 2). A pooled cell is summed over the
sites that released it; ``sites_suppressed`` says how many withheld it (the withheld part is never filled in).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nordfed.fed.lasso_site import site_table
from nordfed.fed.protocol import Federation, SiteData, algorithm
from nordfed.privacy.disclosure import check_counts, require_min_rows, suppress_cells_of_total

ALGORITHM = "nordfed.plp.covariate_summary"
#: the outcome classes, in the order rows report them
CLASSES = ("with", "without")


@algorithm(ALGORITHM, "1")
def covariate_summary_partial(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Per outcome class: ``n`` and per covariate ``nonzero``, ``sum``, ``sumsq`` (``None`` where withheld);
    ``binary``: per covariate, whether all of this site's values are 0 or 1."""
    covariates = list(params["covariates"])
    t = site_table(data, {"dataset": params.get("dataset"), "covariates": covariates, "outcome": params["outcome"],
                          "where": params.get("where")})
    x, y = t["x"], t["y"]
    pol = data.policy
    require_min_rows(len(y), pol, "rows")
    rows = {"with": y == 1, "without": y == 0}
    totals = {k: int(m.sum()) for k, m in rows.items()}
    check_counts(list(totals.values()), pol, "outcome class count(s)")
    nonzero = {k: (x[m] != 0).sum(axis=0) for k, m in rows.items()}
    sums = {k: x[m].sum(axis=0) for k, m in rows.items()}
    sumsq = {k: (x[m] ** 2).sum(axis=0) for k, m in rows.items()}
    out: dict[str, Any] = {k: {"n": totals[k], "nonzero": [], "sum": [], "sumsq": []} for k in CLASSES}
    for j in range(len(covariates)):
        cells = {k: (int(nonzero[k][j]), totals[k] - int(nonzero[k][j])) for k in CLASSES}
        shown = suppress_cells_of_total(cells, pol)
        for k in CLASSES:
            kept = shown[k] is not None
            out[k]["nonzero"].append(int(nonzero[k][j]) if kept else None)
            out[k]["sum"].append(float(sums[k][j]) if kept else None)
            out[k]["sumsq"].append(float(sumsq[k][j]) if kept else None)
    out["binary"] = [bool(v) for v in ((x == 0) | (x == 1)).all(axis=0)]
    return out


def mean_sd(n: float, total: float, squares: float) -> tuple[float | None, float | None]:
    """Mean and population SD from a count, a sum and a sum of squares (PatientLevelPrediction's StDev)."""
    if n <= 0:
        return None, None
    mean = total / n
    return mean, math.sqrt(max(squares / n - mean * mean, 0.0))


def smd(m1: float | None, s1: float | None, m0: float | None, s0: float | None) -> float | None:
    """Standardized mean difference (m1 - m0) / sqrt((s1² + s0²) / 2); ``None`` when undefined."""
    if m1 is None or s1 is None or m0 is None or s0 is None:
        return None
    spread = math.sqrt((s1 * s1 + s0 * s0) / 2)
    return (m1 - m0) / spread if spread > 0 else None


def summary_rows(parts: Sequence[Mapping[str, Any]], covariates: Sequence[str],
                 scale: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Rows of one table from some sites' releases (pooled: all of them; per site: one).

    ``scale`` multiplies a covariate's means and SDs (e.g. back from normalised values; the SMD is unchanged).
    """
    scale = scale or {}
    rows = []
    for j, cov in enumerate(covariates):
        given = [p for p in parts if p["with"]["nonzero"][j] is not None and p["without"]["nonzero"][j] is not None]
        f = float(scale.get(cov, 1.0))
        row: dict[str, Any] = {"covariate": cov, "binary": all(p["binary"][j] for p in parts),
                               "sites_suppressed": len(parts) - len(given)}
        acc = {}
        for k in CLASSES:
            n = sum(p[k]["n"] for p in given)
            s = sum(p[k]["sum"][j] for p in given)
            ss = sum(p[k]["sumsq"][j] for p in given)
            acc[k] = (n, s, ss)
            m, sd = mean_sd(n, s, ss)
            row |= {f"n_{k}": n if given else None,
                    f"nonzero_{k}": sum(p[k]["nonzero"][j] for p in given) if given else None,
                    f"mean_{k}": None if m is None else m * f, f"sd_{k}": None if sd is None else sd * f}
        m, sd = mean_sd(*(sum(v) for v in zip(*acc.values(), strict=True)))
        row |= {"mean": None if m is None else m * f, "sd": None if sd is None else sd * f,
                "smd": smd(row["mean_with"], row["sd_with"], row["mean_without"], row["sd_without"])}
        rows.append(row)
    return {"n_with": sum(p["with"]["n"] for p in parts), "n_without": sum(p["without"]["n"] for p in parts),
            "rows": rows}


def covariate_summary(fed: Federation, covariates: Sequence[str], outcome: str, dataset: Any = None,
                      where: Mapping[str, Any] | None = None, sites: Sequence[str] | None = None,
                      scale: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Pooled and per-site covariate summary by outcome (see the module docstring) of ``covariates``."""
    res = fed.run(ALGORITHM, {"dataset": dataset, "covariates": list(covariates), "outcome": outcome,
                              "where": None if where is None else dict(where)}, sites)
    return {"covariates": list(covariates), "pooled": summary_rows(list(res.values()), covariates, scale),
            "per_site": {s: summary_rows([r], covariates, scale) for s, r in res.items()}}
