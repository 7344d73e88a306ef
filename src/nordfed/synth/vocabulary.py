"""The small vocabulary bundled with every synthetic site, and a constant for every concept id it uses.

Real OMOP concept ids are used where we are sure of them: gender, visit and type concepts, UCUM units, common
SNOMED conditions, LOINC labs and RxNorm ingredients. Concepts whose standard id we could not confirm live in a
local vocabulary, ``NORDFED``, with ids above 2,000,000,000 — the range OMOP reserves for site-local concepts — so
no id here ever claims to be a standard concept it is not. Either way the hierarchy works as OMOP's does:
``concept_ancestor`` holds a self row (level 0) for every concept and a row for every ancestor, so
"Malignant tumor of sigmoid colon" is found under "Malignant neoplasm of large intestine", each colectomy under
"Resection of large intestine", and each ingredient under its ATC classes.

>>> GENDER_MALE, GENDER_FEMALE
(8507, 8532)
>>> bool(ancestors()[SIGMOID_COLON_CANCER].keys() >= {COLON_CANCER, LARGE_INTESTINE_CANCER})
True
"""

from __future__ import annotations

import datetime as dt
from functools import cache

import pandas as pd

LOCAL_BASE = 2_000_000_000


def _local(n: int) -> int:
    return LOCAL_BASE + n


# ----------------------------------------------------------------------------------------------- metadata
NO_MATCHING_CONCEPT = 0
GENDER_MALE = 8507
GENDER_FEMALE = 8532
VISIT_INPATIENT = 9201
VISIT_OUTPATIENT = 9202
VISIT_ER = 9203
VISIT_ER_INPATIENT = 262  # Emergency Room and Inpatient Visit: how an emergency admission is recorded
TYPE_EHR = 32817
TYPE_REGISTRY = 32879
CDM_V54 = 756265

# ----------------------------------------------------------------------------------------------- UCUM units
UNIT_G_DL = 8713
UNIT_G_L = 8636
UNIT_MMOL_L = 8753
UNIT_MG_L = 8751
UNIT_UMOL_L = 8749
UNIT_10E9_L = 9444
UNIT_KG = 9529
UNIT_CM = 8582
UNIT_KG_M2 = 9531
UNIT_U_L = 8645
UNIT_PERCENT = 8554
UNIT_SCORE = _local(1)  # {score}: dimensionless ordinal scores such as ASA class

# ----------------------------------------------------------------------------------------------- conditions
LARGE_INTESTINE_CANCER = _local(100)  # Malignant neoplasm of large intestine
COLON_CANCER = 4180790  # Malignant tumor of colon
RECTAL_CANCER = _local(101)
CECUM_CANCER = _local(102)
ASCENDING_COLON_CANCER = _local(103)
TRANSVERSE_COLON_CANCER = _local(104)
SIGMOID_COLON_CANCER = _local(105)
RECTOSIGMOID_CANCER = _local(106)
LIVER_METASTASIS = _local(107)  # Secondary malignant neoplasm of liver
CLL = _local(110)  # Chronic lymphoid leukemia
MYOCARDIAL_INFARCTION = 4329847
STEMI = 4296653
NSTEMI = 4270024
HEART_FAILURE = 316139
CHRONIC_CHF = 4229440
PERIPHERAL_VASCULAR_DISEASE = 321052
CEREBROVASCULAR_DISEASE = 381591
STROKE = 381316
DEMENTIA = 4182210
ALZHEIMERS = 378419
COPD = 255573
RHEUMATOID_ARTHRITIS = 80809
PEPTIC_ULCER = 4027663
CIRRHOSIS = 4064161
T2DM = 201826
T2DM_COMPLICATION = 443732  # Disorder due to type 2 diabetes mellitus
HEMIPLEGIA = _local(120)
CKD = 46271022
CKD_STAGE_3 = 443597
CKD_STAGE_4 = 443612
ATRIAL_FIBRILLATION = 313217
HYPERTENSION = 320128
OBESITY = 433736
MALNUTRITION = _local(121)
INTESTINAL_OBSTRUCTION = _local(122)
ANEMIA = 439777
DEPRESSION = 440383
PNEUMONIA = 255848
SEPSIS = 132797
URINARY_TRACT_INFECTION = 81902
CELLULITIS = _local(130)
HERPES_ZOSTER = _local(131)
FEBRILE_NEUTROPENIA = _local(132)
PROSTATE_CANCER = 4163261
BENIGN_PROSTATIC_HYPERPLASIA = 198803
ENDOMETRIOSIS = 433527
OSTEOARTHRITIS = 80180
ASTHMA = 317009
HYPOTHYROIDISM = 140673
GERD = 318800
HYPERLIPIDEMIA = 432867
MIGRAINE = 318736
LOW_BACK_PAIN = 194133
ULCERATIVE_COLITIS = 81893
# non-standard source concepts (ICD-10 codes as a site records them; they map to the SNOMED concepts above)
ICD10_C18_9 = _local(900)
ICD10_I10 = _local(901)
ICD10_E11_9 = _local(902)
ICD10_J44_9 = _local(903)

