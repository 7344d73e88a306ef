"""Global covariate preprocessing decided across sites without sharing rows (FeatureExtraction's tidyCovariates).

Each site returns, for its study population, per-covariate counts (suppressed below its minimum cell count),
per-analysis coverage and the maximum of continuous covariates; :func:`plan_preprocessing` combines them into
the global covariate set every site then uses (``covariate_ids``) and the normalisation maxima.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nordfed.features import analyses as A
from nordfed.features.covariates import analysis_of
from nordfed.features.design import study_data
from nordfed.fed.protocol import Federation, SiteData, algorithm
from nordfed.privacy.disclosure import require_min_rows, suppress_counts


@algorithm("nordfed.features.covariate_stats", version="1")
def covariate_stats(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Per-covariate counts and maxima of this site's study population (params as the ``plp`` dataset)."""
    if data.cdm is None:
        raise ValueError(f"site {data.site} has no CDM")
    study = study_data(data.cdm, params)
    m = study.covariates.matrix.tocsc()
    n = m.shape[0]
    require_min_rows(n, data.policy, "study population rows")
    ids = study.covariates.covariate_ids
    counts = np.diff(m.indptr)  # rows with a non-zero value, per covariate
    maxima = np.asarray(abs(m).max(axis=0).todense()).ravel() if m.shape[1] else np.zeros(0)
    suppressed = suppress_counts(dict(zip(ids.tolist(), counts.tolist(), strict=True)), data.policy)
    # rows with exactly one covariate of an analysis: an analysis covering every row once is a one-hot block
    analysis = analysis_of(ids)
    exactly_one: dict[str, int] = {}
    csr = study.covariates.matrix.tocsr()
    for a in np.unique(analysis).tolist():
        cols = np.flatnonzero(analysis == a)
        per_row = np.diff(csr[:, cols].tocsr().indptr)
        exactly_one[str(a)] = int((per_row == 1).sum())
    continuous = np.isin(analysis, list(A.CONTINUOUS))
    # suppressed covariates are left out entirely: even the existence of a rare concept at a site is not released
    released = [k for k, c in enumerate(ids.tolist()) if suppressed[c] is not None]
    return {
        "n": int(n),
        "covariate_ids": [int(ids[k]) for k in released],
        "counts": [int(counts[k]) for k in released],
        # a maximum is one person's value: released only where enough rows share the covariate
        "max_values": [float(maxima[k]) if continuous[k] else None for k in released],
        "exactly_one": suppress_counts(exactly_one, data.policy),
    }


@dataclass
class PreprocessingPlan:
    """The global covariate set and the normalisation to apply at every site."""

    covariate_ids: list[int]
    max_values: dict[int, float]
    n: int
    counts: dict[int, int] = field(default_factory=dict)
    removed: dict[str, list[int]] = field(default_factory=dict)

    def dataset_params(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec`` completed with the global covariate set and maxima, for ``SiteData.frame``."""
        return {**spec, "builder": "plp", "covariate_ids": self.covariate_ids,
                "max_values": {str(k): v for k, v in self.max_values.items()}}


def combine_stats(results: dict[str, dict[str, Any]], min_fraction: float = 0.001, normalize: bool = True,
                  remove_redundancy: bool = True) -> PreprocessingPlan:
    """Pure combination of the sites' ``covariate_stats`` (suppressed counts count as zero)."""
    n = sum(int(r["n"]) for r in results.values())
    counts: dict[int, int] = {}
    maxima: dict[int, float] = {}
    exactly_one: dict[int, int] = {}
    complete_one: dict[int, bool] = {}
    for r in results.values():
        for c, k, mx in zip(r["covariate_ids"], r["counts"], r["max_values"], strict=True):
            counts[int(c)] = counts.get(int(c), 0) + int(k or 0)
            if mx is not None:
                maxima[int(c)] = max(maxima.get(int(c), 0.0), float(mx))
        for a, k in r["exactly_one"].items():
            exactly_one[int(a)] = exactly_one.get(int(a), 0) + int(k or 0)
            complete_one[int(a)] = complete_one.get(int(a), True) and k is not None
    removed: dict[str, list[int]] = {"rare": [], "constant": [], "redundant": []}
    keep = []
    for c in sorted(counts):
        if counts[c] == 0 or (n and counts[c] / n < min_fraction):
            removed["rare"].append(c)
        elif remove_redundancy and counts[c] == n and int(analysis_of(np.array([c]))[0]) not in A.CONTINUOUS:
            removed["constant"].append(c)
        else:
            keep.append(c)
    if remove_redundancy:
        # a one-hot analysis (every row has exactly one of its covariates): drop its most prevalent covariate
        for a, k in exactly_one.items():
            members = [c for c in keep if c % 1000 == a]
            if a in A.CONTINUOUS or len(members) < 2 or not complete_one.get(a) or k != n:
                continue
            if sum(counts[c] for c in members) != n:
                continue
            top = max(members, key=lambda c: (counts[c], c))
            removed["redundant"].append(top)
            keep.remove(top)
    kept_max = {c: maxima[c] for c in keep if normalize and c in maxima and maxima[c] > 0}
    return PreprocessingPlan(covariate_ids=keep, max_values=kept_max, n=n, counts=counts, removed=removed)


def plan_preprocessing(federation: Federation, spec: dict[str, Any], min_fraction: float = 0.001,
                       normalize: bool = True, remove_redundancy: bool = True) -> PreprocessingPlan:
    """Ask every site for covariate statistics and decide the global covariate set (client side)."""
    params = {k: v for k, v in spec.items() if k not in ("builder", "covariate_ids", "max_values")}
    results = federation.run("nordfed.features.covariate_stats", params)
    return combine_stats(results, min_fraction, normalize, remove_redundancy)
