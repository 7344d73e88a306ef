"""Planted data-quality defects, different at each site (Denmark is clean), for the data-quality checks to find.

Defects never break the structural rules (required fields, keys, person references, date order, events inside
observation, nothing after death): they are the kind of error that passes a loader and needs a DQ check.
Each planted defect is reported with its realised rate (affected rows / rows the rate is relative to).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nordfed.synth import vocabulary as v
from nordfed.synth.population import People
from nordfed.synth.profiles import SiteProfile


@dataclass(frozen=True)
class Defect:
    check: str
    table: str
    field: str
    concept_id: int | None
    description: str


def _count(defect: Defect, affected: int, total: int) -> tuple[Defect, int, int]:
    return defect, int(affected), int(total)


def apply(rng: np.random.Generator, prof: SiteProfile, people: People, frames: dict[str, dict[str, np.ndarray]],
          visits: dict[str, np.ndarray]) -> list[tuple[Defect, int, int]]:
    """Plant the site's defects into the chunk's column buffers; returns (defect, affected rows, base rows)."""
    out = []
    cond, meas = frames["condition"], frames["measurement"]
    # rows are added first, so the rates below are relative to the final tables
    if "sex_plausibility" in prof.defects:
        concept, wrong_male = ((v.BENIGN_PROSTATIC_HYPERPLASIA, False) if prof.code == "SE"
                               else (v.ENDOMETRIOSIS, True))
        who = np.flatnonzero((people.male == wrong_male) & (visits["n"] > 0) & (rng.random(people.n) < 0.004))
        local = visits["offset"][who] + np.floor(rng.random(len(who)) * visits["n"][who]).astype(np.int64)
        for name, value in (("person", who), ("start", visits["start"][local]), ("concept", np.full(len(who), concept)),
                            ("visit", visits["row"][local])):
            cond[name] = np.concatenate([cond[name], value])
        for name in ("end", "source_concept"):
            cond[name] = np.concatenate([cond[name], np.full(len(who), -1)])
        cond["planted"] = np.concatenate([cond["planted"], np.full(len(who), 2)])
        total = int((cond["concept"] == concept).sum())
        sex = "men" if wrong_male else "women"
        out.append(_count(Defect("sex_plausibility", "condition_occurrence", "condition_concept_id", concept,
                                 f"{v.concept_name(concept)} recorded for {sex}"), len(who), total))
    if "concept_conformance" in prof.defects:
        if prof.code == "EE":
            # standard concepts replaced by the non-standard ICD-10 source concept the site coded
            reverse = {std: src for src, std in v.MAPS_TO.items()}
            hit = np.isin(cond["concept"], list(reverse)) & (rng.random(len(cond["concept"])) < 0.12)
            for std, src in reverse.items():
                cond["concept"][hit & (cond["concept"] == std)] = src
            out.append(_count(Defect("concept_conformance", "condition_occurrence", "condition_concept_id", None,
                                     "non-standard ICD-10 concepts stored in condition_concept_id instead of their "
                                     "standard SNOMED concept (see concept_relationship 'Maps to')"),
                              hit.sum(), len(hit)))
        else:
            hit = rng.random(len(cond["concept"])) < 0.02
            cond["concept"][hit] = 0
            out.append(_count(Defect("concept_conformance", "condition_occurrence", "condition_concept_id", 0,
                                     "unmapped diagnoses stored with condition_concept_id 0"), hit.sum(), len(hit)))
    if "missing_unit" in prof.defects:
        concept = v.CRP if prof.code == "NO" else v.CREATININE
        rows = meas["concept"] == concept
        hit = rows & (rng.random(len(rows)) < (0.06 if prof.code == "NO" else 0.09))
        meas["unit"][hit] = -1
        out.append(_count(Defect("missing_unit", "measurement", "unit_concept_id", concept,
                                 f"{v.concept_name(concept)} values without a unit (unit_concept_id NULL)"),
                          hit.sum(), rows.sum()))
    if "implausible_value" in prof.defects:
        if prof.code == "SE":
            concept, rate, how = v.CREATININE, 0.015, "creatinine values 10 times too high (unit slip)"
        else:
            concept, rate, how = v.BODY_HEIGHT, 0.03, "negative body heights (sign error)"
        rows = meas["concept"] == concept
        hit = rows & (rng.random(len(rows)) < rate)
        meas["value"][hit] = meas["value"][hit] * 10 if prof.code == "SE" else -meas["value"][hit]
        out.append(_count(Defect("implausible_value", "measurement", "value_as_number", concept, how),
                          hit.sum(), rows.sum()))
    return out


def summarise(counts: list[tuple[Defect, int, int]]) -> list[dict]:
    """Merge per-chunk counts into truth entries with realised rates."""
    merged: dict[Defect, list[int]] = {}
    for defect, affected, total in counts:
        acc = merged.setdefault(defect, [0, 0])
        acc[0] += affected
        acc[1] += total
    return [{"check": d.check, "table": d.table, "field": d.field, "concept_id": d.concept_id,
             "rate": round(a / t, 6) if t else 0.0, "rows_affected": a, "rows_base": t, "description": d.description}
            for d, (a, t) in merged.items()]
