"""Node-side parts of the ready-made studies: the study datasets and the population attrition partial.

- dataset ``study``: the ``plp`` dataset plus ``age`` (years at index) and ``sex`` for the demographic tables,
  and, for synthetic sites whose ground truth lies beside the CDM, ``truth_lp`` (the generating model's
  linear predictor of each person) and ``truth:<variable>`` (each model term), from
  ``<stem>.truth_<cohort>.parquet``.
- dataset ``survival``: the study population with ``duration`` (days from index to the outcome or the end of
  the time at risk),
  ``event``, ``age``, ``male``, categorical covariates (label and 0/1 indicators) and measurement values.
- ``nordfed.studies.attrition``: the study population's attrition, counts below the minimum cell withheld.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nordfed.features.covariates import covariate_ref
from nordfed.features.design import plp_dataset, study_data
from nordfed.fed.protocol import SiteData, algorithm, dataset
from nordfed.omop.store import CDM, CDMError
from nordfed.privacy.disclosure import require_min_rows, suppress_steps

TRUTH_COLUMN = "truth_lp"
_CACHE: OrderedDict[tuple[int, str, str], pd.DataFrame] = OrderedDict()
_CACHE_SIZE = 4
_DOMAINS = {"measurement": ("measurement_concept_id", "measurement_date"),
            "condition_occurrence": ("condition_concept_id", "condition_start_date"),
            "observation": ("observation_concept_id", "observation_date")}


def _cached(cdm: CDM, name: str, params: dict[str, Any], build: Any) -> pd.DataFrame:
    # every federation round rebuilds the analysis table; the study's rows never change between rounds
    key = (id(cdm), f"{cdm.url}#{name}", json.dumps(params, sort_keys=True, default=str))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    frame = build()
    _CACHE[key] = frame
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return frame


def persons(cdm: CDM, subject_ids: np.ndarray) -> pd.DataFrame:
    """``subject_id, year_of_birth, gender_concept_id`` of the given persons (those in the person table)."""
    ids = ", ".join(str(int(s)) for s in np.unique(subject_ids)) or "NULL"
    return cdm.query(f"SELECT person_id AS subject_id, year_of_birth, gender_concept_id FROM person "
                     f"WHERE person_id IN ({ids})")


def truth_frame(cdm: CDM, cohort: str) -> pd.DataFrame | None:
    """The person-level ground truth written beside a synthetic DuckDB CDM (None when there is none)."""
    from nordfed.synth.writer import truth_path_for

    try:
        path = truth_path_for(cdm.url)
    except CDMError:
        return None
    if not path.exists():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    name = (doc.get("person_level_files") or {}).get(cohort)
    if not name or not (path.parent / name).exists():
        return None
    variables = [v["name"] for v in doc["cohorts"][cohort]["model"]["variables"]]
    return pd.read_parquet(Path(path.parent / name), columns=["person_id", "index_date", "lp", *variables])


def _study_frame(cdm: CDM, params: dict[str, Any]) -> pd.DataFrame:
    frame = plp_dataset(cdm, params)
    people = persons(cdm, frame["subject_id"].to_numpy()).set_index("subject_id")
    yob = people["year_of_birth"].reindex(frame["subject_id"]).to_numpy(dtype=float)
    gender = people["gender_concept_id"].reindex(frame["subject_id"]).to_numpy()
    extra = {"age": pd.to_datetime(frame["index_date"]).dt.year.to_numpy() - yob,
             "sex": np.where(gender == 8507, "male", np.where(gender == 8532, "female", "unknown"))}
    if params.get("truth"):
        truth = truth_frame(cdm, str(params["truth"]))
        if truth is None:
            extra[TRUTH_COLUMN] = np.full(len(frame), np.nan)
        else:
            key = pd.MultiIndex.from_arrays([truth["person_id"].to_numpy(), pd.to_datetime(truth["index_date"])])
            want = pd.MultiIndex.from_arrays([frame["subject_id"].to_numpy(), pd.to_datetime(frame["index_date"])])
            aligned = truth.drop(columns=["person_id", "index_date"]).set_axis(key).reindex(want)
            extra[TRUTH_COLUMN] = aligned["lp"].to_numpy(dtype=float)
            for col in aligned.columns.drop("lp"):
                extra[f"truth:{col}"] = aligned[col].to_numpy(dtype=float)
    return pd.concat([frame.reset_index(drop=True), pd.DataFrame(extra)], axis=1)


@dataset("study")
def study_dataset(cdm: CDM, params: dict[str, Any]) -> pd.DataFrame:
    """The ``plp`` table plus ``age``, ``sex`` and (``truth`` = cohort name, synthetic sites) ``truth_lp``."""
    return _cached(cdm, "study", params, lambda: _study_frame(cdm, params))


def _window_rows(cdm: CDM, domain: str, concept_ids: list[int], population: pd.DataFrame) -> pd.DataFrame:
    concept_col, date_col = _DOMAINS[domain]
    ids = ", ".join(str(int(c)) for c in concept_ids)
    value = ", value_as_number" if domain == "measurement" else ", CAST(NULL AS DOUBLE) AS value_as_number"
    subjects = ", ".join(str(int(s)) for s in population["subject_id"].unique()) or "NULL"
    rows = cdm.query(f"SELECT person_id AS subject_id, {concept_col} AS concept_id, {date_col} AS day{value} "
                     f"FROM {domain} WHERE {concept_col} IN ({ids}) AND person_id IN ({subjects})")
    rows["day"] = pd.to_datetime(rows["day"])
    merged = population[["row_id", "subject_id", "cohort_start_date"]].merge(rows, on="subject_id")
    merged["offset"] = (merged["day"] - pd.to_datetime(merged["cohort_start_date"])).dt.days
    return merged


def _latest_in(rows: pd.DataFrame, window: list[int] | tuple[int, int]) -> pd.DataFrame:
    inside = rows[(rows["offset"] >= window[0]) & (rows["offset"] <= window[1])]
    return inside.sort_values(["row_id", "offset"]).drop_duplicates("row_id", keep="last").set_index("row_id")


def _survival_frame(cdm: CDM, params: dict[str, Any], cov: dict[str, Any]) -> pd.DataFrame:
    pop = study_data(cdm, params).population
    event = pop["outcome"].to_numpy(dtype=int)
    # days after the index date: to the outcome, else to the end of the time at risk (censored)
    days = np.where(event == 1, pop["days_to_event"].to_numpy(dtype=float), pop["tar_end"].to_numpy(dtype=float))
    out = pd.DataFrame({"row_id": pop["row_id"].to_numpy(), "subject_id": pop["subject_id"].to_numpy(),
                        "index_date": pd.to_datetime(pop["cohort_start_date"]).to_numpy(),
                        "duration": np.maximum(days, 0.0), "event": event})
    people = persons(cdm, out["subject_id"].to_numpy()).set_index("subject_id")
    if cov.get("age", True):
        yob = people["year_of_birth"].reindex(out["subject_id"]).to_numpy(dtype=float)
        out["age"] = out["index_date"].dt.year.to_numpy() - yob
    if cov.get("sex", True):
        out["male"] = (people["gender_concept_id"].reindex(out["subject_id"]).to_numpy() == 8507).astype(float)
    for name, c in (cov.get("categorical") or {}).items():
        levels: dict[str, list[int]] = c["levels"]
        label_of = {int(cid): label for label, cids in levels.items() for cid in cids}
        rows = _window_rows(cdm, c.get("domain", "measurement"), list(label_of), pop)
        latest = _latest_in(rows, c.get("window", (-90, 0)))
        labels = latest["concept_id"].map(label_of).reindex(out["row_id"])
        out[name] = labels.to_numpy(dtype=object)
        ref = c.get("reference") or next(iter(levels))
        for label in levels:
            if label != ref:
                ind = (labels == label).astype(float).to_numpy()
                out[f"{name}_{label}"] = np.where(labels.isna().to_numpy(), np.nan, ind)
    for name, v in (cov.get("values") or {}).items():
        rows = _window_rows(cdm, "measurement", [int(v["concept_id"])], pop)
        latest = _latest_in(rows, v.get("window", (-30, 0)))
        out[name] = latest["value_as_number"].reindex(out["row_id"]).to_numpy(dtype=float)
    return out


#: the population of a survival study comes from study_data with the cheapest covariate set (gender only)
_MINIMAL_COVARIATES = {name: name == "gender" for name in (
    "gender", "age_group", "index_year", "index_month", "condition_long_term", "condition_short_term",
    "drug_group_long_term", "drug_group_short_term", "procedure_long_term", "procedure_short_term",
    "measurement_long_term", "measurement_short_term", "measurement_value_long_term", "observation_long_term",
    "observation_short_term", "charlson_index", "visit_concept_count_long_term", "visit_concept_count_short_term")}


@dataset("survival")
def survival_dataset(cdm: CDM, params: dict[str, Any]) -> pd.DataFrame:
    """One row per study-population entry: ``duration``, ``event`` and the requested covariates.

    params: as the ``plp`` dataset (``target``, ``outcome``, ``population``) plus ``covariates``:
    ``{age, sex, categorical: {name: {domain, window, levels: {label: [concept ids]}, reference}},
    values: {name: {concept_id, window}}}``. ``duration`` counts days from the index date.
    """
    keyed = {k: params.get(k) for k in ("target", "outcome", "population", "covariates")}
    base = {**keyed, "covariates": _MINIMAL_COVARIATES}
    return _cached(cdm, "survival", keyed, lambda: _survival_frame(cdm, base, keyed["covariates"] or {}))


@algorithm("nordfed.studies.attrition", version="1")
def attrition(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """The study population's attrition (PLP's steps), each count withheld below the minimum cell count."""
    if data.cdm is None:
        raise ValueError(f"site {data.site} has no CDM")
    table = study_data(data.cdm, params).attrition
    require_min_rows(int(table["rows"].iloc[0]) if len(table) else 0, data.policy, "target cohort entries")
    # what a step removed is the difference of two steps: each column is one chain (see suppress_steps)
    cols = {k: suppress_steps(table[k].astype(int).tolist(), data.policy) for k in ("rows", "persons", "outcomes")}
    return {"steps": [{"step": str(step), **{k: cols[k][i] for k in cols}}
                      for i, step in enumerate(table["step"])],
            # the rule the site applies (its node.yaml may raise it above the study's): the report states it
            "min_cell_count": data.policy.min_cell_count}


@algorithm("nordfed.studies.covariate_names", version="1")
def covariate_names(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Display names of covariate ids from the site's vocabulary (no patient data involved)."""
    if data.cdm is None:
        raise ValueError(f"site {data.site} has no CDM")
    ref = covariate_ref(data.cdm, np.asarray(params["covariate_ids"], dtype=np.int64))
    return {"names": {str(int(c)): str(n) for c, n in zip(ref["covariate_id"], ref["covariate_name"], strict=True)}}


@algorithm("nordfed.studies.duplicates", version="1")
def duplicates(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Groups of covariates whose columns are identical at this site (e.g. an ATC class and its only ingredient).

    Identical columns make the LASSO's Hessian singular; the client drops all but one of a group identical at
    every site. Only equality is released, and only for covariates present in at least the minimum cell count.
    """
    frame = data.frame(params["dataset"])
    require_min_rows(len(frame), data.policy, "rows")
    groups: dict[bytes, list[int]] = {}
    for c in params["dataset"]["covariate_ids"]:
        col = frame[str(c)].to_numpy(dtype=np.float64)
        if np.count_nonzero(col) < data.policy.min_cell_count:
            continue
        groups.setdefault(hashlib.sha256(np.ascontiguousarray(col).tobytes()).digest(), []).append(int(c))
    return {"groups": [g for g in groups.values() if len(g) > 1]}