# ----------------------------------------------------------------------------------------------- procedures
RESECTION_LARGE_INTESTINE = _local(200)
COLECTOMY = _local(201)
RIGHT_HEMICOLECTOMY = _local(202)
LEFT_HEMICOLECTOMY = _local(203)
SIGMOID_COLECTOMY = _local(204)
TOTAL_COLECTOMY = _local(205)
RESECTION_OF_RECTUM = _local(206)
ANTERIOR_RESECTION_RECTUM = _local(207)
ABDOMINOPERINEAL_RESECTION = _local(208)
HARTMANN_PROCEDURE = _local(209)
LAPAROSCOPIC_RESECTION_LARGE_INTESTINE = _local(210)
LAP_RIGHT_HEMICOLECTOMY = _local(211)
LAP_SIGMOID_COLECTOMY = _local(212)
LAP_ANTERIOR_RESECTION = _local(213)
COLONOSCOPY = _local(220)
CT_ABDOMEN = _local(221)
BLOOD_TRANSFUSION = _local(222)
CHOLECYSTECTOMY = _local(223)

# ----------------------------------------------------------------------------------------------- measurements
HEMOGLOBIN = 3000963
ALBUMIN = 3024561
CRP = 3020460
CREATININE = 3016723
LEUKOCYTES = 3000905
PLATELETS = 3024929
SODIUM = 3019550
POTASSIUM = 3023103
GLUCOSE = 3004501
HBA1C = 3004410
BODY_HEIGHT = 3036277
BODY_WEIGHT = 3025315
BMI = 3038553
LYMPHOCYTES = 3004327
NEUTROPHILS = 3013650
LDH = _local(300)
BETA2_MICROGLOBULIN = _local(301)
IGG = _local(302)
CEA = _local(303)
ASA_CLASS = _local(310)  # ASA physical status, value_as_number 1..5
TUMOR_STAGE = _local(320)  # grouping of the stage concepts below (Cancer Modifier style: one concept per stage)
STAGE_I = _local(321)
STAGE_II = _local(322)
STAGE_III = _local(323)
STAGE_IV = _local(324)

# ----------------------------------------------------------------------------------------------- observations
CURRENT_SMOKER = _local(400)
FORMER_SMOKER = _local(401)
NEVER_SMOKER = _local(402)
FAMILY_HISTORY_CRC = _local(403)

