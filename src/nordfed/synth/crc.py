"""Colorectal cancer surgery cohort: curative-intent resection with 1-year mortality from a documented logistic model.

Cohort: persons with a colorectal cancer diagnosis (descendant of "Malignant neoplasm of large intestine") and a
resection of the large intestine; index date = the resection; at least 365 days of prior observation.
Outcome: death (CDM ``death`` table) within 365 days after the index date.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nordfed.synth import vocabulary as v
from nordfed.synth.background import coded
from nordfed.synth.cohorts import Binary, draw_missing, emit_binaries, sigmoid, simulate_binaries
from nordfed.synth.events import Events, choose, uniform_days
from nordfed.synth.labs import as_recorded, emit_labs
from nordfed.synth.population import People
from nordfed.synth.profiles import SiteProfile
from nordfed.synth.truth import Var, linear_predictor

INTERCEPT = -3.6
Y1 = (-365, 0)
D90 = (-90, 0)
D30 = (-30, 0)
C, D, M, OBS = "condition_occurrence", "drug_exposure", "measurement", "observation"


def _cond(name: str, beta: float, concept: int, window: tuple[int, int] = Y1, desc: str = "") -> Var:
    return Var(name, beta, C, (concept,), window, description=desc)


def _drug(name: str, beta: float, *classes: int, window: tuple[int, int] = Y1) -> Var:
    return Var(name, beta, D, tuple(classes), window, description="drug exposure starting in the window")


def _lab(name: str, beta: float, concept: int, center: float, scale: float, log: bool = False,
         window: tuple[int, int] = D30) -> Var:
    return Var(name, beta, M, (concept,), window, kind="value", center=center, scale=scale, log=log,
               description="latest value before surgery; missing values contribute 0")


AGE = Var("age_per_10y", 0.3, "person", kind="age", center=70.0, scale=10.0, description="age at surgery")
MALE = Var("male", 0.15, "person", kind="male")
EMERGENCY = Var("emergency_surgery", 0.65, "visit_occurrence", (v.VISIT_ER_INPATIENT,), (0, 0), descendants=False,
                description="surgery during an Emergency Room and Inpatient Visit starting on the index date")
STAGE_III = Var("stage_iii", 0.25, M, (v.STAGE_III,), D90, description="AJCC/UICC stage III recorded")
STAGE_IV = Var("stage_iv", 0.9, M, (v.STAGE_IV,), D90, description="AJCC/UICC stage IV recorded")
RECTAL = _cond("rectal_cancer", 0.1, v.RECTAL_CANCER, D90, "rectal (not colon) cancer")
LAPAROSCOPIC = Var("laparoscopic_resection", -0.3, "procedure_occurrence",
                   (v.LAPAROSCOPIC_RESECTION_LARGE_INTESTINE,), (0, 0), description="laparoscopic approach")
LABS = [
    (_lab("asa_class", 0.3, v.ASA_CLASS, 2.0, 1.0), 0.08),
    (_lab("hemoglobin", -0.12, v.HEMOGLOBIN, 13.0, 1.0), 0.03),
    (_lab("albumin", -0.3, v.ALBUMIN, 40.0, 5.0), 0.25),
    (_lab("crp", 0.18, v.CRP, 5.0, 1.0, log=True), 0.15),
    (_lab("creatinine", 0.5, v.CREATININE, 80.0, 1.0, log=True), 0.04),
    (_lab("leukocytes", 0.04, v.LEUKOCYTES, 7.0, 1.0), 0.06),
    (_lab("sodium", -0.12, v.SODIUM, 140.0, 5.0), 0.05),
    (_lab("bmi", -0.12, v.BMI, 25.0, 5.0, window=Y1), 0.30),
]
TUMOUR = [
    Binary(_cond("intestinal_obstruction", 0.2, v.INTESTINAL_OBSTRUCTION, D30), -2.3, 0.2),
    Binary(_cond("liver_metastasis", 0.3, v.LIVER_METASTASIS, D90), -9.0, deps={"stage_iv": 9.4}),
]
COMORBID = [
    Binary(_cond("myocardial_infarction", 0.2, v.MYOCARDIAL_INFARCTION), -2.6, 0.5, 0.3, 0.5),
    Binary(_cond("heart_failure", 0.5, v.HEART_FAILURE), -3.0, 0.7, 0.45, 0.2, {"myocardial_infarction": 1.0}),
    Binary(_cond("peripheral_vascular_disease", 0.2, v.PERIPHERAL_VASCULAR_DISEASE), -3.0, 0.5, 0.3, 0.3),
    Binary(_cond("cerebrovascular_disease", 0.2, v.CEREBROVASCULAR_DISEASE), -2.8, 0.5, 0.4, 0.1),
    Binary(_cond("dementia", 0.7, v.DEMENTIA), -4.0, 0.5, 0.9),
    Binary(_cond("copd", 0.35, v.COPD), -2.4, 0.5, 0.25, 0.2),
    Binary(_cond("rheumatoid_arthritis", 0.1, v.RHEUMATOID_ARTHRITIS), -3.5, 0.2, 0.0, -0.4),
    Binary(_cond("peptic_ulcer", 0.1, v.PEPTIC_ULCER), -3.6, 0.3, 0.1, 0.1),
    Binary(_cond("liver_cirrhosis", 0.6, v.CIRRHOSIS), -4.2, 0.5, 0.0, 0.4),
    Binary(_cond("diabetes", 0.1, v.T2DM), -1.7, 0.4, 0.1, 0.3),
    Binary(_cond("diabetes_complications", 0.25, v.T2DM_COMPLICATION), -1.0, 0.4, requires="diabetes"),
    Binary(_cond("hemiplegia", 0.3, v.HEMIPLEGIA), -4.6, 0.4, 0.2, 0.0, {"cerebrovascular_disease": 2.0}),
    Binary(_cond("chronic_kidney_disease", 0.3, v.CKD), -2.6, 0.6, 0.5, 0.1, {"diabetes": 0.7, "heart_failure": 0.8}),
    Binary(_cond("atrial_fibrillation", 0.2, v.ATRIAL_FIBRILLATION), -2.2, 0.4, 0.55, 0.3, {"heart_failure": 1.0}),
    Binary(_cond("hypertension", 0.05, v.HYPERTENSION), -0.4, 0.3, 0.3),
    Binary(_cond("obesity", -0.1, v.OBESITY), -1.8, 0.1, -0.1, 0.0, {"diabetes": 0.8}),
    Binary(_cond("malnutrition", 0.45, v.MALNUTRITION), -3.6, 0.6, 0.3, 0.0, {"stage_iv": 1.0}),
    Binary(Var("current_smoker", 0.25, OBS, (v.CURRENT_SMOKER,), Y1, description="current smoker recorded"),
           -1.6, 0.2, -0.3, 0.2, {"copd": 1.0}),
]
DRUGS = [
    Binary(_drug("anticoagulant", 0.15, v.ATC_B01AA_VKA, v.ATC_B01AF_XA_INHIBITORS), -4.0,
           deps={"atrial_fibrillation": 4.2}, emit=((v.WARFARIN, 0.3), (v.APIXABAN, 0.4), (v.RIVAROXABAN, 0.3))),
    Binary(_drug("antiplatelet", 0.05, v.ATC_B01AC_PLATELET_INHIBITORS), -2.5,
           deps={"myocardial_infarction": 2.0, "cerebrovascular_disease": 1.5, "peripheral_vascular_disease": 1.5},
           emit=((v.ASPIRIN, 0.8), (v.CLOPIDOGREL, 0.2))),
    Binary(_drug("corticosteroid", 0.35, v.ATC_H02AB_GLUCOCORTICOIDS), -3.0, 0.3,
           deps={"rheumatoid_arthritis": 2.0, "copd": 1.2}, emit=((v.PREDNISOLONE, 1.0),)),
    Binary(_drug("statin", -0.15, v.ATC_C10AA_STATINS), -1.6, 0.0, 0.2,
           deps={"myocardial_infarction": 2.0, "diabetes": 1.0, "peripheral_vascular_disease": 1.0,
                 "cerebrovascular_disease": 1.0},
           emit=((v.SIMVASTATIN, 0.5), (v.ATORVASTATIN, 0.4), (v.ROSUVASTATIN, 0.1))),
    Binary(_drug("loop_diuretic", 0.35, v.ATC_C03CA_LOOP_DIURETICS), -3.2, 0.3,
           deps={"heart_failure": 3.0, "chronic_kidney_disease": 1.0}, emit=((v.FUROSEMIDE, 1.0),)),
    Binary(_drug("insulin", 0.2, v.ATC_A10A_INSULINS), -1.3, deps={"diabetes_complications": 0.8},
           requires="diabetes", emit=((v.INSULIN_GLARGINE, 1.0),)),
    Binary(_drug("metformin", 0.0, v.ATC_A10BA_BIGUANIDES), 1.0, requires="diabetes", emit=((v.METFORMIN, 1.0),)),
    Binary(_drug("opioid", 0.25, v.ATC_N02A_OPIOIDS), -2.3, 0.3, deps={"stage_iv": 1.2},
           emit=((v.MORPHINE, 0.4), (v.OXYCODONE, 0.6))),
    Binary(_drug("ppi", 0.1, v.ATC_A02BC_PPI), -1.5, deps={"peptic_ulcer": 2.5, "corticosteroid": 0.8},
           emit=((v.OMEPRAZOLE, 0.5), (v.PANTOPRAZOLE, 0.5))),
    Binary(_drug("beta_blocker", 0.05, v.ATC_C07AB_BETA_BLOCKERS), -2.0, 0.0, 0.2,
           deps={"atrial_fibrillation": 1.5, "myocardial_infarction": 1.5, "heart_failure": 1.5, "hypertension": 0.7},
           emit=((v.METOPROLOL, 1.0),)),
    Binary(_drug("neoadjuvant_chemotherapy", 0.1, v.ATC_L01_ANTINEOPLASTICS, window=(-180, 0)), -6.0,
           deps={"rectal_cancer": 3.0, "stage_iii": 2.5, "stage_iv": 2.5, "emergency_surgery": -4.0},
           emit=((v.CAPECITABINE, 0.7), (v.FLUOROURACIL, 0.3))),
]
VARIABLES: list[Var] = ([AGE, MALE, EMERGENCY, STAGE_III, STAGE_IV, RECTAL, LAPAROSCOPIC] + [b.var for b in TUMOUR]
                        + [b.var for b in COMORBID] + [b.var for b in DRUGS] + [lab for lab, _ in LABS])
STAGE_CONCEPTS = np.array([v.STAGE_I, v.STAGE_II, v.STAGE_III, v.STAGE_IV])
COHORT_CONCEPTS = {"condition": v.LARGE_INTESTINE_CANCER, "procedure": v.RESECTION_LARGE_INTESTINE}


def simulate(rng: np.random.Generator, prof: SiteProfile, people: People, idx: np.ndarray) -> pd.DataFrame:
    """Risk factors, labs, linear predictor and 1-year death for the cohort persons ``idx`` (chunk-local)."""
    n = len(idx)
    s = people.index[idx]
    male = people.male[idx].astype(float)
    yob = people.year_of_birth()[idx]
    age = (s.astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970 - yob).astype(float)
    z = people.frailty[idx]
    k: dict[str, np.ndarray] = {"male": male}
    age10 = (age - 70) / 10
    k["intestinal_obstruction"] = (rng.random(n) < sigmoid(-2.3 + 0.2 * z)).astype(float)
    k["emergency_surgery"] = (rng.random(n) < sigmoid(-2.6 + prof.emergency_shift + 2.4 * k["intestinal_obstruction"]
                                                      + 0.3 * z + 0.1 * age10)).astype(float)
    stage_logit = 0.6 * k["emergency_surgery"] + 0.15 * z + rng.logistic(size=n)
    stage = np.digitize(stage_logit, [-1.2, 0.0, 1.6])  # 0..3 = stage I..IV
    k["stage_iii"] = (stage == 2).astype(float)
    k["stage_iv"] = (stage == 3).astype(float)
    k["rectal_cancer"] = (rng.random(n) < 0.3).astype(float)
    lap_p = prof.laparoscopic_share * np.where(k["emergency_surgery"] > 0, 0.3, 1.0) * np.where(stage == 3, 0.7, 1.0)
    k["laparoscopic_resection"] = (rng.random(n) < lap_p).astype(float)
    simulate_binaries(rng, TUMOUR[1:] + COMORBID, z, age, male, k,
                      {"current_smoker": 0.5 if prof.code == "EE" else 0.0})
    simulate_binaries(rng, DRUGS, z, age, male, k, {})
    n_comorb = sum(k[b.var.name] for b in COMORBID[:14])
    stage34 = k["stage_iii"] + k["stage_iv"]
    emerg = k["emergency_surgery"]
    lab = {
        "asa_class": np.clip(np.round(1.5 + 0.45 * z + 0.2 * age10 + 0.3 * n_comorb + 0.5 * emerg
                                      + rng.normal(0, 0.45, n)), 1, 5),
        "hemoglobin": np.clip(13.3 + 0.9 * male - 0.45 * z - 0.6 * stage34 - 0.5 * k["liver_cirrhosis"]
                              - 0.5 * k["chronic_kidney_disease"] + rng.normal(0, 1.3, n), 6.0, 18.5),
        "albumin": np.clip(40.0 - 1.8 * z - 2.0 * k["stage_iv"] - 2.0 * emerg - 2.5 * k["malnutrition"]
                           - k["liver_cirrhosis"] + rng.normal(0, 3.2, n), 15.0, 52.0),
        "crp": np.clip(np.exp(np.log(5.0) + 0.35 * z + 1.0 * emerg + 0.5 * k["stage_iv"]
                              + 0.6 * k["intestinal_obstruction"] + rng.normal(0, 0.9, n)), 0.3, 400.0),
        "creatinine": np.clip(np.exp(np.log(80.0) + 0.12 * male + 0.45 * k["chronic_kidney_disease"] + 0.04 * age10
                                     + 0.15 * k["heart_failure"] + rng.normal(0, 0.18, n)), 30.0, 900.0),
        "leukocytes": np.clip(7.2 + 1.8 * emerg + 0.5 * z + rng.normal(0, 1.8, n), 1.5, 35.0),
        "sodium": np.clip(139.5 - 0.8 * z - 1.0 * emerg + rng.normal(0, 2.8, n), 120.0, 155.0),
        "bmi": np.clip(26.5 + 6.0 * k["obesity"] - 3.0 * k["malnutrition"] + rng.normal(0, 3.5, n), 15.0, 60.0),
    }
    terms = {"age_per_10y": AGE.term(age), **{name: k[name] for name in k}}
    out = {"person": idx, "index_date": s, "age": age, "stage": stage + 1}
    for var, base_missing in LABS:
        present = draw_missing(rng, n, base_missing, prof.lab_missing_scale)
        x = as_recorded(prof, var.concept_ids[0], lab[var.name])
        terms[var.name] = var.term(x, present)
        out[f"{var.name}_value"] = np.where(present, x, np.nan)
    intercept = INTERCEPT + prof.crc_offset
    lp = linear_predictor(VARIABLES, intercept, terms)
    p = sigmoid(lp)
    y = rng.random(n) < p
    early = rng.random(n) < 0.3
    days = np.where(early, rng.integers(1, 31, n), rng.integers(31, 366, n))
    out.update({name: terms[name] for name in (var.name for var in VARIABLES)})
    out.update(lp=lp, p=p, outcome=y.astype(np.int8), death_date=np.where(y, s + days, -1))
    return pd.DataFrame(out)


def emit(rng: np.random.Generator, prof: SiteProfile, people: People, cohort: pd.DataFrame, ev: Events) -> None:
    """Write the cohort's diagnosis, surgery, staging, labs, risk factors and treatment as CDM events."""
    if cohort.empty:
        return
    idx = cohort["person"].to_numpy()
    s = cohort["index_date"].to_numpy()
    n = len(idx)
    end = people.obs_end[idx]
    emerg = cohort["emergency_surgery"].to_numpy() > 0
    rectal = cohort["rectal_cancer"].to_numpy() > 0
    lap = cohort["laparoscopic_resection"].to_numpy() > 0
    stay = 3 + rng.poisson(3.0, n) + 5 * emerg
    surgery = ev.add("visit", person=idx, start=s, end=np.minimum(s + stay, end),
                     concept=np.where(emerg, v.VISIT_ER_INPATIENT, v.VISIT_INPATIENT), planted=1)
    # elective patients are diagnosed at an outpatient visit and have pre-operative labs a few days before
    diag_day = np.where(emerg, s, s - rng.integers(14, 61, n))
    preop_day = np.where(emerg, s, s - rng.integers(1, 15, n))
    el = np.flatnonzero(~emerg)
    diag_visit, preop_visit = surgery.copy(), surgery.copy()
    diag_visit[el] = ev.add("visit", person=idx[el], start=diag_day[el], end=diag_day[el], concept=v.VISIT_OUTPATIENT,
                            planted=1)
    preop_visit[el] = ev.add("visit", person=idx[el], start=preop_day[el], end=preop_day[el],
                             concept=v.VISIT_OUTPATIENT, planted=1)
    tumour = np.where(rectal, v.RECTAL_CANCER, coded(rng, prof, v.COLON_CANCER, n))
    for day_, visit in ((diag_day, diag_visit), (s, surgery)):
        ev.add("condition", person=idx, start=day_, concept=tumour, visit=visit, planted=1)
    ev.add("procedure", person=idx[el], start=diag_day[el], concept=v.COLONOSCOPY, visit=diag_visit[el], planted=1)
    ev.add("procedure", person=idx, start=diag_day, concept=v.CT_ABDOMEN, visit=diag_visit, planted=1)
    ev.add("procedure", person=idx, start=s, concept=_resection(rng, prof, rectal, lap, emerg), visit=surgery,
           planted=1)
    stage = cohort["stage"].to_numpy()
    ev.add("measurement", person=idx, start=s, concept=STAGE_CONCEPTS[stage - 1], visit=surgery, planted=1)
    for name, concept, day_, visit in (("liver_metastasis", v.LIVER_METASTASIS, diag_day, diag_visit),
                                       ("intestinal_obstruction", v.INTESTINAL_OBSTRUCTION, preop_day, preop_visit)):
        has = cohort[name].to_numpy() > 0
        ev.add("condition", person=idx[has], start=day_[has], concept=concept, visit=visit[has], planted=1)
    for var, _missing in LABS:
        value = cohort[f"{var.name}_value"].to_numpy()
        ok = ~np.isnan(value)
        day_, visit = (s, surgery) if var.name == "asa_class" else (preop_day, preop_visit)
        emit_labs(prof, ev, idx[ok], day_[ok], var.concept_ids[0], value[ok], visit[ok], planted=1)
    known = {name: cohort[name].to_numpy() for name in cohort.columns}
    emit_binaries(rng, prof, ev, COMORBID + DRUGS, known, idx, s, end, skip=("neoadjuvant_chemotherapy",))
    _chemotherapy(rng, people, cohort, ev)
    smoker = cohort["current_smoker"].to_numpy() > 0
    other = np.flatnonzero(~smoker & (rng.random(n) < 0.6))
    ev.add("observation", person=idx[other], start=uniform_days(rng, s[other] - 365, s[other]),
           concept=choose(rng, ((v.FORMER_SMOKER, 0.45), (v.NEVER_SMOKER, 0.55)), len(other)), planted=1)


