"""The ``plp`` dataset: target cohort + outcome + population settings + covariates → one row per person.

Partials read it with ``data.frame({"builder": "plp", ...})``. Parameters:

- ``target``: Circe JSON (dict or text), a bundled cohort name, or ``{"definition": .., "cohort_definition_id": n}``;
  an integer names a cohort already instantiated at the node.
- ``outcome``: ``"death"``, ``{"cohort_definition_id": n}`` or ``{"definition": .., "cohort_definition_id": n}``.
- ``population``: PLP population settings; ``covariates``: :class:`CovariateSettings` fields.
- ``covariate_ids``: the global covariate set (columns, in order); ``max_values``: global maxima to normalise by.
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import pandas as pd

from nordfed.cohorts.instantiate import instantiate
from nordfed.cohorts.population import PopulationSettings, create_study_population, population_inputs
from nordfed.features.covariates import CovariateData, CovariateSettings, extract_covariates
from nordfed.fed.protocol import dataset
from nordfed.omop.store import CDM

_CACHE: OrderedDict[tuple[int, str, str], tuple[pd.DataFrame, pd.DataFrame, CovariateData]] = OrderedDict()
_FRAMES: OrderedDict[tuple[int, str, str], pd.DataFrame] = OrderedDict()
_CACHE_SIZE = 4


def _definition_id(definition: Any) -> int:
    """A stable cohort_definition_id for an inline definition (so sites agree without coordination)."""
    text = json.dumps(definition, sort_keys=True) if not isinstance(definition, str) else definition
    return 1_000_000 + zlib.crc32(text.encode("utf-8")) % 1_000_000_000


def _cohort_id(cdm: CDM, spec: Any, what: str) -> int:
    """Instantiate ``spec`` where it carries a definition; return its cohort_definition_id."""
    if isinstance(spec, bool):
        raise ValueError(f"plp parameter {what!r}: expected a cohort, got {spec!r}")
    if isinstance(spec, int):
        return spec
    if isinstance(spec, dict) and "definition" in spec:
        cid = int(spec.get("cohort_definition_id") or _definition_id(spec["definition"]))
        instantiate(cdm, spec["definition"], cid)
        return cid
    if isinstance(spec, dict) and "cohort_definition_id" in spec:
        return int(spec["cohort_definition_id"])
    cid = _definition_id(spec)
    instantiate(cdm, spec, cid)
    return cid


@dataclass
class StudyData:
    population: pd.DataFrame
    attrition: pd.DataFrame
    covariates: CovariateData


def _key(cdm: CDM, params: dict[str, Any], fields: tuple[str, ...]) -> tuple[int, str, str]:
    keyed = {k: params.get(k) for k in fields}
    return id(cdm), cdm.url, json.dumps(keyed, sort_keys=True, default=str)


def study_data(cdm: CDM, params: dict[str, Any]) -> StudyData:
    """Instantiate cohorts, build the study population and extract its covariates (cached per CDM and params)."""
    key = _key(cdm, params, ("target", "outcome", "population", "covariates"))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return StudyData(*_CACHE[key])
    if "target" not in params:
        raise ValueError("plp dataset needs a 'target' cohort")
    target_id = _cohort_id(cdm, params["target"], "target")
    outcome = params.get("outcome", "death")
    if outcome != "death" and not (isinstance(outcome, dict) and outcome.get("type") == "death"):
        outcome = {"cohort_definition_id": _cohort_id(cdm, outcome, "outcome")}
    cohort, outcomes = population_inputs(cdm, target_id, outcome)
    population, attrition = create_study_population(
        cohort, outcomes, PopulationSettings.from_dict(params.get("population")))
    covariates = extract_covariates(cdm, population, CovariateSettings.from_dict(params.get("covariates")))
    _CACHE[key] = (population, attrition, covariates)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return StudyData(population, attrition, covariates)


def design_frame(study: StudyData, covariate_ids: list[int] | None = None,
                 max_values: dict[int, float] | None = None) -> pd.DataFrame:
    """One row per population row: ids, index date, outcome and time at risk, then covariate columns (by id)."""
    cov = study.covariates if covariate_ids is None else study.covariates.select(covariate_ids)
    if max_values:
        cov = cov.normalized({int(k): float(v) for k, v in max_values.items() if v})
    pop = study.population.set_index("row_id").loc[cov.row_ids]
    head = pd.DataFrame({
        "row_id": cov.row_ids,
        "subject_id": pop["subject_id"].to_numpy(),
        "index_date": pop["cohort_start_date"].to_numpy(),
        "outcome": pop["outcome"].to_numpy(),
        "time_at_risk": pop["time_at_risk"].to_numpy(),
        "days_to_event": pop["days_to_event"].to_numpy(),
    })
    # no covariate_ref or attrition in frame.attrs: pandas deep-copies attrs into every frame derived from this
    # one, and a fit's rounds derive thousands (2.5 s of a 16 s CRC model fit)
    return pd.concat([head, cov.to_frame().reset_index(drop=True)], axis=1)


@dataset("plp")
def plp_dataset(cdm: CDM, params: dict[str, Any]) -> pd.DataFrame:
    """The patient-level prediction table for a site (see the module docstring for ``params``)."""
    # a fit asks for the same table every round: built once (partials only read it, as they do the tables a
    # simulation hands to sites)
    key = _key(cdm, params, ("target", "outcome", "population", "covariates", "covariate_ids", "max_values"))
    if key in _FRAMES:
        _FRAMES.move_to_end(key)
        return _FRAMES[key]
    frame = design_frame(study_data(cdm, params), params.get("covariate_ids"), params.get("max_values"))
    _FRAMES[key] = frame
    while len(_FRAMES) > _CACHE_SIZE:
        _FRAMES.popitem(last=False)
    return frame
