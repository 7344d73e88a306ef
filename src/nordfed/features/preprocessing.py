"""Global covariate preprocessing decided across sites without sharing rows (FeatureExtraction's tidyCovariates).

Each site returns, for its study population, per-covariate counts (suppressed where the count, or the rows
without the covariate, lie below its minimum cell count), per-analysis coverage and, rounded up, the maximum of
continuous covariates; :func:`plan_preprocessing` combines them into the global covariate set every site then
uses (``covariate_ids``) and the normalisation maxima.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nordfed.features import analyses as A
from nordfed.features.covariates import analysis_of
from nordfed.features.design import study_data
from nordfed.fed.protocol import Federation, SiteData, algorithm
from nordfed.privacy.disclosure import require_min_rows, round_up_significant, suppress_part


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
    small = (counts > 0) & (counts < data.policy.min_cell_count)
    # n minus a count is the rows without the covariate: a measurement taken for all but 3 persons
    withheld = np.array([suppress_part(int(k), n, data.policy) is None for k in counts.tolist()], dtype=bool)
    # rows with exactly one covariate of an analysis: an analysis covering every row once is a one-hot block
    analysis = analysis_of(ids)
    exactly_one: dict[str, int | None] = {}
    csr = study.covariates.matrix.tocsr()
    for a in np.unique(analysis).tolist():
        cols = np.flatnonzero(analysis == a)
        per_row = np.diff(csr[:, cols].tocsr().indptr)
        exactly_one[str(a)] = suppress_part(int((per_row == 1).sum()), n, data.policy)
    continuous = np.isin(analysis, list(A.CONTINUOUS))
    # rare covariates are left out entirely: even the existence of a rare concept at a site is not released;
    # near-universal ones stay, with their count withheld and a marker, so that the plan keeps them
    released = np.flatnonzero(~small).tolist()
    return {
        "n": int(n),
        "covariate_ids": [int(ids[k]) for k in released],
        "counts": [None if withheld[k] else int(counts[k]) for k in released],
        "nearly_all": [int(ids[k]) for k in released if withheld[k]],
        # a maximum is one person's exact value: only a bound above it leaves, which still keeps values in [0, 1]
        "max_values": [round_up_significant(float(maxima[k])) if continuous[k] else None for k in released],
        "exactly_one": exactly_one,
    }


@dataclass
class PreprocessingPlan:
    """The global covariate set and the normalisation to apply at every site."""

    covariate_ids: list[int]
    max_values: dict[int, float]
    n: int
    counts: dict[int, int] = field(default_factory=dict)
    #: covariates some site reported in nearly all its rows (count withheld; see :func:`combine_stats`)
    nearly_all: set[int] = field(default_factory=set)
    removed: dict[str, list[int]] = field(default_factory=dict)

    def dataset_params(self, spec: dict[str, Any]) -> dict[str, Any]:
        """``spec`` completed with the global covariate set and maxima, for ``SiteData.frame``."""
        return {**spec, "builder": "plp", "covariate_ids": self.covariate_ids,
                "max_values": {str(k): v for k, v in self.max_values.items()}}


def combine_stats(results: dict[str, dict[str, Any]], min_fraction: float = 0.001, normalize: bool = True,
                  remove_redundancy: bool = True) -> PreprocessingPlan:
    """Pure combination of the sites' ``covariate_stats`` (suppressed counts count as zero).

    A covariate a site reports in nearly all its rows (count withheld, since n minus it is a small count) counts
    that site's n, an upper bound, so that ranking by prevalence puts it near the top; it passes ``min_fraction``
    (nearly all of a site's rows, at least the minimum cell count, are not rare), and it is never constant (some
    rows lack it).
    """
    n = sum(int(r["n"]) for r in results.values())
    counts: dict[int, int] = {}
    nearly_all: set[int] = set()
    maxima: dict[int, float] = {}
    exactly_one: dict[int, int] = {}
    complete_one: dict[int, bool] = {}
    for r in results.values():
        near = {int(c) for c in r.get("nearly_all", ())}
        nearly_all |= near
        for c, k, mx in zip(r["covariate_ids"], r["counts"], r["max_values"], strict=True):
            counts[int(c)] = counts.get(int(c), 0) + (int(r["n"]) if int(c) in near else int(k or 0))
            if mx is not None:
                maxima[int(c)] = max(maxima.get(int(c), 0.0), float(mx))
        for a, k in r["exactly_one"].items():
            exactly_one[int(a)] = exactly_one.get(int(a), 0) + int(k or 0)
            complete_one[int(a)] = complete_one.get(int(a), True) and k is not None
    removed: dict[str, list[int]] = {"rare": [], "constant": [], "redundant": []}
    keep = []
    for c in sorted(counts):
        if c not in nearly_all and (counts[c] == 0 or (n and counts[c] / n < min_fraction)):
            removed["rare"].append(c)
        elif (remove_redundancy and counts[c] == n and c not in nearly_all
              and int(analysis_of(np.array([c]))[0]) not in A.CONTINUOUS):
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
    return PreprocessingPlan(covariate_ids=keep, max_values=kept_max, n=n, counts=counts, nearly_all=nearly_all,
                             removed=removed)


def plan_preprocessing(federation: Federation, spec: dict[str, Any], min_fraction: float = 0.001,
                       normalize: bool = True, remove_redundancy: bool = True) -> PreprocessingPlan:
    """Ask every site for covariate statistics and decide the global covariate set (client side)."""
    params = {k: v for k, v in spec.items() if k not in ("builder", "covariate_ids", "max_values")}
    results = federation.run("nordfed.features.covariate_stats", params)
    return combine_stats(results, min_fraction, normalize, remove_redundancy)