def _resection(rng: np.random.Generator, prof: SiteProfile, rectal: np.ndarray, lap: np.ndarray,
               emerg: np.ndarray) -> np.ndarray:
    n = len(rectal)
    colon_open = choose(rng, ((v.RIGHT_HEMICOLECTOMY, 0.4), (v.LEFT_HEMICOLECTOMY, 0.15), (v.SIGMOID_COLECTOMY, 0.35),
                              (v.TOTAL_COLECTOMY, 0.1)), n)
    if prof.code == "FI":  # coding habit: a third of open colectomies are coded unspecified
        colon_open = np.where(rng.random(n) < 0.33, v.COLECTOMY, colon_open)
    colon_lap = choose(rng, ((v.LAP_RIGHT_HEMICOLECTOMY, 0.5), (v.LAP_SIGMOID_COLECTOMY, 0.5)), n)
    rectal_open = np.where(emerg, v.HARTMANN_PROCEDURE, choose(
        rng, ((v.ANTERIOR_RESECTION_RECTUM, 0.7), (v.ABDOMINOPERINEAL_RESECTION, 0.3)), n))
    return np.where(rectal, np.where(lap, v.LAP_ANTERIOR_RESECTION, rectal_open),
                    np.where(lap, colon_lap, colon_open))


def _chemotherapy(rng: np.random.Generator, people: People, cohort: pd.DataFrame, ev: Events) -> None:
    """Neoadjuvant cycles before surgery (the truth variable) and adjuvant cycles after it for stage III."""
    idx = cohort["person"].to_numpy()
    s = cohort["index_date"].to_numpy()
    end = people.obs_end[idx]
    neo = np.flatnonzero(cohort["neoadjuvant_chemotherapy"].to_numpy() > 0)
    adj = np.flatnonzero((cohort["stage"].to_numpy() == 3) & (end >= s + 90) & (rng.random(len(idx)) < 0.7))
    for rows, first, drug in ((neo, -150, v.CAPECITABINE), (adj, 35, v.CAPECITABINE), (adj, 35, v.OXALIPLATIN)):
        cycles = np.repeat(rows, 4)
        start = s[cycles] + first + 21 * np.tile(np.arange(4), len(rows))
        keep = (start <= end[cycles]) & ((start < s[cycles]) if first < 0 else (start > s[cycles]))
        cycles, start = cycles[keep], start[keep]
        ev.add("drug", person=idx[cycles], start=start, end=np.minimum(start + 13, end[cycles]), concept=drug,
               days_supply=14, quantity=28.0, planted=1)
