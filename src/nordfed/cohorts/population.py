"""Study population and time-at-risk, following PatientLevelPrediction's ``createStudyPopulation``.

:func:`create_study_population` is a pure function of the target cohort entries (with their observation
period) and the outcome dates; :func:`population_inputs` reads both from a site's CDM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from nordfed.omop.store import CDM

ANCHORS = ("cohort start", "cohort end")


@dataclass(frozen=True)
class PopulationSettings:
    """PLP's population settings (same defaults); ``from_dict`` also takes PLP's camelCase names."""

    washout_period: int = 0
    first_exposure_only: bool = False
    remove_subjects_with_prior_outcome: bool = True
    prior_outcome_lookback: int = 99999
    require_time_at_risk: bool = True
    min_time_at_risk: int = 364
    risk_window_start: int = 1
    start_anchor: str = "cohort start"
    risk_window_end: int = 365
    end_anchor: str = "cohort start"
    include_all_outcomes: bool = True

    def __post_init__(self) -> None:
        for name in ("start_anchor", "end_anchor"):
            if getattr(self, name) not in ANCHORS:
                raise ValueError(f"population setting {name} must be one of {ANCHORS}, got {getattr(self, name)!r}")
        if self.washout_period < 0 or self.prior_outcome_lookback < 0 or self.min_time_at_risk < 0:
            raise ValueError("population settings washout_period, prior_outcome_lookback and min_time_at_risk "
                             "must not be negative")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> PopulationSettings:
        if not d:
            return cls()
        names = {f.name for f in fields(cls)}
        camel = {"".join(w.capitalize() if i else w for i, w in enumerate(n.split("_"))): n for n in names}
        out = {}
        for key, value in d.items():
            name = key if key in names else camel.get(key)
            if name is None:
                raise ValueError(f"unknown population setting {key!r}; known: {', '.join(sorted(names))}")
            out[name] = value
        return cls(**out)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def create_study_population(
    cohort: pd.DataFrame, outcomes: pd.DataFrame, settings: PopulationSettings | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply PLP's study-population rules.

    ``cohort``: one row per target entry with ``subject_id, cohort_start_date, cohort_end_date,
    observation_period_start_date, observation_period_end_date`` (the period containing the start).
    ``outcomes``: ``subject_id, outcome_date``. Returns ``(population, attrition)``: the population has
    ``row_id, subject_id, cohort_start_date, tar_start, tar_end, time_at_risk, outcome_count, outcome,
    days_to_event`` (days relative to cohort start); attrition has ``step, rows, persons, outcomes``.
    """
    s = settings or PopulationSettings()
    pop = cohort.copy()
    for col in ("cohort_start_date", "cohort_end_date", "observation_period_start_date",
                "observation_period_end_date"):
        pop[col] = pd.to_datetime(pop[col])
    pop = pop.sort_values(["subject_id", "cohort_start_date"], kind="stable").reset_index(drop=True)
    start = pop["cohort_start_date"]
    pop["days_from_obs_start"] = (start - pop["observation_period_start_date"]).dt.days
    pop["days_to_cohort_end"] = (pop["cohort_end_date"] - start).dt.days
    pop["days_to_obs_end"] = (pop["observation_period_end_date"] - start).dt.days
    pop["tar_start"] = s.risk_window_start + (pop["days_to_cohort_end"] if s.start_anchor == "cohort end" else 0)
    tar_end = s.risk_window_end + (pop["days_to_cohort_end"] if s.end_anchor == "cohort end" else 0)
    pop["tar_end"] = np.minimum(tar_end, pop["days_to_obs_end"])
    pop["time_at_risk"] = pop["tar_end"] - pop["tar_start"] + 1

    # outcomes relative to each entry (an outcome may relate to several entries of one person)
    out = outcomes[["subject_id", "outcome_date"]].copy()
    out["outcome_date"] = pd.to_datetime(out["outcome_date"])
    pop["row_id"] = np.arange(1, len(pop) + 1, dtype=np.int64)
    pairs = pop[["row_id", "subject_id", "cohort_start_date", "tar_start", "tar_end"]].merge(out, on="subject_id")
    pairs["days"] = (pairs["outcome_date"] - pairs["cohort_start_date"]).dt.days
    in_tar = pairs[(pairs["days"] >= pairs["tar_start"]) & (pairs["days"] <= pairs["tar_end"])]
    counts = in_tar.groupby("row_id")["days"].agg(["size", "min"])
    pop["outcome_count"] = pop["row_id"].map(counts["size"]).fillna(0).astype(int)
    pop["days_to_event"] = pop["row_id"].map(counts["min"])
    pop["outcome"] = (pop["outcome_count"] > 0).astype(int)
    prior = pairs[(pairs["days"] > -s.prior_outcome_lookback) & (pairs["days"] < pairs["tar_start"])]

    attrition: list[dict[str, Any]] = []

    def step(name: str) -> None:
        attrition.append({"step": name, "rows": len(pop), "persons": int(pop["subject_id"].nunique()),
                          "outcomes": int(pop["outcome"].sum())})

    step("original cohort")
    if s.first_exposure_only:
        pop = pop.drop_duplicates("subject_id", keep="first")
        step("first exposure only")
    if s.washout_period:
        pop = pop[pop["days_from_obs_start"] >= s.washout_period]
        step(f"at least {s.washout_period} days of prior observation")
    if s.remove_subjects_with_prior_outcome:
        pop = pop[~pop["row_id"].isin(prior["row_id"])]
        step("no prior outcome")
    if s.require_time_at_risk:
        enough = pop["time_at_risk"] >= s.min_time_at_risk
        if s.include_all_outcomes:
            pop = pop[enough | (pop["outcome"] == 1)]
            step(f"at least {s.min_time_at_risk} days at risk unless the outcome occurred")
        else:
            pop = pop[enough]
            step(f"at least {s.min_time_at_risk} days at risk")
    cols = ["row_id", "subject_id", "cohort_start_date", "cohort_end_date", "days_from_obs_start", "days_to_obs_end",
            "tar_start", "tar_end", "time_at_risk", "outcome_count", "outcome", "days_to_event"]
    return pop[cols].reset_index(drop=True), pd.DataFrame(attrition)


