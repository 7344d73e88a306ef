"""Site profiles: how the five synthetic sites differ (population, case mix, units, coding habits, data quality).

Every difference is deliberate, so federated methods meet the heterogeneity real Nordic and Baltic sites have:
age and sex mix, cohort sizes, outcome rates (a site offset on the true model's intercept), lab units
(haemoglobin in mmol/L in Denmark, g/dL in Norway, g/L elsewhere), which descendant concepts a site codes,
how often labs are missing, and which data-quality defects are planted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from nordfed.synth import vocabulary as v

SITES = ("DK", "NO", "SE", "FI", "EE")

#: model unit of each lab variable, and how each site's unit converts to it (value_in_site_unit * factor)
LAB_UNITS: dict[int, dict[str, tuple[int, str, float]]] = {
    # concept: {site: (unit_concept_id, unit_source_value, factor to the model unit)}
    v.HEMOGLOBIN: {"DK": (v.UNIT_MMOL_L, "mmol/L", 1 / 0.6206), "NO": (v.UNIT_G_DL, "g/dL", 1.0),
                   "SE": (v.UNIT_G_L, "g/L", 0.1), "FI": (v.UNIT_G_L, "g/L", 0.1), "EE": (v.UNIT_G_L, "g/L", 0.1)},
}

#: (unit concept, UCUM code, plausible low, high) in the model unit, for every lab the generator writes
LAB_MODEL_UNITS: dict[int, tuple[int, str, float, float]] = {
    v.HEMOGLOBIN: (v.UNIT_G_DL, "g/dL", 12.0, 17.0),
    v.ALBUMIN: (v.UNIT_G_L, "g/L", 35.0, 50.0),
    v.CRP: (v.UNIT_MG_L, "mg/L", 0.0, 5.0),
    v.CREATININE: (v.UNIT_UMOL_L, "umol/L", 50.0, 105.0),
    v.LEUKOCYTES: (v.UNIT_10E9_L, "10*9/L", 3.5, 10.0),
    v.PLATELETS: (v.UNIT_10E9_L, "10*9/L", 145.0, 390.0),
    v.SODIUM: (v.UNIT_MMOL_L, "mmol/L", 137.0, 145.0),
    v.POTASSIUM: (v.UNIT_MMOL_L, "mmol/L", 3.5, 4.4),
    v.GLUCOSE: (v.UNIT_MMOL_L, "mmol/L", 4.0, 6.0),
    v.HBA1C: (v.UNIT_PERCENT, "%", 4.0, 6.0),
    v.LYMPHOCYTES: (v.UNIT_10E9_L, "10*9/L", 1.1, 4.8),
    v.NEUTROPHILS: (v.UNIT_10E9_L, "10*9/L", 1.5, 7.3),
    v.LDH: (v.UNIT_U_L, "U/L", 105.0, 205.0),
    v.BETA2_MICROGLOBULIN: (v.UNIT_MG_L, "mg/L", 0.8, 2.4),
    v.IGG: (v.UNIT_G_L, "g/L", 6.7, 14.5),
    v.CEA: (v.UNIT_MG_L, "mg/L", 0.0, 0.005),
    v.BODY_HEIGHT: (v.UNIT_CM, "cm", float("nan"), float("nan")),
    v.BODY_WEIGHT: (v.UNIT_KG, "kg", float("nan"), float("nan")),
    v.BMI: (v.UNIT_KG_M2, "kg/m2", 18.5, 25.0),
    v.ASA_CLASS: (v.UNIT_SCORE, "{score}", float("nan"), float("nan")),
}


def site_unit(concept_id: int, site: str) -> tuple[int, str, float]:
    """(unit_concept_id, unit_source_value, factor) a site records ``concept_id`` in; value_site * factor = model."""
    per_site = LAB_UNITS.get(concept_id)
    if per_site is not None:
        return per_site[site]
    unit, code, _lo, _hi = LAB_MODEL_UNITS[concept_id]
    return unit, code, 1.0


@dataclass(frozen=True)
class SiteProfile:
    code: str
    name: str
    data_start: dt.date
    data_end: dt.date
    male_share: float
    #: weights of the age bands 0-17, 18-39, 40-59, 60-74, 75-99 (age at data_end)
    age_weights: tuple[float, float, float, float, float]
    crc_share: float  # fraction of persons in the colorectal cancer surgery cohort
    cll_share: float
    crc_offset: float  # added to the intercept of the CRC 1-year mortality model
    cll_offset: float  # added to the intercept of the CLL serious-infection model
    emergency_shift: float  # added to the logit of emergency surgery
    laparoscopic_share: float
    lab_missing_scale: float  # multiplies each lab's base missingness
    visit_rate: float  # outpatient visits per person-year at age 50
    #: which concept a site codes for a coarse diagnosis: {coarse: ((concept, weight), ...)}
    coding: dict[int, tuple[tuple[int, float], ...]] = field(default_factory=dict)
    defects: tuple[str, ...] = ()


_SPECIFIC_CRC = ((v.CECUM_CANCER, 0.2), (v.ASCENDING_COLON_CANCER, 0.2), (v.TRANSVERSE_COLON_CANCER, 0.15),
                 (v.SIGMOID_COLON_CANCER, 0.45))

PROFILES: dict[str, SiteProfile] = {
    "DK": SiteProfile(
        "DK", "Denmark (Zealand University Hospital)", dt.date(2008, 1, 1), dt.date(2024, 12, 31), 0.495,
        (0.19, 0.26, 0.27, 0.18, 0.10), crc_share=0.075, cll_share=0.020, crc_offset=0.0, cll_offset=0.0,
        emergency_shift=0.0, laparoscopic_share=0.75, lab_missing_scale=0.8, visit_rate=1.0,
        coding={v.COLON_CANCER: _SPECIFIC_CRC, v.MYOCARDIAL_INFARCTION: ((v.STEMI, 0.4), (v.NSTEMI, 0.6)),
                v.HEART_FAILURE: ((v.CHRONIC_CHF, 1.0),)},
        defects=()),
    "NO": SiteProfile(
        "NO", "Norway (Oslo University Hospital)", dt.date(2010, 1, 1), dt.date(2024, 12, 31), 0.502,
        (0.21, 0.28, 0.26, 0.16, 0.09), crc_share=0.065, cll_share=0.018, crc_offset=-0.15, cll_offset=-0.1,
        emergency_shift=-0.2, laparoscopic_share=0.8, lab_missing_scale=1.0, visit_rate=0.9,
        coding={v.COLON_CANCER: ((v.COLON_CANCER, 1.0),), v.MYOCARDIAL_INFARCTION: ((v.MYOCARDIAL_INFARCTION, 1.0),)},
        defects=("concept_conformance", "missing_unit")),
    "SE": SiteProfile(
        "SE", "Sweden (Skåne University Hospital)", dt.date(2009, 1, 1), dt.date(2024, 12, 31), 0.500,
        (0.21, 0.27, 0.26, 0.16, 0.10), crc_share=0.070, cll_share=0.020, crc_offset=-0.25, cll_offset=0.0,
        emergency_shift=0.0, laparoscopic_share=0.6, lab_missing_scale=1.0, visit_rate=0.95,
        coding={v.COLON_CANCER: ((v.COLON_CANCER, 0.5), *((c, w * 0.5) for c, w in _SPECIFIC_CRC)),
                v.DEMENTIA: ((v.ALZHEIMERS, 0.5), (v.DEMENTIA, 0.5))},
        defects=("implausible_value", "sex_plausibility")),
    "FI": SiteProfile(
        "FI", "Finland (Helsinki University Hospital)", dt.date(2011, 1, 1), dt.date(2024, 12, 31), 0.493,
        (0.17, 0.25, 0.27, 0.19, 0.12), crc_share=0.060, cll_share=0.022, crc_offset=0.10, cll_offset=0.15,
        emergency_shift=0.1, laparoscopic_share=0.55, lab_missing_scale=1.2, visit_rate=1.05,
        coding={v.COLON_CANCER: ((v.COLON_CANCER, 1.0),), v.CKD: ((v.CKD_STAGE_3, 0.7), (v.CKD_STAGE_4, 0.3))},
        defects=("missing_unit", "implausible_value")),
    "EE": SiteProfile(
        "EE", "Estonia (Tartu University Hospital)", dt.date(2012, 1, 1), dt.date(2024, 12, 31), 0.470,
        (0.20, 0.28, 0.27, 0.16, 0.09), crc_share=0.055, cll_share=0.015, crc_offset=0.35, cll_offset=0.25,
        emergency_shift=0.45, laparoscopic_share=0.35, lab_missing_scale=1.5, visit_rate=0.8,
        coding={v.COLON_CANCER: ((v.COLON_CANCER, 1.0),),
                v.CEREBROVASCULAR_DISEASE: ((v.STROKE, 0.6), (v.CEREBROVASCULAR_DISEASE, 0.4))},
        defects=("concept_conformance", "sex_plausibility")),
}


def profile(site: str) -> SiteProfile:
    try:
        return PROFILES[site.upper()]
    except KeyError:
        raise ValueError(f"unknown site {site!r}; choose one of {', '.join(SITES)}") from None
