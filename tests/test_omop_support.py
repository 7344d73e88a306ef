"""A small random CDM built with CDM.insert, shared by the OMOP, characterization and DQ tests (no tests here).

``build_cdm`` returns the frames it inserted so tests can recompute every figure with pandas.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nordfed.omop.store import CDM

CONDITIONS = [201826, 4329847, 316866, 255573, 200962, 196359]  # T2D, MI, hypertension, COPD, prostate ca, cervix ca
DRUGS = [1503297, 1545958, 1112807, 19019073]
CREATININE, HAEMOGLOBIN, HEIGHT = 3016723, 3000963, 3036277
UMOL_L, G_L, CM = 8749, 8636, 8582


def build_frames(n: int, seed: int, id_offset: int = 0, defects: bool = False) -> dict[str, pd.DataFrame]:
    """``n`` persons with observation periods, conditions, drugs and measurements; ``defects`` plants
    DQ problems: unmapped concepts, missing units, implausible creatinine and a prostate cancer in a woman."""
    rng = np.random.default_rng(seed)
    pid = np.arange(1, n + 1) + id_offset
    sex = rng.choice([8507, 8532], size=n)
    yob = rng.integers(1930, 2015, size=n)
    person = pd.DataFrame({"person_id": pid, "gender_concept_id": sex, "year_of_birth": yob,
                           "race_concept_id": 0, "ethnicity_concept_id": 0})
    start = pd.to_datetime([f"{max(y, 2000)}-01-01" for y in yob]) + pd.to_timedelta(rng.integers(0, 3000, n), "D")
    end = start + pd.to_timedelta(rng.integers(30, 6000, n), "D")
    end = end.where(end <= pd.Timestamp("2024-12-31"), pd.Timestamp("2024-12-31"))
    op = pd.DataFrame({"observation_period_id": pid, "person_id": pid, "observation_period_start_date": start.date,
                       "observation_period_end_date": end.date, "period_type_concept_id": 32817})

    def events(k: int, concepts: list[int], probs: list[float] | None = None) -> pd.DataFrame:
        who = rng.integers(0, n, size=k)
        span = (end[who] - start[who]).days.to_numpy()
        when = start[who] + pd.to_timedelta((rng.random(k) * span).astype(int), "D")
        return pd.DataFrame({"person_id": pid[who], "concept": rng.choice(concepts, size=k, p=probs),
                             "date": when.date, "sex": sex[who]})

    ev = events(3 * n, CONDITIONS[:4])
    sexed = events(n // 2, CONDITIONS[4:])
    # sex-specific cancers go to the right sex (unless defects are planted)
    sexed = sexed[(sexed["concept"] == 200962) == (sexed["sex"] == 8507)]
    ev = pd.concat([ev, sexed], ignore_index=True)
    if defects:
        woman = int(np.flatnonzero(sex == 8532)[0])
        ev.loc[len(ev)] = {"person_id": pid[woman], "concept": 200962, "date": start[woman].date(), "sex": 8532}
        ev.loc[ev.index[: len(ev) // 7], "concept"] = 0
    cond = pd.DataFrame({"condition_occurrence_id": np.arange(len(ev)) + 10 * id_offset + 1,
                         "person_id": ev["person_id"], "condition_concept_id": ev["concept"],
                         "condition_start_date": ev["date"], "condition_type_concept_id": 32817})
    dr = events(2 * n, DRUGS, [0.4, 0.3, 0.2, 0.1])
    drug = pd.DataFrame({"drug_exposure_id": np.arange(len(dr)) + 10 * id_offset + 1, "person_id": dr["person_id"],
                         "drug_concept_id": dr["concept"], "drug_exposure_start_date": dr["date"],
                         "drug_exposure_end_date": dr["date"], "drug_type_concept_id": 32817})
    me = events(2 * n, [CREATININE, HAEMOGLOBIN, HEIGHT])
    value = np.select([me["concept"] == CREATININE, me["concept"] == HAEMOGLOBIN],
                      [rng.normal(80, 15, len(me)), rng.normal(135, 12, len(me))], rng.normal(170, 10, len(me)))
    unit = np.select([me["concept"] == CREATININE, me["concept"] == HAEMOGLOBIN], [UMOL_L, G_L], CM)
    meas = pd.DataFrame({"measurement_id": np.arange(len(me)) + 10 * id_offset + 1, "person_id": me["person_id"],
                         "measurement_concept_id": me["concept"], "measurement_date": me["date"],
                         "measurement_type_concept_id": 32817, "value_as_number": value.round(1),
                         "unit_concept_id": unit.astype("int64")})
    if defects:
        cre = np.flatnonzero(meas["measurement_concept_id"] == CREATININE)
        meas.loc[cre[: len(cre) // 5], "value_as_number"] = 80_000.0  # µmol/L entered as nmol/L
        hb = np.flatnonzero(meas["measurement_concept_id"] == HAEMOGLOBIN)
        meas["unit_concept_id"] = meas["unit_concept_id"].astype("Int64")
        meas.loc[hb[: len(hb) // 4], "unit_concept_id"] = pd.NA
    return {"person": person, "observation_period": op, "condition_occurrence": cond, "drug_exposure": drug,
            "measurement": meas}


def build_cdm(cdm: CDM, n: int = 200, seed: int = 0, **kw: object) -> dict[str, pd.DataFrame]:
    frames = build_frames(n, seed, **kw)  # type: ignore[arg-type]
    cdm.create_schema(indices=False)
    with cdm.transaction():
        for table, df in frames.items():
            cdm.insert(table, df)
    return frames
