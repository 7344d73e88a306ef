"""Risk groups: cut-offs on predicted risk (federated quantiles or fixed) mapped to intervention bundles.

Quantiles come from the sites' disclosure-safe score blocks (:mod:`nordfed.fed.score_hist`), so no
prediction leaves a site; each group reports, per site and pooled, its size, events and observed rate. A site
withholds a group's events where it (or, by complementary suppression, a neighbour) holds too few, and
releases them merged over the run of neighbouring groups instead: a span. Pooled, overlapping spans join, so
every pooled group or span is an exact sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nordfed.fed import score_hist
from nordfed.fed.evaluation import as_model, pooled_table, span_sums
from nordfed.fed.protocol import Federation

DEFAULT_BUNDLES = (
    "standard care",
    "standard care + risk review",
    "prehabilitation: exercise + nutrition",
    "intensive prehabilitation + geriatric assessment",
)


@dataclass
class RiskGroups:
    """Cut-offs, bundles and outcome by group (pooled and per site), and the merged spans.

    A group row's ``observed``/``expected`` are ``None`` where they are known only merged with neighbours; its
    ``span`` then names the groups (numbers, inclusive) of the entry in ``spans`` that holds them.
    """

    cutoffs: list[float]
    bundles: list[str]
    pooled: list[dict[str, Any]]
    per_site: dict[str, list[dict[str, Any]]]
    #: ``{"pooled": [...], "per_site": {site: [...]}}``; each span: groups [first, last], n, observed, expected
    spans: dict[str, Any] = field(default_factory=lambda: {"pooled": [], "per_site": {}})

    def to_dict(self) -> dict[str, Any]:
        return {"cutoffs": self.cutoffs, "bundles": self.bundles, "pooled": self.pooled, "per_site": self.per_site,
                "spans": self.spans}


def federated_quantiles(fed: Federation, model: Any, outcome: str, probs: Sequence[float], dataset: Any = None,
                        sites: Sequence[str] | None = None, where: Mapping[str, Any] | None = None) -> np.ndarray:
    """Quantiles of the model's predicted risk over the pooled rows, from the sites' score blocks."""
    probs_arr = np.asarray(probs, dtype=float)
    if np.any((probs_arr <= 0) | (probs_arr >= 1)):
        raise ValueError("quantile levels must lie strictly between 0 and 1")
    res = fed.run("nordfed.eval.scores", {"dataset": dataset, "model": as_model(model), "outcome": outcome,
                                          "where": dict(where) if where else None}, sites)
    return score_hist.pooled_quantiles([r["blocks"]["all"] for r in res.values()], probs_arr)


def risk_groups(fed: Federation, model: Any, outcome: str, cutoffs: Sequence[float] | None = None,
                quantiles: Sequence[float] = (0.25, 0.5, 0.75), bundles: Sequence[str] | None = None,
                dataset: Any = None, sites: Sequence[str] | None = None,
                where: Mapping[str, Any] | None = None) -> RiskGroups:
    """Group rows (``where``: a subset, e.g. a test part) by predicted risk (fixed ``cutoffs`` or pooled
    ``quantiles``) and name each group's bundle."""
    if cutoffs is None:
        cuts = federated_quantiles(fed, model, outcome, quantiles, dataset, sites, where)
    else:
        cuts = np.asarray(cutoffs, dtype=float)
        if np.any(np.diff(cuts) <= 0) or np.any((cuts <= 0) | (cuts >= 1)):
            raise ValueError("cut-offs must be increasing probabilities strictly between 0 and 1")
    names = list(bundles) if bundles is not None else list(DEFAULT_BUNDLES[-(len(cuts) + 1):]) \
        if len(cuts) + 1 <= len(DEFAULT_BUNDLES) else [f"group {i + 1}" for i in range(len(cuts) + 1)]
    if len(names) != len(cuts) + 1:
        raise ValueError(f"{len(cuts)} cut-offs make {len(cuts) + 1} groups but {len(names)} bundles were given")
    params = {"dataset": dataset, "model": as_model(model), "outcome": outcome, "cutoffs": cuts,
              "where": dict(where) if where else None}
    res = fed.run("nordfed.eval.groups", params, sites)
    bounds = [0.0, *map(float, cuts), 1.0]

    def label(table: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> tuple[list[dict[str, Any]], list]:
        rows, spans = table  # positions → group numbers, as in "group"
        out = [{"group": i + 1, "bundle": names[i], "risk_from": bounds[i], "risk_to": bounds[i + 1],
                **row, "span": None if row["span"] is None else [j + 1 for j in row["span"]]}
               for i, row in enumerate(rows)]
        return out, [{**s, "groups": [a + 1, b + 1], "risk_from": bounds[a], "risk_to": bounds[b + 1]}
                     for s in spans for a, b in [s["groups"]]]

    pooled, pooled_spans = label(pooled_table([r["groups"] for r in res.values()],
                                              [r["spans"] for r in res.values()]))
    for span in pooled_spans:  # every site over the same merged groups: exact, from what it released
        a, b = span["groups"][0] - 1, span["groups"][1] - 1
        span["per_site"] = {s: {k: v for k, v in span_sums(a, b, [r["groups"]], [r["spans"]]).items() if k != "groups"}
                            for s, r in res.items()}
    per_site, site_spans = {}, {}
    for s, r in res.items():
        per_site[s], site_spans[s] = label(pooled_table([r["groups"]], [r["spans"]]))
    return RiskGroups(cutoffs=[float(c) for c in cuts], bundles=names, pooled=pooled, per_site=per_site,
                      spans={"pooled": pooled_spans, "per_site": site_spans})