def population_inputs(cdm: CDM, target_id: int, outcome: dict[str, Any] | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Target entries with their observation period, and outcome dates of the same persons.

    ``outcome`` is ``"death"`` (the death table) or ``{"cohort_definition_id": id}`` (an instantiated
    outcome cohort; its start dates are the outcome dates).
    """
    table = cdm.cohort_table
    cohort = cdm.query(
        "SELECT c.subject_id, c.cohort_start_date, c.cohort_end_date, op.observation_period_start_date, "
        f"op.observation_period_end_date FROM {table} c JOIN observation_period op ON op.person_id = c.subject_id "
        "AND c.cohort_start_date >= op.observation_period_start_date "
        "AND c.cohort_start_date <= op.observation_period_end_date "
        "WHERE c.cohort_definition_id = :t ORDER BY c.subject_id, c.cohort_start_date",
        {"t": int(target_id)},
    )
    if outcome == "death" or (isinstance(outcome, dict) and outcome.get("type") == "death"):
        sql = ("SELECT d.person_id AS subject_id, d.death_date AS outcome_date FROM death d "
               f"WHERE d.person_id IN (SELECT subject_id FROM {table} WHERE cohort_definition_id = :t)")
        outcomes = cdm.query(sql, {"t": int(target_id)})
    elif isinstance(outcome, dict) and "cohort_definition_id" in outcome:
        outcomes = cdm.query(
            f"SELECT o.subject_id, o.cohort_start_date AS outcome_date FROM {table} o "
            "WHERE o.cohort_definition_id = :o AND o.subject_id IN "
            f"(SELECT subject_id FROM {table} WHERE cohort_definition_id = :t)",
            {"o": int(outcome["cohort_definition_id"]), "t": int(target_id)},
        )
    else:
        raise ValueError(f"outcome must be 'death' or {{'cohort_definition_id': id}}, got {outcome!r}")
    return cohort, outcomes
