"""Ground-truth comparison for synthetic sites: which generating risk factors the fitted model recovered.

The synthetic CRC model is logistic in documented features (truth JSON: each variable's beta, table,
concept ids with descendants, window). A FeatureExtraction-style model has different columns, so each truth
variable is matched to the covariates that carry it: covariates of the variable's domain whose concept is one
of its concepts or their descendants (presence analyses for binary variables, the measurement-value analysis
for lab values), the age-group covariates for age and the gender covariates for sex. The variable's fitted
*effect* is then

- binary: the sum of the matched coefficients (the logit change when the record is present; a visit type is
  matched by the visit concept counts, whose coefficients apply per visit, on the normalised scale);
- lab value: the sum of the matched value coefficients (the sign of the value's effect);
- age: the least-squares slope of the age-group coefficients on the group's middle age (per 10 years);
- male: coefficient of male minus coefficient of female (an absent covariate counts 0).

A variable is *recovered* when its effect is non-zero with the truth's sign; variables with no covariate
(e.g. the visit type when visit concept counts are off) are reported as not represented.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from nordfed.features import analyses as A
from nordfed.features.covariates import analysis_of, concept_of

_PRESENCE = {
    "condition_occurrence": (A.CONDITION_LONG, A.CONDITION_SHORT),
    "drug_exposure": (A.DRUG_GROUP_LONG, A.DRUG_GROUP_SHORT),
    "procedure_occurrence": (A.PROCEDURE_LONG, A.PROCEDURE_SHORT),
    "measurement": (A.MEASUREMENT_LONG, A.MEASUREMENT_SHORT),
    "observation": (A.OBSERVATION_LONG, A.OBSERVATION_SHORT),
    "visit_occurrence": (A.VISIT_CONCEPT_COUNT_LONG, A.VISIT_CONCEPT_COUNT_SHORT),
}
MALE, FEMALE = 8507, 8532


@lru_cache(maxsize=1)
def _descendants() -> dict[int, frozenset[int]]:
    from nordfed.synth.vocabulary import concept_ancestor_table

    ca = concept_ancestor_table()
    out: dict[int, set[int]] = {}
    for a, d in zip(ca["ancestor_concept_id"].tolist(), ca["descendant_concept_id"].tolist(), strict=True):
        out.setdefault(int(a), set()).add(int(d))
    return {k: frozenset(v) for k, v in out.items()}


def concept_set(concept_ids: list[int], descendants: bool = True) -> set[int]:
    out = {int(c) for c in concept_ids}
    if descendants:
        tree = _descendants()
        for c in list(out):
            out |= tree.get(c, frozenset())
    return out


def matching_covariates(var: dict[str, Any], covariate_ids: list[int]) -> list[int]:
    """The model's covariates that carry truth variable ``var`` (a truth JSON variable entry)."""
    ids = np.asarray(covariate_ids, dtype=np.int64)
    if ids.size == 0:
        return []
    analysis, concept = analysis_of(ids), concept_of(ids)
    if var.get("kind") == "age" or var.get("field") == "year_of_birth":
        mask = analysis == A.AGE_GROUP
    elif var.get("field") == "gender_concept_id":
        mask = (analysis == A.GENDER) & np.isin(concept, [MALE, FEMALE])
    elif var.get("table") == "measurement" and var.get("type") == "measurement value":
        mask = (analysis == A.MEASUREMENT_VALUE_LONG) & np.isin(concept, list(concept_set(var["concept_ids"])))
    elif var.get("table") in _PRESENCE:
        concepts = concept_set(var.get("concept_ids", []), var.get("include_descendants", True))
        mask = np.isin(analysis, _PRESENCE[var["table"]]) & np.isin(concept, list(concepts))
    else:
        mask = np.zeros(len(ids), bool)
    return [int(c) for c in ids[mask]]


def effect(var: dict[str, Any], coef: dict[int, float], matched: list[int], all_ids: list[int]) -> float | None:
    """The fitted effect of a truth variable (see the module docstring); None when not represented."""
    if var.get("field") == "year_of_birth":
        groups = [c for c in all_ids if int(analysis_of(np.array([c]))[0]) == A.AGE_GROUP]
        if len(groups) < 2:
            return None
        mid = np.array([5 * (c // 1000) + 2.5 for c in groups]) / 10.0
        b = np.array([coef.get(c, 0.0) for c in groups])
        return float(np.polyfit(mid, b, 1)[0])
    if var.get("field") == "gender_concept_id":
        if not matched and not any(int(analysis_of(np.array([c]))[0]) == A.GENDER for c in all_ids):
            return None
        return coef.get(MALE * 1000 + A.GENDER, 0.0) - coef.get(FEMALE * 1000 + A.GENDER, 0.0)
    if not matched:
        return None
    return float(sum(coef.get(c, 0.0) for c in matched))


@dataclass
class FactorRecovery:
    name: str
    beta: float
    effect: float | None
    covariates: list[int]
    status: str  # recovered | wrong sign | zero | not represented
    main: bool
    #: |beta| x SD of the variable's term in the study population: its weight on the logit scale
    importance: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_truth(path: Path, cohort: str = "crc_surgery") -> dict[str, Any]:
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return doc["cohorts"][cohort]


def recover(truth_model: dict[str, Any], model: dict[str, Any], candidate_ids: list[int],
            sds: dict[str, float], main_min_effect: float) -> list[FactorRecovery]:
    """Per truth variable: matched covariates, fitted effect and status. ``model`` names covariates by id text.

    ``candidate_ids`` is the global covariate set (including those removed as redundant, which count 0);
    ``sds`` the pooled SD of each truth term; a represented variable with |beta| x SD at least
    ``main_min_effect`` is a main risk factor.
    """
    coef = {int(c): float(b) for c, b in zip(model["covariates"], model["coef"], strict=True) if str(c).isdigit()}
    out = []
    for var in truth_model["variables"]:
        matched = matching_covariates(var, candidate_ids)
        eff = effect(var, coef, matched, candidate_ids)
        beta = float(var["beta"])
        if eff is None:
            status = "not represented"
        elif abs(eff) < 1e-12:
            status = "zero"
        elif np.sign(eff) == np.sign(beta) or beta == 0:
            status = "recovered"
        else:
            status = "wrong sign"
        sd = sds.get(var["name"])
        importance = None if sd is None else abs(beta) * sd
        out.append(FactorRecovery(var["name"], beta, eff, matched, status,
                                  main=importance is not None and importance >= main_min_effect and eff is not None,
                                  importance=importance))
    return out
