"""Everyday care for every person: visits, chronic and acute conditions, prescriptions, labs, vitals,
smoking status and common procedures. Every event sits on one of the person's visits, so it lies inside the
observation period and never after death.
"""

from __future__ import annotations

import numpy as np

from nordfed.synth import vocabulary as v
from nordfed.synth.events import Events, choose, day, uniform_days
from nordfed.synth.labs import emit_labs
from nordfed.synth.population import People
from nordfed.synth.profiles import SiteProfile

# coarse concept, logit at age 60, per 10 years, sex (M/F/None), frailty loading, prescriptions ((drug, p), ...)
CHRONIC: list[tuple[int, float, float, str | None, float, tuple[tuple[int, float], ...]]] = [
    (v.HYPERTENSION, -0.9, 0.5, None, 0.3, ((v.LISINOPRIL, 0.4), (v.AMLODIPINE, 0.45), (v.METOPROLOL, 0.2))),
    (v.T2DM, -2.2, 0.35, None, 0.4, ((v.METFORMIN, 0.8), (v.INSULIN_GLARGINE, 0.2))),
    (v.HYPERLIPIDEMIA, -1.6, 0.35, None, 0.2, ((v.SIMVASTATIN, 0.5), (v.ATORVASTATIN, 0.4), (v.ROSUVASTATIN, 0.1))),
    (v.ATRIAL_FIBRILLATION, -3.3, 0.7, None, 0.4, ((v.WARFARIN, 0.25), (v.APIXABAN, 0.45), (v.RIVAROXABAN, 0.3),
                                                   (v.METOPROLOL, 0.5))),
    (v.HEART_FAILURE, -4.0, 0.75, None, 0.6, ((v.FUROSEMIDE, 0.8), (v.METOPROLOL, 0.5))),
    (v.MYOCARDIAL_INFARCTION, -3.7, 0.5, None, 0.4, ((v.ASPIRIN, 0.7), (v.ATORVASTATIN, 0.8), (v.CLOPIDOGREL, 0.3))),
    (v.COPD, -3.3, 0.55, None, 0.5, ((v.ALBUTEROL, 0.8), (v.PREDNISOLONE, 0.2))),
    (v.ASTHMA, -2.8, -0.05, None, 0.1, ((v.ALBUTEROL, 0.9),)),
    (v.CKD, -3.5, 0.6, None, 0.5, ()),
    (v.DEMENTIA, -5.8, 1.1, None, 0.5, ()),
    (v.CEREBROVASCULAR_DISEASE, -3.9, 0.65, None, 0.4, ((v.ASPIRIN, 0.5), (v.CLOPIDOGREL, 0.4))),
    (v.PERIPHERAL_VASCULAR_DISEASE, -4.1, 0.5, None, 0.4, ((v.ASPIRIN, 0.6),)),
    (v.RHEUMATOID_ARTHRITIS, -4.2, 0.2, None, 0.2, ((v.PREDNISOLONE, 0.5),)),
    (v.OSTEOARTHRITIS, -2.0, 0.5, None, 0.1, ((v.ACETAMINOPHEN, 0.6),)),
    (v.HYPOTHYROIDISM, -3.0, 0.2, None, 0.0, ((v.LEVOTHYROXINE, 0.95),)),
    (v.GERD, -2.3, 0.2, None, 0.1, ((v.OMEPRAZOLE, 0.5), (v.PANTOPRAZOLE, 0.4))),
    (v.DEPRESSION, -2.5, 0.0, None, 0.2, ()),
    (v.OBESITY, -2.1, 0.1, None, 0.1, ()),
    (v.ANEMIA, -3.4, 0.3, None, 0.4, ()),
    (v.CIRRHOSIS, -5.2, 0.3, None, 0.4, ()),
    (v.PEPTIC_ULCER, -4.6, 0.3, None, 0.2, ((v.OMEPRAZOLE, 0.8),)),
    (v.ULCERATIVE_COLITIS, -5.3, 0.0, None, 0.0, ((v.PREDNISOLONE, 0.3),)),
    (v.HEMIPLEGIA, -6.5, 0.4, None, 0.3, ()),
    (v.PROSTATE_CANCER, -4.0, 1.0, "M", 0.0, ()),
    (v.BENIGN_PROSTATIC_HYPERPLASIA, -2.6, 0.8, "M", 0.0, ()),
    (v.ENDOMETRIOSIS, -3.6, -0.3, "F", 0.0, ()),
    (v.MIGRAINE, -2.6, -0.25, None, 0.0, ()),
]
ACUTE_HOSPITAL = ((v.PNEUMONIA, 0.22), (v.URINARY_TRACT_INFECTION, 0.18), (v.CELLULITIS, 0.1), (v.SEPSIS, 0.05),
                  (v.LOW_BACK_PAIN, 0.2), (v.ANEMIA, 0.07), (v.HERPES_ZOSTER, 0.04), (v.GERD, 0.09),
                  (v.INTESTINAL_OBSTRUCTION, 0.02), (v.STROKE, 0.03))
