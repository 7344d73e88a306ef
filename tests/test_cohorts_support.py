"""Tiny hand-built CDMs for the cohort, population and feature tests (no tests here)."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

import pandas as pd

from nordfed.omop.schema import schema
from nordfed.omop.store import CDM, open_cdm

_ids = itertools.count(1)


def D(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


def add(cdm: CDM, table: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows, filling the CDM's required columns the test does not care about (ids, type concepts)."""
    if not rows:
        return
    t = schema()[table]
    full = []
    for r in rows:
        row = dict(r)
        for f in t.fields:
            if f.name in row or not f.required:
                continue
            if f.primary_key:
                row[f.name] = next(_ids)
            elif f.kind == "integer":
                row[f.name] = 0
            elif f.kind == "text":
                row[f.name] = "x"
            elif f.kind == "date" and f.name.endswith("end_date"):
                start = next(v for k, v in row.items() if k.endswith("start_date") or k.endswith("_date"))
                row[f.name] = start
        full.append(row)
    cdm.insert(table, pd.DataFrame(full))


def concept(cdm: CDM, concepts: dict[int, str], ancestors: list[tuple[int, int]] = (), domain: str = "Condition",
            vocabulary: str = "SNOMED", concept_class: str = "Clinical Finding",
            codes: dict[int, str] | None = None) -> None:
    """Concepts with names, and ancestor → descendant pairs (self pairs are added as OMOP does)."""
    add(cdm, "concept", [
        {"concept_id": c, "concept_name": n, "domain_id": domain, "vocabulary_id": vocabulary,
         "concept_class_id": concept_class, "concept_code": (codes or {}).get(c, str(c)),
         "valid_start_date": D("1970-01-01"), "valid_end_date": D("2099-12-31")}
        for c, n in concepts.items()
    ])
    pairs = set(ancestors) | {(c, c) for c in concepts}
    add(cdm, "concept_ancestor", [{"ancestor_concept_id": a, "descendant_concept_id": d,
                                   "min_levels_of_separation": int(a != d), "max_levels_of_separation": int(a != d)}
                                  for a, d in sorted(pairs)])


def person(cdm: CDM, pid: int, born: int, gender: int = 8507, obs: tuple[str, str] = ("2000-01-01", "2020-12-31"),
           death: str | None = None) -> None:
    add(cdm, "person", [{"person_id": pid, "gender_concept_id": gender, "year_of_birth": born}])
    add(cdm, "observation_period", [{"person_id": pid, "observation_period_start_date": D(obs[0]),
                                     "observation_period_end_date": D(obs[1])}])
    if death:
        add(cdm, "death", [{"person_id": pid, "death_date": D(death)}])


def condition(cdm: CDM, pid: int, concept_id: int, start: str, end: str | None = None) -> None:
    add(cdm, "condition_occurrence", [{"person_id": pid, "condition_concept_id": concept_id,
                                       "condition_start_date": D(start),
                                       "condition_end_date": D(end) if end else None}])


def procedure(cdm: CDM, pid: int, concept_id: int, date: str) -> None:
    add(cdm, "procedure_occurrence", [{"person_id": pid, "procedure_concept_id": concept_id,
                                       "procedure_date": D(date)}])


def drug(cdm: CDM, pid: int, concept_id: int, start: str, end: str) -> None:
    add(cdm, "drug_exposure", [{"person_id": pid, "drug_concept_id": concept_id,
                                "drug_exposure_start_date": D(start), "drug_exposure_end_date": D(end)}])


def measurement(cdm: CDM, pid: int, concept_id: int, date: str, value: float | None, unit: int = 0) -> None:
    add(cdm, "measurement", [{"person_id": pid, "measurement_concept_id": concept_id, "measurement_date": D(date),
                              "value_as_number": value, "unit_concept_id": unit}])


def new_cdm(url: str) -> CDM:
    return open_cdm(url, create=True)


def cs(cid: int, *items: tuple[int, bool, bool]) -> dict[str, Any]:
    """A Circe concept set: items (concept_id, includeDescendants, isExcluded)."""
    return {"id": cid, "name": f"set {cid}", "expression": {"items": [
        {"concept": {"CONCEPT_ID": c}, "includeDescendants": desc, "isExcluded": exc, "includeMapped": False}
        for c, desc, exc in items]}}


def window(start: int | None, end: int | None) -> dict[str, Any]:
    """A Circe window in signed days relative to the index start (None: unbounded)."""
    def bound(d: int | None, default_coeff: int) -> dict[str, Any]:
        return {"Days": None if d is None else abs(d), "Coeff": default_coeff if d is None else (-1 if d < 0 else 1)}
    return {"Start": bound(start, -1), "End": bound(end, 1)}