# ----------------------------------------------------------------------------------------------- drugs (RxNorm)
WARFARIN = 1310149
APIXABAN = 43013024
RIVAROXABAN = 40241331
ASPIRIN = 1112807
CLOPIDOGREL = 1322184
PREDNISOLONE = 1550557
SIMVASTATIN = 1539403
ATORVASTATIN = 1545958
ROSUVASTATIN = 1510813
FUROSEMIDE = 956874
INSULIN_GLARGINE = 1502905
METFORMIN = 1503297
MORPHINE = 1110410
OXYCODONE = 1124957
OMEPRAZOLE = 923645
PANTOPRAZOLE = 948078
METOPROLOL = 1307046
LISINOPRIL = 1308216
AMLODIPINE = 1332418
CAPECITABINE = 1337620
FLUOROURACIL = 955632
OXALIPLATIN = 1318011
RITUXIMAB = 1314273
IBRUTINIB = _local(500)
VENETOCLAX = _local(501)
CHLORAMBUCIL = _local(502)
FLUDARABINE = _local(503)
ACETAMINOPHEN = 1125315
AMOXICILLIN = 1713332
LEVOTHYROXINE = 1501700
ALBUTEROL = 1154343
# ATC classes (classification concepts, local ids)
ATC_B01A_ANTITHROMBOTICS = _local(600)
ATC_B01AA_VKA = _local(601)
ATC_B01AF_XA_INHIBITORS = _local(602)
ATC_B01AC_PLATELET_INHIBITORS = _local(603)
ATC_H02AB_GLUCOCORTICOIDS = _local(604)
ATC_C10AA_STATINS = _local(605)
ATC_C03CA_LOOP_DIURETICS = _local(606)
ATC_A10A_INSULINS = _local(607)
ATC_A10BA_BIGUANIDES = _local(608)
ATC_N02A_OPIOIDS = _local(609)
ATC_A02BC_PPI = _local(610)
ATC_C07AB_BETA_BLOCKERS = _local(611)
ATC_C09AA_ACE_INHIBITORS = _local(612)
ATC_C08CA_DIHYDROPYRIDINES = _local(613)
ATC_L01_ANTINEOPLASTICS = _local(614)
ATC_L01BC_PYRIMIDINE_ANALOGUES = _local(615)
ATC_L01XA_PLATINUM = _local(616)
ATC_L01EL_BTK_INHIBITORS = _local(617)
ATC_L01XX_OTHER_ANTINEOPLASTICS = _local(618)
ATC_L01FA_CD20_ANTIBODIES = _local(619)
ATC_L01AA_NITROGEN_MUSTARDS = _local(620)
ATC_L01BB_PURINE_ANALOGUES = _local(621)
ATC_N02BE_ANILIDES = _local(622)
ATC_J01_ANTIBACTERIALS = _local(623)
ATC_H03AA_THYROID = _local(624)
ATC_R03AC_BETA2_AGONISTS = _local(625)

#: non-standard source concept -> the standard concept it maps to
MAPS_TO: dict[int, int] = {ICD10_C18_9: COLON_CANCER, ICD10_I10: HYPERTENSION, ICD10_E11_9: T2DM, ICD10_J44_9: COPD}

_S, _C = "S", "C"
_ATC_LEVEL = {1: "ATC 1st", 3: "ATC 2nd", 4: "ATC 3rd", 5: "ATC 4th", 7: "ATC 5th"}
_VALID_START, _VALID_END = dt.date(1970, 1, 1), dt.date(2099, 12, 31)


@cache
def _rows() -> list[tuple[int, str, str, str, str, str | None, str, tuple[int, ...]]]:
    from nordfed.synth.vocabulary_rows import ATC, CONCEPTS, INGREDIENTS

    rows = list(CONCEPTS)
    rows += [(cid, name, "Drug", "ATC", _ATC_LEVEL[len(code)], _C, code, parents) for cid, code, name, parents in ATC]
    rows += [(cid, name, "Drug", "RxNorm" if cid < LOCAL_BASE else "NORDFED", "Ingredient", _S, code, parents)
             for cid, name, code, parents in INGREDIENTS]
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "duplicate concept id in the bundled vocabulary"
    known = set(ids)
    assert all(p in known for r in rows for p in r[7]), "parent concept missing from the bundled vocabulary"
    return rows


@cache
def ancestors() -> dict[int, dict[int, tuple[int, int]]]:
    """concept_id -> {ancestor_id: (min_levels, max_levels)}, including the concept itself at level 0."""
    parents = {r[0]: r[7] for r in _rows()}
    out: dict[int, dict[int, tuple[int, int]]] = {}

    def walk(cid: int) -> dict[int, tuple[int, int]]:
        if cid in out:
            return out[cid]
        levels: dict[int, tuple[int, int]] = {cid: (0, 0)}
        for p in parents[cid]:
            for anc, (lo, hi) in walk(p).items():
                old = levels.get(anc)
                levels[anc] = (lo + 1, hi + 1) if old is None else (min(old[0], lo + 1), max(old[1], hi + 1))
        out[cid] = levels
        return levels

    for cid in parents:
        walk(cid)
    return out


def descendants(concept_id: int) -> set[int]:
    """Every concept in the bundled vocabulary at or below ``concept_id``."""
    return {cid for cid, ancs in ancestors().items() if concept_id in ancs}


def concept_name(concept_id: int) -> str:
    return _names()[concept_id][0]


def concept_code(concept_id: int) -> str:
    return _names()[concept_id][1]


@cache
def _names() -> dict[int, tuple[str, str]]:
    return {r[0]: (r[1], r[6]) for r in _rows()}