ACUTE_OUTPATIENT = ((v.LOW_BACK_PAIN, 0.35), (v.MIGRAINE, 0.15), (v.GERD, 0.15), (v.URINARY_TRACT_INFECTION, 0.2),
                    (v.HERPES_ZOSTER, 0.05), (v.OSTEOARTHRITIS, 0.1))
INFECTIONS = (v.PNEUMONIA, v.URINARY_TRACT_INFECTION, v.CELLULITIS, v.SEPSIS)


def coded(rng: np.random.Generator, prof: SiteProfile, coarse: int, n: int) -> np.ndarray:
    """The concepts a site records for a coarse diagnosis (its coding habit), one per row."""
    options = prof.coding.get(coarse)
    return np.full(n, coarse, dtype=np.int64) if options is None else choose(rng, options, n)


def make_visits(rng: np.random.Generator, prof: SiteProfile, people: People, ev: Events) -> dict[str, np.ndarray]:
    """Background visits; returns per-person visit offsets and counts (visits are grouped by person)."""
    years = (people.obs_end - people.obs_start + 1) / 365.25
    age_mid = people.age_years((people.obs_start + people.obs_end) // 2)
    lam_op = years * prof.visit_rate * 0.55 * (0.4 + np.clip(age_mid, 0, 95) / 50) * np.exp(0.2 * people.frailty)
    lam_ip = years * 0.04 * (0.3 + np.clip(age_mid, 0, 95) / 35) * np.exp(0.4 * people.frailty)
    lam_er = years * 0.06 * np.exp(0.2 * people.frailty)
    counts = {c: rng.poisson(lam) for c, lam in
              ((v.VISIT_OUTPATIENT, lam_op), (v.VISIT_INPATIENT, lam_ip), (v.VISIT_ER, lam_er))}
    person = np.concatenate([np.repeat(np.arange(people.n), k) for k in counts.values()])
    concept = np.concatenate([np.full(k.sum(), c, dtype=np.int64) for c, k in counts.items()])
    order = np.argsort(person, kind="stable")
    person, concept = person[order], concept[order]
    start = uniform_days(rng, people.obs_start[person], people.obs_end[person])
    stay = np.where(concept == v.VISIT_INPATIENT, 1 + rng.poisson(3.0, len(person)), 0)
    end = np.minimum(start + stay, people.obs_end[person])
    rows = ev.add("visit", person=person, start=start, end=end, concept=concept)
    n_vis = np.bincount(person, minlength=people.n)
    offsets = np.concatenate([[0], np.cumsum(n_vis)[:-1]])
    # the share of the span a person would be observed alive that they are observed (1 unless death or exit)
    observed = (people.obs_end - people.obs_start + 1) / np.maximum(day(prof.data_end) - people.obs_start + 1, 1)
    return {"row": rows, "person": person, "start": start, "end": end, "concept": concept,
            "n": n_vis, "offset": offsets, "observed": np.clip(observed, 0.0, 1.0)}


def _random_visit(rng: np.random.Generator, visits: dict[str, np.ndarray],
                  persons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A random background visit for each record of ``persons`` (who must have one): (persons kept, visit index).

    A record is kept with the share of the span the person is observed: a uniform visit alone would crowd the
    records of someone who dies soon into the time before their death, so that having a record in the year before
    an index date would foretell the death (the future leaking into the covariates)."""
    keep = persons[rng.random(len(persons)) < visits["observed"][persons]]
    return keep, visits["offset"][keep] + np.floor(rng.random(len(keep)) * visits["n"][keep]).astype(np.int64)


def chronic_conditions(rng: np.random.Generator, prof: SiteProfile, people: People, visits: dict[str, np.ndarray],
                       ev: Events) -> dict[int, np.ndarray]:
    """Chronic diagnoses with repeat records and their prescriptions; returns coarse concept -> has it (bool)."""
    age = people.age_years((people.obs_start + people.obs_end) // 2)
    has_visit = visits["n"] > 0
    status = {}
    for coarse, base, slope, sex, load, drugs in CHRONIC:
        logit = base + slope * (age - 60) / 10 + load * people.frailty - 3.0 * (age < 18)
        if sex is not None:
            logit = np.where(people.male == (sex == "M"), logit, -np.inf)
        has = rng.random(people.n) < 1 / (1 + np.exp(-logit))
        status[coarse] = has
        who = np.flatnonzero(has & has_visit)
        if len(who) == 0:
            continue
        person = np.repeat(who, 1 + rng.poisson(1.5, len(who)))
        person, local = _random_visit(rng, visits, person)
        ev.add("condition", person=person, start=visits["start"][local], concept=coded(rng, prof, coarse, len(person)),
               visit=visits["row"][local])
        for drug, p in drugs:
            users = who[rng.random(len(who)) < p]
            prescriptions(rng, people, visits, ev, users, drug, 1 + rng.poisson(3.0, len(users)))
    return status


def prescriptions(rng: np.random.Generator, people: People, visits: dict[str, np.ndarray], ev: Events,
                  users: np.ndarray, drug: int, repeats: np.ndarray, supply: tuple[int, ...] = (30, 90)) -> None:
    person = np.repeat(users, repeats)
    if len(person) == 0:
        return
    person, local = _random_visit(rng, visits, person)
    start = visits["start"][local]
    days = np.asarray(supply)[rng.integers(0, len(supply), len(person))]
    ev.add("drug", person=person, start=start, end=np.minimum(start + days - 1, people.obs_end[person]),
           concept=np.full(len(person), drug), days_supply=days, quantity=days.astype(float),
           visit=visits["row"][local])


def acute_events(rng: np.random.Generator, prof: SiteProfile, people: People, visits: dict[str, np.ndarray],
                 ev: Events) -> None:
    """Acute diagnoses at hospital and outpatient visits, antibiotics for infections, common procedures."""
    hospital = np.flatnonzero(visits["concept"] != v.VISIT_OUTPATIENT)
    outpatient = np.flatnonzero((visits["concept"] == v.VISIT_OUTPATIENT) & (rng.random(len(visits["person"])) < 0.3))
    for rows, options in ((hospital, ACUTE_HOSPITAL), (outpatient, ACUTE_OUTPATIENT)):
        concept = choose(rng, options, len(rows))
        person = visits["person"][rows]
        ev.add("condition", person=person, start=visits["start"][rows],
               end=np.maximum(visits["end"][rows], visits["start"][rows]), concept=concept, visit=visits["row"][rows])
        treated = np.isin(concept, INFECTIONS) & (rng.random(len(rows)) < 0.8)
        r = rows[treated]
        ev.add("drug", person=visits["person"][r], start=visits["start"][r],
               end=np.minimum(visits["start"][r] + 6, people.obs_end[visits["person"][r]]),
               concept=np.full(len(r), v.AMOXICILLIN), days_supply=7, quantity=21.0, visit=visits["row"][r])
    ct = hospital[rng.random(len(hospital)) < 0.15]
    inpatient = np.flatnonzero(visits["concept"] == v.VISIT_INPATIENT)
    tx = inpatient[rng.random(len(inpatient)) < 0.04]
    chole = inpatient[rng.random(len(inpatient)) < 0.01]
    for rows, concept in ((ct, v.CT_ABDOMEN), (tx, v.BLOOD_TRANSFUSION), (chole, v.CHOLECYSTECTOMY)):
        ev.add("procedure", person=visits["person"][rows], start=visits["start"][rows], concept=concept,
               visit=visits["row"][rows])


def person_events(rng: np.random.Generator, prof: SiteProfile, people: People, visits: dict[str, np.ndarray],
                  status: dict[int, np.ndarray], ev: Events) -> None:
    """Once-per-person events: smoking status, family history, colonoscopy, height; and the non-cohort edge
    cases (colectomy for ulcerative colitis, colon cancer without resection) that cohort definitions must skip."""
    has_visit = visits["n"] > 0
    age = people.age_years(people.obs_end)
    adult = has_visit & (age >= 18)
    smoker_share = 0.27 if prof.code == "EE" else 0.17
    who = np.flatnonzero(adult & (rng.random(people.n) < 0.6))
    who, local = _random_visit(rng, visits, who)
    kind = choose(rng, ((v.CURRENT_SMOKER, smoker_share), (v.FORMER_SMOKER, 0.3), (v.NEVER_SMOKER, 0.7 - smoker_share)),
                  len(who))
    ev.add("observation", person=who, start=visits["start"][local], concept=kind, visit=visits["row"][local])
    fam = np.flatnonzero(adult & (rng.random(people.n) < 0.03))
    fam, local = _random_visit(rng, visits, fam)
    ev.add("observation", person=fam, start=visits["start"][local], concept=v.FAMILY_HISTORY_CRC,
           visit=visits["row"][local])
    colo = np.flatnonzero(has_visit & (age >= 50) & (rng.random(people.n) < 0.12))
    colo, local = _random_visit(rng, visits, colo)
    ev.add("procedure", person=colo, start=visits["start"][local], concept=v.COLONOSCOPY, visit=visits["row"][local])
    other = people.cohort == 0
    uc = np.flatnonzero(status[v.ULCERATIVE_COLITIS] & other & has_visit & (rng.random(people.n) < 0.15))
    uc, local = _random_visit(rng, visits, uc)
    ev.add("procedure", person=uc, start=visits["start"][local], concept=v.TOTAL_COLECTOMY, visit=visits["row"][local])
    no_resection = np.ones(people.n, dtype=bool)
    no_resection[uc] = False
    palliative = np.flatnonzero(other & no_resection & has_visit & (age >= 60) & (rng.random(people.n) < 0.003))
    palliative, local = _random_visit(rng, visits, palliative)
    ev.add("condition", person=palliative, start=visits["start"][local],
           concept=coded(rng, prof, v.COLON_CANCER, len(palliative)), visit=visits["row"][local])


def vitals(rng: np.random.Generator, prof: SiteProfile, people: People, visits: dict[str, np.ndarray],
           status: dict[int, np.ndarray], ev: Events) -> None:
    age = people.age_years(people.obs_end)
    adult = (visits["n"] > 0) & (age >= 18)
    height = np.where(people.male, 180.0, 166.0) + rng.normal(0, 6.5, people.n)
    bmi = 26.0 + 7.0 * status[v.OBESITY] + rng.normal(0, 3.5, people.n)
    who = np.flatnonzero(adult & (rng.random(people.n) < 0.5))
    who, local = _random_visit(rng, visits, who)
    emit_labs(prof, ev, who, visits["start"][local], v.BODY_HEIGHT, np.round(height[who]), visits["row"][local])
    rows = np.flatnonzero((rng.random(len(visits["person"])) < 0.08) & adult[visits["person"]])
    p = visits["person"][rows]
    b = np.clip(bmi[p] + rng.normal(0, 0.8, len(p)), 15, 60)
    emit_labs(prof, ev, p, visits["start"][rows], v.BMI, np.round(b, 1), visits["row"][rows])
    emit_labs(prof, ev, p, visits["start"][rows], v.BODY_WEIGHT, np.round(b * (height[p] / 100) ** 2, 1),
              visits["row"][rows])


# lab, probability in a panel, then a model-unit value: (mean, between-person sd, within sd, log-scale)
PANEL: list[tuple[int, float, tuple[float, float, float, bool]]] = [
    (v.HEMOGLOBIN, 0.9, (13.8, 0.9, 0.5, False)),
    (v.CREATININE, 0.85, (np.log(78.0), 0.15, 0.08, True)),
    (v.CRP, 0.6, (np.log(2.5), 0.5, 0.9, True)),
    (v.SODIUM, 0.5, (140.0, 1.5, 1.8, False)),
    (v.POTASSIUM, 0.5, (4.1, 0.2, 0.3, False)),
    (v.LEUKOCYTES, 0.6, (6.8, 1.2, 1.2, False)),
    (v.PLATELETS, 0.5, (255.0, 45.0, 30.0, False)),
    (v.GLUCOSE, 0.3, (5.5, 0.5, 0.7, False)),
    (v.ALBUMIN, 0.3, (41.0, 2.5, 2.0, False)),
]
_LIMITS = {v.HEMOGLOBIN: (5.0, 20.0), v.CREATININE: (30.0, 900.0), v.CRP: (0.3, 400.0), v.SODIUM: (120.0, 155.0),
           v.POTASSIUM: (2.5, 6.5), v.LEUKOCYTES: (1.0, 40.0), v.PLATELETS: (20.0, 900.0), v.GLUCOSE: (2.5, 30.0),
           v.ALBUMIN: (15.0, 55.0)}


def labs(rng: np.random.Generator, prof: SiteProfile, people: People, visits: dict[str, np.ndarray],
         status: dict[int, np.ndarray], ev: Events) -> None:
    """Lab panels at a share of visits, values around a person-level mean, sicker at hospital visits."""
    p_panel = np.where(visits["concept"] == v.VISIT_OUTPATIENT, 0.2, np.where(
        visits["concept"] == v.VISIT_INPATIENT, 0.95, 0.7))
    rows = np.flatnonzero(rng.random(len(p_panel)) < p_panel)
    person = visits["person"][rows]
    hospital = visits["concept"][rows] != v.VISIT_OUTPATIENT
    male = people.male[person]
    z = people.frailty[person]
    for concept, p, (mean, between, within, log) in PANEL:
        take = rng.random(len(rows)) < p
        person_level = mean + between * rng.standard_normal(people.n)[person]
        x = person_level + within * rng.standard_normal(len(rows))
        if concept == v.HEMOGLOBIN:
            x = x + 0.7 * male - 0.7 * (~male) - 0.3 * z - 1.2 * status[v.ANEMIA][person] - 0.5 * hospital
        elif concept == v.CREATININE:
            x = x + 0.12 * male + 0.5 * status[v.CKD][person]
        elif concept == v.CRP:
            x = x + 0.25 * z + 1.6 * hospital
        elif concept == v.LEUKOCYTES:
            x = x + 2.0 * hospital
        elif concept == v.GLUCOSE:
            x = x + 2.0 * status[v.T2DM][person]
        elif concept == v.ALBUMIN:
            x = x - 1.2 * z - 3.0 * hospital
        x = np.exp(x) if log else x
        lo, hi = _LIMITS[concept]
        x = np.clip(x, lo, hi)
        emit_labs(prof, ev, person[take], visits["start"][rows][take], concept, x[take], visits["row"][rows][take])


def generate(rng: np.random.Generator, prof: SiteProfile, people: People, ev: Events) -> dict[str, np.ndarray]:
    """All background events of a chunk; returns the visits (used by the cohort modules and defects)."""
    visits = make_visits(rng, prof, people, ev)
    status = chronic_conditions(rng, prof, people, visits, ev)
    acute_events(rng, prof, people, visits, ev)
    person_events(rng, prof, people, visits, status, ev)
    vitals(rng, prof, people, visits, status, ev)
    labs(rng, prof, people, visits, status, ev)
    return visits
