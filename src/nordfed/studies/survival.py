"""The survival study runner: cohort → attrition → Kaplan-Meier by group (log-rank) and by site → Cox model.

The analysis table is the registered ``survival`` dataset (:mod:`nordfed.studies.partials`). Per-time counts
follow the sites' survival disclosure rule (:mod:`nordfed.fed.survival_data`): exact times need
``exact_event_times`` in the site policy, otherwise ``disclosure.time_grid_days`` coarsens them; a pooled Cox
model needs exact times, a Cox model stratified by site does not.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from nordfed.fed.cox import concordance_note, fit_cox
from nordfed.fed.km import KMCurve, fit_km
from nordfed.fed.protocol import Federation
from nordfed.studies.partials import _MINIMAL_COVARIATES
from nordfed.studies.plp import pool_attrition, study_params
from nordfed.studies.spec import SurvivalStudy

Step = Callable[[str], None]
STEPS = ("cohort", "attrition", "kaplan-meier", "cox")


def survival_dataset_spec(spec: SurvivalStudy) -> dict[str, Any]:
    """What every site builds: the study population with duration, event and the survival covariates."""
    return {**study_params(spec), "builder": "survival", "covariates": spec.covariates.model_dump()}


def cox_columns(spec: SurvivalStudy) -> list[str]:
    """Dataset columns of the Cox covariates: categorical ones become indicators of the non-reference levels."""
    cols = []
    for name in spec.analysis.cox:
        cat = spec.covariates.categorical.get(name)
        if cat is None:
            cols.append(name)
            continue
        ref = cat.reference or next(iter(cat.levels))
        cols += [f"{name}_{label}" for label in cat.levels if label != ref]
    return cols


def at_risk_at(curve: KMCurve | dict[str, Any], times: Sequence[float], n: int | None,
               min_cell_count: int) -> list[int | None]:
    """Numbers at risk at ``times`` read from a curve (at the first event time on or after each time, or ``n``
    at time 0); counts below the minimum cell count are withheld (None)."""
    c = curve if isinstance(curve, dict) else asdict(curve)
    t = np.asarray(c["times"], float)
    at = np.asarray(c["at_risk"], float)
    out: list[int | None] = []
    for x in times:
        if x <= 0 and n is not None:
            v = n
        else:
            i = int(np.searchsorted(t, x, side="left"))
            # past the last event time: those still at risk just after it (an upper bound)
            v = int(at[i]) if i < len(t) else int(at[-1] - np.asarray(c["events"], float)[-1]) if len(t) else 0
        out.append(None if 0 < v < min_cell_count else int(v))
    return out


def run_survival(spec: SurvivalStudy, fed: Federation, step: Step | None = None) -> dict[str, Any]:
    """Run the survival study on ``fed``; returns a JSON-able dict of every number."""
    def tick(name: str) -> None:
        if step:
            step(name)

    dataset = survival_dataset_spec(spec)
    out: dict[str, Any] = {"study": spec.name, "kind": "survival", "description": spec.description,
                           "sites": list(fed.sites), "settings": json.loads(spec.model_dump_json()), "notes": []}
    tick("cohort")
    inst = fed.run("nordfed.cohorts.instantiate", dataset["target"])
    out["cohort"] = {s: {k: r[k] for k in ("entries", "persons", "attrition")} for s, r in inst.items()}
    tick("attrition")
    att = fed.run("nordfed.studies.attrition", {**dataset, "covariates": _MINIMAL_COVARIATES})
    per_site = {s: r["steps"] for s, r in att.items()}
    out["attrition"] = {"pooled": pool_attrition(per_site), "per_site": per_site}
    out["min_cell_count"] = {s: r.get("min_cell_count") for s, r in att.items()}
    tick("kaplan-meier")
    grid = spec.disclosure.time_grid_days
    a = spec.analysis
    km = fit_km(fed, duration="duration", event="event", group=a.km_by, dataset=dataset, time_grid=grid)
    overall = asdict(km)
    out["km"] = {"pooled": {k: overall[k] for k in ("times", "survival", "ci_lower", "ci_upper", "at_risk", "events")},
                 "n": km.n, "time_grid": grid, "logrank": km.logrank, "group": a.km_by,
                 "by_group": {g: c.to_dict() for g, c in km.by_group.items()},
                 "per_site": {s: c.to_dict() for s, c in km.per_site.items()}}
    m = max([spec.disclosure.min_cell_count, *(v for v in out["min_cell_count"].values() if v)])
    out["at_risk_times"] = list(a.at_risk_times)
    out["at_risk_by_group"] = {g: at_risk_at(c, a.at_risk_times, None, m) for g, c in km.by_group.items()}
    out["at_risk_by_site"] = {s: at_risk_at(c, a.at_risk_times, None, m) for s, c in km.per_site.items()}
    if grid:
        out["notes"].append(f"Times rounded up to multiples of {grid} days before release (disclosure control).")
    tick("cox")
    if a.cox:
        cox = fit_cox(fed, duration="duration", event="event", covariates=cox_columns(spec), ties=a.ties,
                      strata_by_site=a.strata_by_site, dataset=dataset)
        out["cox"] = cox.to_dict()
        if a.strata_by_site:
            out["notes"].append("Cox model stratified by site (each site its own baseline hazard).")
        if cox.n < km.n:
            out["notes"].append(f"The Cox model uses {cox.n:,} of the {km.n:,} persons: the others lack a value of "
                                "one of its covariates.")
        note = concordance_note(cox)
        if note:
            out["notes"].append(note)
    return out
