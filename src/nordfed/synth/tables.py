"""Turn a chunk's column buffers into CDM tables (columns named as the CDM spells them) with global ids."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa

from nordfed.synth import vocabulary as v
from nordfed.synth.population import People
from nordfed.synth.profiles import SiteProfile

EVENT_TABLES = {"visit": "visit_occurrence", "condition": "condition_occurrence", "drug": "drug_exposure",
                "procedure": "procedure_occurrence", "measurement": "measurement", "observation": "observation"}


def dates(days: np.ndarray) -> pd.arrays.ArrowExtensionArray:
    """int days since 1970-01-01 (-1 = NULL) as an Arrow-backed date column."""
    days = np.asarray(days)
    arr = pa.array(days.astype(np.int32), mask=days < 0).cast(pa.date32())
    return pd.arrays.ArrowExtensionArray(arr)


def nullable(values: np.ndarray) -> pd.arrays.IntegerArray:
    """Integers with -1 meaning NULL."""
    values = np.asarray(values, dtype=np.int64)
    return pd.arrays.IntegerArray(values, values < 0)


def _codes(concepts: np.ndarray, null: np.ndarray | None = None) -> pd.Categorical:
    """concept_code of each concept id (the source value a site would have written), NULL where ``null``.
    Categorical: a handful of distinct strings over millions of rows."""
    uniq, inverse = np.unique(concepts, return_inverse=True)
    categories, code_of = np.unique(np.array([v.concept_code(int(c)) for c in uniq], dtype=object),
                                    return_inverse=True)
    codes = code_of[inverse] if len(concepts) else np.empty(0, dtype=np.int64)
    if null is not None:
        codes = np.where(null, -1, codes)
    return pd.Categorical.from_codes(codes, categories=categories)


def person_table(prof: SiteProfile, people: People, first_id: int) -> dict[str, pd.DataFrame]:
    n = people.n
    pid = first_id + np.arange(n, dtype=np.int64)
    birth = people.birth.astype("datetime64[D]")
    years = birth.astype("datetime64[Y]")
    months = birth.astype("datetime64[M]")
    person = pd.DataFrame({
        "person_id": pid,
        "gender_concept_id": np.where(people.male, v.GENDER_MALE, v.GENDER_FEMALE),
        "year_of_birth": years.astype(int) + 1970,
        "month_of_birth": (months.astype(int) % 12) + 1,
        "day_of_birth": (birth - months.astype("datetime64[D]")).astype(int) + 1,
        "race_concept_id": 0,
        "ethnicity_concept_id": 0,
        "person_source_value": pd.Series(pid).map(lambda i: f"{prof.code}-{i:08d}"),
        "gender_source_value": np.where(people.male, "M", "F"),
    })
    period = pd.DataFrame({
        "observation_period_id": pid,
        "person_id": pid,
        "observation_period_start_date": dates(people.obs_start),
        "observation_period_end_date": dates(people.obs_end),
        "period_type_concept_id": v.TYPE_EHR,
    })
    died = np.flatnonzero(people.death >= 0)
    death = pd.DataFrame({
        "person_id": pid[died],
        "death_date": dates(people.death[died]),
        "death_type_concept_id": v.TYPE_REGISTRY,
    })
    return {"person": person, "observation_period": period, "death": death}


def event_tables(frames: dict[str, dict[str, np.ndarray]], first_person_id: int,
                 first_ids: dict[str, int]) -> dict[str, pd.DataFrame]:
    """CDM event tables from the buffers; ``first_ids`` gives the first id of each table (updated in place)."""
    out = {}
    visit_base = first_ids["visit_occurrence"]

    def common(buf: dict[str, np.ndarray], table: str, id_col: str) -> dict:
        n = len(buf["person"])
        ids = first_ids[table] + np.arange(n, dtype=np.int64)
        first_ids[table] += n
        cols = {id_col: ids, "person_id": first_person_id + buf["person"]}
        if "visit" in buf:
            cols["visit_occurrence_id"] = nullable(np.where(buf["visit"] >= 0, visit_base + buf["visit"], -1))
        return cols

    b = frames["visit"]
    cols = common(b, "visit_occurrence", "visit_occurrence_id")
    cols.update(visit_concept_id=b["concept"], visit_start_date=dates(b["start"]), visit_end_date=dates(b["end"]),
                visit_type_concept_id=v.TYPE_EHR, visit_source_value=_codes(b["concept"]))
    out["visit_occurrence"] = pd.DataFrame(cols)

    b = frames["condition"]
    cols = common(b, "condition_occurrence", "condition_occurrence_id")
    cols.update(condition_concept_id=b["concept"], condition_start_date=dates(b["start"]),
                condition_end_date=dates(b["end"]), condition_type_concept_id=v.TYPE_EHR,
                condition_source_value=_codes(b["concept"]))
    out["condition_occurrence"] = pd.DataFrame(cols)

    b = frames["drug"]
    cols = common(b, "drug_exposure", "drug_exposure_id")
    cols.update(drug_concept_id=b["concept"], drug_exposure_start_date=dates(b["start"]),
                drug_exposure_end_date=dates(b["end"]), drug_type_concept_id=v.TYPE_EHR,
                quantity=b["quantity"], days_supply=nullable(b["days_supply"]), drug_source_value=_codes(b["concept"]))
    out["drug_exposure"] = pd.DataFrame(cols)

    b = frames["procedure"]
    cols = common(b, "procedure_occurrence", "procedure_occurrence_id")
    cols.update(procedure_concept_id=b["concept"], procedure_date=dates(b["start"]),
                procedure_type_concept_id=v.TYPE_EHR, procedure_source_value=_codes(b["concept"]))
    out["procedure_occurrence"] = pd.DataFrame(cols)

    b = frames["measurement"]
    cols = common(b, "measurement", "measurement_id")
    cols.update(measurement_concept_id=b["concept"], measurement_date=dates(b["start"]),
                measurement_type_concept_id=v.TYPE_EHR, value_as_number=b["value"], unit_concept_id=nullable(b["unit"]),
                range_low=b["range_low"], range_high=b["range_high"], measurement_source_value=_codes(b["concept"]),
                unit_source_value=_codes(np.maximum(b["unit"], 0), null=b["unit"] < 0))
    out["measurement"] = pd.DataFrame(cols)

    b = frames["observation"]
    cols = common(b, "observation", "observation_id")
    cols.update(observation_concept_id=b["concept"], observation_date=dates(b["start"]),
                observation_type_concept_id=v.TYPE_EHR, value_as_number=b["value"],
                value_as_concept_id=nullable(b["value_concept"]), observation_source_value=_codes(b["concept"]))
    out["observation"] = pd.DataFrame(cols)
    return out


def cdm_source(prof: SiteProfile) -> pd.DataFrame:
    today = dt.date(2025, 1, 1)
    return pd.DataFrame([{
        "cdm_source_name": f"nordfed synthetic site {prof.code}: {prof.name}",
        "cdm_source_abbreviation": f"NF-{prof.code}",
        "cdm_holder": "nordfed synthetic data (no real persons)",
        "source_description": "Synthetic OMOP CDM generated by `nordfed synth`; ground truth is kept outside the CDM.",
        "source_release_date": today,
        "cdm_release_date": today,
        "cdm_version": "v5.4",
        "cdm_version_concept_id": v.CDM_V54,
        "vocabulary_version": "nordfed-synth 1",
    }])
