"""Ground-truth model variables: what each one means, its coefficient, and how it appears in the CDM.

A variable's feature is computed from the CDM exactly as OHDSI FeatureExtraction would see it around the index
date: binary presence of a concept (with descendants) in a window of days relative to the index date, or the value
of a measurement in a window, converted to the model unit and transformed. The outcome models are logistic in these
features, so a model fitted on features extracted from the CDM can recover the coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nordfed.synth import vocabulary as v
from nordfed.synth.profiles import LAB_MODEL_UNITS, SITES, site_unit

_TABLE_DOMAIN = {"condition_occurrence": "Condition", "drug_exposure": "Drug", "measurement": "Measurement",
                 "observation": "Observation", "procedure_occurrence": "Procedure", "visit_occurrence": "Visit",
                 "person": "Person"}
_DATE_FIELD = {"condition_occurrence": "condition_start_date", "drug_exposure": "drug_exposure_start_date",
               "measurement": "measurement_date", "observation": "observation_date",
               "procedure_occurrence": "procedure_date", "visit_occurrence": "visit_start_date"}
_CONCEPT_FIELD = {"condition_occurrence": "condition_concept_id", "drug_exposure": "drug_concept_id",
                  "measurement": "measurement_concept_id", "observation": "observation_concept_id",
                  "procedure_occurrence": "procedure_concept_id", "visit_occurrence": "visit_concept_id"}


@dataclass(frozen=True)
class Var:
    """One term of a ground-truth logistic model."""

    name: str
    beta: float
    table: str
    concept_ids: tuple[int, ...] = ()
    window: tuple[int, int] | None = None
    kind: str = "binary"  # binary | value | age | male
    center: float = 0.0
    scale: float = 1.0
    log: bool = False
    descendants: bool = True
    description: str = ""

    def term(self, x: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """The feature value entering the linear predictor (model-unit ``x``; absent values give 0)."""
        x = np.asarray(x, dtype=float)
        if self.kind in ("binary", "male"):
            return x
        if self.kind == "age":
            return (x - self.center) / self.scale
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.log(x / self.center) if self.log else (x - self.center)) / self.scale
        return np.where(present, z, 0.0) if present is not None else z

    def formula(self) -> str:
        if self.kind in ("binary", "male"):
            return "1 if present else 0"
        if self.kind == "age":
            return f"(age_years - {self.center:g}) / {self.scale:g}"
        inner = f"ln(value / {self.center:g})" if self.log else f"(value - {self.center:g})"
        return f"{inner} / {self.scale:g}; 0 when no value in the window"

    def describe(self) -> dict:
        out: dict = {"name": self.name, "beta": self.beta, "description": self.description,
                     "domain": _TABLE_DOMAIN[self.table], "table": self.table, "feature": self.formula()}
        if self.kind in ("age", "value"):
            out["transform"] = {"center": self.center, "scale": self.scale, "log": self.log}
        if self.kind == "age":
            out.update(field="year_of_birth", how="age_years = year(index_date) - year_of_birth")
            return out
        if self.kind == "male":
            out.update(field="gender_concept_id", concept_ids=[v.GENDER_MALE],
                       how=f"1 if gender_concept_id = {v.GENDER_MALE} (MALE) else 0")
            return out
        out.update(
            concept_field=_CONCEPT_FIELD[self.table], date_field=_DATE_FIELD[self.table],
            concept_ids=list(self.concept_ids), concept_names=[v.concept_name(c) for c in self.concept_ids],
            include_descendants=self.descendants,
            window_days=list(self.window) if self.window else None,
            type="binary presence" if self.kind == "binary" else "measurement value",
        )
        lo, hi = self.window or (0, 0)
        if self.kind == "binary":
            out["how"] = (f"1 if any {self.table} row with {_CONCEPT_FIELD[self.table]} in the concept set"
                          f"{' (with descendants)' if self.descendants else ''} has {_DATE_FIELD[self.table]} "
                          f"between index_date{lo:+d} and index_date{hi:+d} days, else 0")
        else:
            concept = self.concept_ids[0]
            unit, code, _lo, _hi = LAB_MODEL_UNITS[concept]
            out["how"] = (f"value_as_number of the latest {v.concept_name(concept)} measurement between "
                          f"index_date{lo:+d} and index_date{hi:+d} days, converted to {code}")
            out["unit"] = {"unit_concept_id": unit, "unit": code}
            out["site_units"] = {s: {"unit_concept_id": site_unit(concept, s)[0], "unit": site_unit(concept, s)[1],
                                     "to_model_unit_factor": site_unit(concept, s)[2]} for s in SITES}
        return out


def linear_predictor(variables: list[Var], intercept: float, terms: dict[str, np.ndarray]) -> np.ndarray:
    lp = np.full(len(next(iter(terms.values()))), intercept, dtype=float)
    for var in variables:
        lp += var.beta * terms[var.name]
    return lp


def auroc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve (Mann-Whitney), None when one class is empty."""
    y = np.asarray(y, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = np.asarray(score)[order]
    # average ranks for ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
