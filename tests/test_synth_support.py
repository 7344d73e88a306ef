"""Helpers for the synth tests: an independent SQL reading of a generated CDM, driven only by the truth JSON.

If the truth document says where a variable lives (table, concept set with descendants, window, unit factor),
these queries must reproduce the generator's own feature values — that is what makes the truth usable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nordfed.omop.store import CDM

_TABLE_PERSON = "person"


def crc_cohort_sql(truth: dict) -> str:
    d = truth["cohorts"]["crc_surgery"]["definition"]
    dx = d["condition_concept_set"][0]["concept_id"]
    rx = d["procedure_concept_set"][0]["concept_id"]
    days = d["prior_observation_days"]
    return f"""
        WITH dx AS (
            SELECT co.person_id, co.condition_start_date AS d FROM condition_occurrence co
            JOIN concept_ancestor ca ON ca.descendant_concept_id = co.condition_concept_id
            WHERE ca.ancestor_concept_id = {dx}),
        rx AS (
            SELECT po.person_id, po.procedure_date AS d FROM procedure_occurrence po
            JOIN concept_ancestor ca ON ca.descendant_concept_id = po.procedure_concept_id
            WHERE ca.ancestor_concept_id = {rx}),
        first_rx AS (
            SELECT rx.person_id, min(rx.d) AS index_date FROM rx
            WHERE EXISTS (SELECT 1 FROM dx WHERE dx.person_id = rx.person_id
                          AND dx.d BETWEEN rx.d - INTERVAL 90 DAY AND rx.d)
            GROUP BY rx.person_id)
        SELECT f.person_id, f.index_date FROM first_rx f
        JOIN observation_period op ON op.person_id = f.person_id
         AND f.index_date BETWEEN op.observation_period_start_date + INTERVAL {days} DAY
                              AND op.observation_period_end_date
        ORDER BY f.person_id"""


def cll_cohort_sql(truth: dict) -> str:
    d = truth["cohorts"]["cll"]["definition"]
    dx = d["condition_concept_set"][0]["concept_id"]
    return f"""
        WITH first_dx AS (
            SELECT co.person_id, min(co.condition_start_date) AS index_date FROM condition_occurrence co
            JOIN concept_ancestor ca ON ca.descendant_concept_id = co.condition_concept_id
            WHERE ca.ancestor_concept_id = {dx} GROUP BY co.person_id)
        SELECT f.person_id, f.index_date FROM first_dx f
        JOIN observation_period op ON op.person_id = f.person_id
         AND f.index_date >= op.observation_period_start_date + INTERVAL {d['prior_observation_days']} DAY
        ORDER BY f.person_id"""


def _register(cdm: CDM, cohort: pd.DataFrame) -> None:
    cdm.raw_connection.register("_cohort", cohort[["person_id", "index_date"]])


def _concepts(var: dict) -> str:
    ids = ", ".join(str(c) for c in var["concept_ids"])
    if var.get("include_descendants", True):
        return f"(SELECT descendant_concept_id FROM concept_ancestor WHERE ancestor_concept_id IN ({ids}))"
    return f"({ids})"


def extract_features(cdm: CDM, truth: dict, cohort_name: str, cohort: pd.DataFrame,
                     model: dict | None = None) -> pd.DataFrame:
    """One column per model variable, computed from the CDM as the truth document describes it."""
    model = model or truth["cohorts"][cohort_name]["model"]
    site = truth["site"]
    _register(cdm, cohort)
    out = pd.DataFrame({"person_id": cohort["person_id"].to_numpy()})
    for var in model["variables"]:
        name, table = var["name"], var["table"]
        if table == _TABLE_PERSON and "transform" in var:  # age
            t = var["transform"]
            df = cdm.query("SELECT c.person_id, year(c.index_date) - p.year_of_birth AS x FROM _cohort c "
                           "JOIN person p USING (person_id)")
            values = (df["x"] - t["center"]) / t["scale"]
        elif table == _TABLE_PERSON:  # male
            df = cdm.query(f"SELECT c.person_id, (p.gender_concept_id = {var['concept_ids'][0]})::INT AS x "
                           "FROM _cohort c JOIN person p USING (person_id)")
            values = df["x"].astype(float)
        else:
            lo, hi = var["window_days"]
            date, concept = var["date_field"], var["concept_field"]
            window = (f"t.{date} BETWEEN c.index_date + INTERVAL ({lo}) DAY AND c.index_date + INTERVAL ({hi}) DAY "
                      f"AND t.{concept} IN {_concepts(var)}")
            if var["type"] == "binary presence":
                df = cdm.query(f"SELECT c.person_id, (count(t.person_id) > 0)::INT AS x FROM _cohort c "
                               f"LEFT JOIN {table} t ON t.person_id = c.person_id AND {window} GROUP BY c.person_id")
                values = df["x"].astype(float)
            else:
                factor = var["site_units"][site]["to_model_unit_factor"]
                df = cdm.query(f"SELECT c.person_id, arg_max(t.value_as_number, t.{date}) AS x FROM _cohort c "
                               f"LEFT JOIN {table} t ON t.person_id = c.person_id AND {window} GROUP BY c.person_id")
                x = df["x"].astype(float) * factor
                t = var["transform"]
                z = (np.log(x / t["center"]) if t["log"] else x - t["center"]) / t["scale"]
                values = z.fillna(0.0)
        out[name] = pd.Series(values.to_numpy(), index=df["person_id"].to_numpy()).reindex(out["person_id"]).to_numpy()
    return out


def linear_predictor(model: dict, features: pd.DataFrame) -> np.ndarray:
    lp = np.full(len(features), model["intercept"], dtype=float)
    for var in model["variables"]:
        lp += var["beta"] * features[var["name"]].to_numpy()
    return lp


def death_within(cdm: CDM, cohort: pd.DataFrame, lo: int, hi: int) -> np.ndarray:
    _register(cdm, cohort)
    df = cdm.query(f"SELECT c.person_id, (count(d.person_id) > 0)::INT AS y FROM _cohort c LEFT JOIN death d "
                   f"ON d.person_id = c.person_id AND d.death_date BETWEEN c.index_date + INTERVAL ({lo}) DAY "
                   f"AND c.index_date + INTERVAL ({hi}) DAY GROUP BY c.person_id")
    return pd.Series(df["y"].to_numpy(), index=df["person_id"]).reindex(cohort["person_id"]).to_numpy()


def first_event_within(cdm: CDM, cohort: pd.DataFrame, outcome: dict) -> np.ndarray:
    """1 if an event of the outcome's concept set starts in its window (condition or drug tables)."""
    _register(cdm, cohort)
    lo, hi = outcome["window_days"]
    table, field = outcome["table"], outcome["field"]
    concept = "condition_concept_id" if table == "condition_occurrence" else "drug_concept_id"
    ids = ", ".join(str(c["concept_id"]) for c in outcome["concept_set"])
    df = cdm.query(f"SELECT c.person_id, (count(t.person_id) > 0)::INT AS y FROM _cohort c LEFT JOIN {table} t "
                   f"ON t.person_id = c.person_id AND t.{field} BETWEEN c.index_date + INTERVAL ({lo}) DAY "
                   f"AND c.index_date + INTERVAL ({hi}) DAY AND t.{concept} IN (SELECT descendant_concept_id "
                   f"FROM concept_ancestor WHERE ancestor_concept_id IN ({ids})) GROUP BY c.person_id")
    return pd.Series(df["y"].to_numpy(), index=df["person_id"]).reindex(cohort["person_id"]).to_numpy()
