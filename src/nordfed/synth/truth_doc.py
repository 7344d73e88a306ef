"""The ground-truth document of a site (JSON-able): cohort definitions, outcome models with every variable's
coefficient and CDM representation, realised cohort sizes, event rates and discrimination, and planted defects."""

from __future__ import annotations

import numpy as np
import pandas as pd

from nordfed.synth import cll, crc, defects
from nordfed.synth import vocabulary as v
from nordfed.synth.profiles import SiteProfile
from nordfed.synth.truth import Var, auroc

TRUTH_VERSION = 1


def _concept_set(concept: int) -> dict:
    return {"concept_id": concept, "concept_name": v.concept_name(concept), "include_descendants": True}


def _model(variables: list[Var], intercept: float, base: float, offset: float) -> dict:
    return {"type": "logistic", "intercept": intercept, "base_intercept": base, "site_offset": offset,
            "variables": [var.describe() for var in variables]}


def _stats(df: pd.DataFrame, outcome: str, lp: str) -> dict:
    n = len(df)
    events = int(df[outcome].sum()) if n else 0
    return {"events": events, "event_rate": round(events / n, 6) if n else None,
            "auroc_true_lp": None if n == 0 else auroc(df[outcome].to_numpy(), df[lp].to_numpy())}


def _missingness(df: pd.DataFrame, names: list[str]) -> dict:
    return {name: (round(float(df[f"{name}_value"].isna().mean()), 6) if len(df) else None) for name in names}


def build_truth(prof: SiteProfile, persons: int, seed: int, cohorts: dict[str, pd.DataFrame],
                defect_counts: list) -> dict:
    crc_df, cll_df = cohorts["crc_surgery"], cohorts["cll"]
    crc_stats = _stats(crc_df, "outcome", "lp")
    crc_doc = {
        "description": "Curative-intent colorectal cancer resection; 1-year all-cause mortality after surgery.",
        "definition": {
            "entry": "first procedure_occurrence in the resection concept set, with a condition_occurrence in the "
                     "colorectal cancer concept set between 90 days before and the day of the procedure",
            "index_date": "procedure_date of that resection",
            "condition_concept_set": [_concept_set(crc.COHORT_CONCEPTS["condition"])],
            "procedure_concept_set": [_concept_set(crc.COHORT_CONCEPTS["procedure"])],
            "prior_observation_days": 365,
            "follow_up": "every cohort person is observed 365 days after the index date or until death",
        },
        "outcome": {"name": "death_365d", "table": "death", "field": "death_date",
                    "definition": "death_date - index_date between 0 and 365 days", "window_days": [0, 365]},
        "model": _model(crc.VARIABLES, crc.INTERCEPT + prof.crc_offset, crc.INTERCEPT, prof.crc_offset),
        "size": len(crc_df),
        **crc_stats,
        "mean_predicted_risk": round(float(crc_df["p"].mean()), 6) if len(crc_df) else None,
        "lab_missingness": _missingness(crc_df, [lab.name for lab, _ in crc.LABS]),
        "stage_distribution": {name: int((crc_df["stage"] == s).sum()) if len(crc_df) else 0
                               for s, name in enumerate(("I", "II", "III", "IV"), start=1)},
    }
    treated = cll_df["treatment"] if len(cll_df) else pd.Series(dtype=int)
    cll_doc = {
        "description": "Chronic lymphocytic leukaemia from diagnosis; serious infection and treatment need "
                       "within two years.",
        "definition": {
            "entry": "first condition_occurrence in the CLL concept set",
            "index_date": "condition_start_date of that diagnosis",
            "condition_concept_set": [_concept_set(v.CLL)],
            "prior_observation_days": 365,
            "follow_up": "every cohort person is observed at least 730 days after the index date",
        },
        "outcome": {
            "name": "serious_infection_730d", "table": "condition_occurrence", "field": "condition_start_date",
            "concept_set": [_concept_set(c) for c in cll.INFECTION_CONCEPTS],
            "definition": "a condition in the infection concept set starting 1..730 days after the index date "
                          "(recorded during an inpatient visit)",
            "window_days": list(cll.OUTCOME_WINDOW)},
        "model": _model(cll.VARIABLES, cll.INFECTION_INTERCEPT + prof.cll_offset, cll.INFECTION_INTERCEPT,
                        prof.cll_offset),
        "size": len(cll_df),
        **_stats(cll_df, "outcome", "lp"),
        "lab_missingness": _missingness(cll_df, [lab.name for lab, _m, _b in cll.LABS]),
        "treatment": {
            "outcome": {"name": "treatment_start_730d", "table": "drug_exposure", "field": "drug_exposure_start_date",
                        "concept_set": [_concept_set(c) for c in cll.TREATMENT_CONCEPTS],
                        "definition": "first drug exposure in the concept set 1..730 days after the index date",
                        "window_days": list(cll.OUTCOME_WINDOW)},
            "model": _model(cll.TREATMENT_VARIABLES, cll.TREATMENT_INTERCEPT, cll.TREATMENT_INTERCEPT, 0.0),
            "events": int(treated.sum()),
            "event_rate": round(float(treated.mean()), 6) if len(cll_df) else None,
            "auroc_true_lp": (auroc(cll_df["treatment"].to_numpy(), cll_df["treatment_lp"].to_numpy())
                              if len(cll_df) else None),
        },
    }
    return {
        "truth_version": TRUTH_VERSION,
        "generator": "nordfed.synth",
        "site": prof.code,
        "site_name": prof.name,
        "persons": persons,
        "seed": seed,
        "data_window": [prof.data_start.isoformat(), prof.data_end.isoformat()],
        "feature_conventions": {
            "index_date": "day 0; windows are inclusive day offsets [start, end] relative to it",
            "binary": "1 if any record of the concept set (with descendants via concept_ancestor) starts in the window",
            "value": "value_as_number of the latest record in the window, times the site's to_model_unit_factor",
            "age": "year(index_date) - person.year_of_birth",
        },
        "site_profile": {
            "male_share": prof.male_share, "age_band_weights": dict(zip(
                ["0-17", "18-39", "40-59", "60-74", "75-99"], prof.age_weights, strict=True)),
            "crc_share_target": prof.crc_share, "cll_share_target": prof.cll_share,
            "laparoscopic_share": prof.laparoscopic_share, "lab_missing_scale": prof.lab_missing_scale,
            "coding_habits": {v.concept_name(k): [[v.concept_name(c), w] for c, w in opts]
                              for k, opts in prof.coding.items()},
        },
        "cohorts": {"crc_surgery": crc_doc, "cll": cll_doc},
        "dq_defects": defects.summarise(defect_counts),
    }


def jsonable(obj: object) -> object:
    """Convert numpy scalars inside ``obj`` (json.dumps default hook)."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