def concept_table() -> pd.DataFrame:
    rows = _rows()
    return pd.DataFrame({
        "concept_id": [r[0] for r in rows],
        "concept_name": [r[1] for r in rows],
        "domain_id": [r[2] for r in rows],
        "vocabulary_id": [r[3] for r in rows],
        "concept_class_id": [r[4] for r in rows],
        "standard_concept": [r[5] for r in rows],
        "concept_code": [r[6] for r in rows],
        "valid_start_date": [_VALID_START] * len(rows),
        "valid_end_date": [_VALID_END] * len(rows),
        "invalid_reason": [None] * len(rows),
    })


def concept_ancestor_table() -> pd.DataFrame:
    triples = [(anc, cid, lo, hi) for cid, ancs in ancestors().items() for anc, (lo, hi) in ancs.items()
               if cid != 0]
    triples.sort()
    return pd.DataFrame(triples, columns=["ancestor_concept_id", "descendant_concept_id",
                                          "min_levels_of_separation", "max_levels_of_separation"])


_RELATIONSHIPS = [
    # id, name, hierarchical, defines ancestry, reverse
    ("Is a", "Is a", "1", "1", "Subsumes"),
    ("Subsumes", "Subsumes", "1", "1", "Is a"),
    ("Maps to", "Non-standard to Standard map (OMOP)", "0", "0", "Mapped from"),
    ("Mapped from", "Standard to Non-standard map (OMOP)", "0", "0", "Maps to"),
    ("RxNorm - ATC", "RxNorm to ATC (RxNorm)", "0", "1", "ATC - RxNorm"),
    ("ATC - RxNorm", "ATC to RxNorm (RxNorm)", "1", "1", "RxNorm - ATC"),
]


def concept_relationship_table() -> pd.DataFrame:
    vocab = {r[0]: r[3] for r in _rows()}
    pairs: list[tuple[int, int, str]] = []
    for cid, _name, _dom, voc, _cls, _std, _code, parents in _rows():
        for p in parents:
            down, up = ("RxNorm - ATC", "ATC - RxNorm") if vocab[p] == "ATC" and voc != "ATC" else ("Is a", "Subsumes")
            pairs += [(cid, p, down), (p, cid, up)]
    for src, std in MAPS_TO.items():
        pairs += [(src, std, "Maps to"), (std, src, "Mapped from")]
    # every standard concept maps to itself, as in OMOP
    pairs += [(r[0], r[0], "Maps to") for r in _rows() if r[5] == _S]
    pairs.sort()
    return pd.DataFrame({
        "concept_id_1": [p[0] for p in pairs],
        "concept_id_2": [p[1] for p in pairs],
        "relationship_id": [p[2] for p in pairs],
        "valid_start_date": [_VALID_START] * len(pairs),
        "valid_end_date": [_VALID_END] * len(pairs),
        "invalid_reason": [None] * len(pairs),
    })


def vocabulary_tables() -> dict[str, pd.DataFrame]:
    """Rows for the vocabulary tables: concept, concept_ancestor, concept_relationship, relationship,
    vocabulary, domain and concept_class."""
    concept = concept_table()
    vocabs = sorted(set(concept["vocabulary_id"]))
    domains = sorted(set(concept["domain_id"]))
    classes = sorted(set(concept["concept_class_id"]))
    names = {"NORDFED": "nordfed local concepts (ids above 2,000,000,000; unconfirmed standard ids)",
             "None": "OMOP Standardized Vocabularies"}
    return {
        "concept": concept,
        "concept_ancestor": concept_ancestor_table(),
        "concept_relationship": concept_relationship_table(),
        "relationship": pd.DataFrame(
            [(r, n, h, d, rev, 0) for r, n, h, d, rev in _RELATIONSHIPS],
            columns=["relationship_id", "relationship_name", "is_hierarchical", "defines_ancestry",
                     "reverse_relationship_id", "relationship_concept_id"]),
        "vocabulary": pd.DataFrame({
            "vocabulary_id": vocabs,
            "vocabulary_name": [names.get(v, v) for v in vocabs],
            "vocabulary_reference": ["nordfed bundled subset"] * len(vocabs),
            "vocabulary_version": ["nordfed-synth 1"] * len(vocabs),
            "vocabulary_concept_id": [0] * len(vocabs),
        }),
        "domain": pd.DataFrame({"domain_id": domains, "domain_name": domains, "domain_concept_id": [0] * len(domains)}),
        "concept_class": pd.DataFrame({"concept_class_id": classes, "concept_class_name": classes,
                                       "concept_class_concept_id": [0] * len(classes)}),
    }
