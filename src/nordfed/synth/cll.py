"""Chronic lymphocytic leukaemia cohort: serious infections and treatment need within two years of diagnosis.

Cohort: first "Chronic lymphoid leukemia" condition with at least 365 days of prior observation; index date =
that diagnosis. Outcomes within 1..730 days: a serious infection (condition during an inpatient stay) from one
documented logistic model, and the start of CLL treatment (drug under ATC L01) from another. Many labs at
diagnosis are missing (30-60 %), as in real haematology data; a missing value contributes 0 to the models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from nordfed.synth import vocabulary as v
from nordfed.synth.cohorts import Binary, draw_missing, emit_binaries, sigmoid, simulate_binaries
from nordfed.synth.events import Events, choose
from nordfed.synth.labs import as_recorded, emit_labs
from nordfed.synth.population import People
from nordfed.synth.profiles import SiteProfile
from nordfed.synth.truth import Var, linear_predictor

INFECTION_INTERCEPT = -1.9
TREATMENT_INTERCEPT = -1.0
OUTCOME_WINDOW = (1, 730)
INFECTION_CONCEPTS = (v.PNEUMONIA, v.SEPSIS, v.CELLULITIS, v.URINARY_TRACT_INFECTION, v.FEBRILE_NEUTROPENIA)
TREATMENT_CONCEPTS = (v.ATC_L01_ANTINEOPLASTICS,)
PRIOR = (-365, -1)
MISSING_RANGE = (0.30, 0.60)  # share of missing lab values at diagnosis, at every site
C, D, M = "condition_occurrence", "drug_exposure", "measurement"


def _lab(name: str, beta: float, concept: int, center: float, scale: float, log: bool = False) -> Var:
    return Var(name, beta, M, (concept,), (-30, 0), kind="value", center=center, scale=scale, log=log,
               description="value at diagnosis; missing values contribute 0")


AGE = Var("age_per_10y", 0.3, "person", kind="age", center=70.0, scale=10.0, description="age at diagnosis")
MALE = Var("male", 0.2, "person", kind="male")
FACTORS = [
    Binary(Var("copd", 0.5, C, (v.COPD,), PRIOR), -2.4, 0.5, 0.25, 0.2),
    Binary(Var("diabetes", 0.3, C, (v.T2DM,), PRIOR), -1.7, 0.4, 0.1, 0.3),
    Binary(Var("chronic_kidney_disease", 0.35, C, (v.CKD,), PRIOR), -2.6, 0.6, 0.5, 0.1, {"diabetes": 0.7}),
    Binary(Var("heart_failure", 0.4, C, (v.HEART_FAILURE,), PRIOR), -3.0, 0.7, 0.45, 0.2),
    Binary(Var("prior_serious_infection", 0.8, C, INFECTION_CONCEPTS[:4], PRIOR,
               description="serious infection in the year before diagnosis"), -2.2, 0.6, 0.2, 0.0, {"copd": 0.8},
           emit=((v.PNEUMONIA, 0.5), (v.SEPSIS, 0.15), (v.CELLULITIS, 0.15), (v.URINARY_TRACT_INFECTION, 0.2))),
    Binary(Var("corticosteroid", 0.4, D, (v.ATC_H02AB_GLUCOCORTICOIDS,), PRIOR), -2.6, 0.3, deps={"copd": 1.2},
           emit=((v.PREDNISOLONE, 1.0),)),
]
LABS = [  # (infection-model variable, missing share, treatment-model beta)
    (_lab("lymphocytes", 0.15, v.LYMPHOCYTES, 20.0, 1.0, log=True), 0.30, 0.7),
    (_lab("hemoglobin", -0.2, v.HEMOGLOBIN, 13.0, 1.0), 0.30, -0.35),
    (_lab("platelets", -0.2, v.PLATELETS, 150.0, 50.0), 0.35, -0.35),
    (_lab("beta2_microglobulin", 0.5, v.BETA2_MICROGLOBULIN, 3.0, 1.0, log=True), 0.60, 0.6),
    (_lab("igg", -0.5, v.IGG, 8.0, 2.0), 0.55, 0.0),
    (_lab("ldh", 0.4, v.LDH, 200.0, 1.0, log=True), 0.45, 0.5),
    (_lab("creatinine", 0.4, v.CREATININE, 80.0, 1.0, log=True), 0.30, 0.0),
    (_lab("neutrophils", -0.12, v.NEUTROPHILS, 4.0, 1.0), 0.35, 0.0),
]
VARIABLES: list[Var] = [AGE, MALE] + [b.var for b in FACTORS] + [lab for lab, _m, _t in LABS]
TREATMENT_VARIABLES: list[Var] = [Var("age_per_10y", -0.15, "person", kind="age", center=70.0, scale=10.0)] + [
    Var(lab.name, beta, lab.table, lab.concept_ids, lab.window, lab.kind, lab.center, lab.scale, lab.log,
        description=lab.description) for lab, _m, beta in LABS if beta != 0.0]
REGIMENS = (  # (drugs, cycles, days between starts, supply)
    ((v.IBRUTINIB,), 4, 90, 90),
    ((v.VENETOCLAX, v.RITUXIMAB), 6, 28, 28),
    ((v.CHLORAMBUCIL, v.RITUXIMAB), 6, 28, 7),
    ((v.FLUDARABINE, v.RITUXIMAB), 6, 28, 3),
)


def simulate(rng: np.random.Generator, prof: SiteProfile, people: People, idx: np.ndarray) -> pd.DataFrame:
    n = len(idx)
    s = people.index[idx]
    male = people.male[idx].astype(float)
    age = (s.astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970
           - people.year_of_birth()[idx]).astype(float)
    z = people.frailty[idx]
    k: dict[str, np.ndarray] = {"male": male}
    simulate_binaries(rng, FACTORS, z, age, male, k, {})
    alc = np.clip(np.exp(np.log(25.0) + rng.normal(0, 0.6, n)), 5.0, 400.0)
    burden = np.log(alc / 25.0)
    lab = {
        "lymphocytes": alc,
        "hemoglobin": np.clip(13.2 + 0.8 * male - 0.3 * z - 0.5 * burden + rng.normal(0, 1.3, n), 6.0, 18.0),
        "platelets": np.clip(190 - 25 * z - 30 * burden + rng.normal(0, 50, n), 15.0, 600.0),
        "beta2_microglobulin": np.clip(np.exp(np.log(2.8) + 0.25 * z + 0.3 * burden + rng.normal(0, 0.4, n)), 0.8, 25),
        "igg": np.clip(8.5 - 0.8 * z + rng.normal(0, 2.2, n), 1.5, 25.0),
        "ldh": np.clip(np.exp(np.log(190.0) + 0.2 * z + 0.15 * burden + rng.normal(0, 0.25, n)), 80.0, 2000.0),
        "creatinine": np.clip(np.exp(np.log(82.0) + 0.12 * male + 0.4 * k["chronic_kidney_disease"]
                                     + rng.normal(0, 0.18, n)), 30.0, 900.0),
        "neutrophils": np.clip(4.2 + rng.normal(0, 1.3, n), 0.3, 15.0),
    }
    terms = {"age_per_10y": AGE.term(age), **k}
    treat_terms = {"age_per_10y": TREATMENT_VARIABLES[0].term(age)}
    out = {"person": idx, "index_date": s, "age": age}
    treat_by_name = {t.name: t for t in TREATMENT_VARIABLES}
    for var, missing, _beta in LABS:
        share = float(np.clip(missing * prof.lab_missing_scale, *MISSING_RANGE))
        present = draw_missing(rng, n, share, 1.0)
        x = as_recorded(prof, var.concept_ids[0], lab[var.name])
        terms[var.name] = var.term(x, present)
        if var.name in treat_by_name:
            treat_terms[var.name] = treat_by_name[var.name].term(x, present)
        out[f"{var.name}_value"] = np.where(present, x, np.nan)
    lp = linear_predictor(VARIABLES, INFECTION_INTERCEPT + prof.cll_offset, terms)
    lp_t = linear_predictor(TREATMENT_VARIABLES, TREATMENT_INTERCEPT, treat_terms)
    y = rng.random(n) < sigmoid(lp)
    y_t = rng.random(n) < sigmoid(lp_t)
    out.update({var.name: terms[var.name] for var in VARIABLES})
    out.update(lp=lp, p=sigmoid(lp), outcome=y.astype(np.int8),
               infection_date=np.where(y, s + rng.integers(1, 731, n), -1),
               treatment_lp=lp_t, treatment=y_t.astype(np.int8),
               treatment_date=np.where(y_t, s + rng.integers(30, 731, n), -1))
    return pd.DataFrame(out)


def emit(rng: np.random.Generator, prof: SiteProfile, people: People, cohort: pd.DataFrame, ev: Events) -> None:
    if cohort.empty:
        return
    idx = cohort["person"].to_numpy()
    s = cohort["index_date"].to_numpy()
    end = people.obs_end[idx]
    n = len(idx)
    visit = ev.add("visit", person=idx, start=s, end=s, concept=v.VISIT_OUTPATIENT, planted=1)
    ev.add("condition", person=idx, start=s, concept=v.CLL, visit=visit, planted=1)
    follow = s + rng.integers(60, 121, n)
    ok = follow <= end
    fvisit = ev.add("visit", person=idx[ok], start=follow[ok], end=follow[ok], concept=v.VISIT_OUTPATIENT, planted=1)
    ev.add("condition", person=idx[ok], start=follow[ok], concept=v.CLL, visit=fvisit, planted=1)
    for var, _missing, _beta in LABS:
        value = cohort[f"{var.name}_value"].to_numpy()
        has = ~np.isnan(value)
        emit_labs(prof, ev, idx[has], s[has], var.concept_ids[0], value[has], visit[has], planted=1)
    known = {c: cohort[c].to_numpy() for c in cohort.columns}
    emit_binaries(rng, prof, ev, FACTORS, known, idx, s, end)
    # serious infections: an inpatient stay with the infection and antibiotics
    inf = np.flatnonzero(cohort["outcome"].to_numpy() > 0)
    t = cohort["infection_date"].to_numpy()[inf]
    stay = np.minimum(t + 2 + rng.poisson(4.0, len(inf)), end[inf])
    ivisit = ev.add("visit", person=idx[inf], start=t, end=stay, concept=v.VISIT_INPATIENT, planted=1)
    concept = choose(rng, ((v.PNEUMONIA, 0.45), (v.SEPSIS, 0.2), (v.CELLULITIS, 0.15),
                           (v.URINARY_TRACT_INFECTION, 0.15), (v.FEBRILE_NEUTROPENIA, 0.05)), len(inf))
    ev.add("condition", person=idx[inf], start=t, end=stay, concept=concept, visit=ivisit, planted=1)
    ev.add("drug", person=idx[inf], start=t, end=np.minimum(t + 9, end[inf]), concept=v.AMOXICILLIN, days_supply=10,
           quantity=30.0, visit=ivisit, planted=1)
    # treatment: one regimen per treated person, cycles until the end of observation
    trt = np.flatnonzero(cohort["treatment"].to_numpy() > 0)
    regimen = rng.choice(len(REGIMENS), size=len(trt), p=[0.45, 0.25, 0.15, 0.15])
    first = cohort["treatment_date"].to_numpy()[trt]
    for r, (drugs, cycles, gap, supply) in enumerate(REGIMENS):
        rows = trt[regimen == r]
        rep = np.repeat(rows, cycles)
        start = np.repeat(first[regimen == r], cycles) + gap * np.tile(np.arange(cycles), len(rows))
        keep = start <= end[rep]
        rep, start = rep[keep], start[keep]
        for drug in drugs:
            ev.add("drug", person=idx[rep], start=start, end=np.minimum(start + supply - 1, end[rep]), concept=drug,
                   days_supply=supply, quantity=float(supply), planted=1)
