"""SQL for each covariate analysis, FeatureExtraction-style: ``covariate_id = concept_id * 1000 + analysis_id``.

Every builder returns a DuckDB-dialect SELECT of ``row_id, covariate_id, covariate_value`` over the
population relation ``nf_population(row_id, subject_id, cohort_start_date)``; the extractor unions them so
the engine aggregates in one pass and no Python loop touches rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

POP = "nf_population"

# analysis ids (FeatureExtraction's numbering where nordfed has the same analysis)
GENDER, AGE_GROUP, INDEX_YEAR, INDEX_MONTH = 1, 3, 6, 7
CONDITION_LONG, CONDITION_SHORT = 102, 103
DRUG_GROUP_LONG, DRUG_GROUP_SHORT = 410, 411
PROCEDURE_LONG, PROCEDURE_SHORT = 702, 703
MEASUREMENT_LONG, MEASUREMENT_SHORT = 802, 803
MEASUREMENT_VALUE_LONG = 812
CHARLSON = 901

ANALYSIS_NAMES: dict[int, str] = {
    GENDER: "gender", AGE_GROUP: "age group", INDEX_YEAR: "index year", INDEX_MONTH: "index month",
    CONDITION_LONG: "condition occurrence, long term", CONDITION_SHORT: "condition occurrence, short term",
    DRUG_GROUP_LONG: "drug group exposure, long term", DRUG_GROUP_SHORT: "drug group exposure, short term",
    PROCEDURE_LONG: "procedure occurrence, long term", PROCEDURE_SHORT: "procedure occurrence, short term",
    MEASUREMENT_LONG: "measurement, long term", MEASUREMENT_SHORT: "measurement, short term",
    MEASUREMENT_VALUE_LONG: "measurement value (last), long term", CHARLSON: "Charlson comorbidity index",
}
#: analyses whose values are not 0/1
CONTINUOUS = frozenset({MEASUREMENT_VALUE_LONG, CHARLSON})

#: FeatureExtraction's (v2) Charlson categories: id → (name, weight, ancestor concept ids)
CHARLSON_CATEGORIES: dict[int, tuple[str, int, tuple[int, ...]]] = {
    1: ("Myocardial infarction", 1, (4329847,)),
    2: ("Congestive heart failure", 1, (316139,)),
    3: ("Peripheral vascular disease", 1, (321052,)),
    4: ("Cerebrovascular disease", 1, (381591, 434056)),
    5: ("Dementia", 1, (4182210,)),
    6: ("Chronic pulmonary disease", 1, (4063381,)),
    7: ("Rheumatologic disease", 1, (257628, 134442, 80800, 80809, 256197, 255348)),
    8: ("Peptic ulcer disease", 1, (4247120,)),
    9: ("Mild liver disease", 1, (4064161, 4212540)),
    10: ("Diabetes (mild to moderate)", 1, (201820,)),
    11: ("Diabetes with chronic complications", 2, (443767, 442793)),
    12: ("Hemiplegia or paraplegia", 2, (192606, 374022)),
    13: ("Renal disease", 2, (4030518,)),
    14: ("Any malignancy", 2, (443392,)),
    15: ("Moderate to severe liver disease", 3, (4245975, 4029488, 192680, 24966)),
    16: ("Metastatic solid tumor", 6, (432851,)),
    17: ("AIDS", 6, (439727,)),
}
#: (milder, more severe): the milder category's weight is dropped when both are present
CHARLSON_HIERARCHY = ((10, 11), (9, 15), (14, 16))


def _one() -> str:
    return "CAST(1 AS DOUBLE) AS covariate_value"


def demographics_sql(analysis_id: int) -> str:
    exprs = {
        GENDER: "CAST(p.gender_concept_id AS BIGINT)",
        AGE_GROUP: "CAST(floor((year(c.cohort_start_date) - p.year_of_birth) / 5) AS BIGINT)",
        INDEX_YEAR: "CAST(year(c.cohort_start_date) AS BIGINT)",
        INDEX_MONTH: "CAST(month(c.cohort_start_date) AS BIGINT)",
    }
    where = " WHERE p.gender_concept_id <> 0" if analysis_id == GENDER else ""
    return (f"SELECT c.row_id, {exprs[analysis_id]} * 1000 + {analysis_id} AS covariate_id, {_one()} "
            f"FROM {POP} c JOIN person p ON p.person_id = c.subject_id{where}")


def _windows(windows: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"({int(a)}, {int(lo)})" for lo, a in windows)


def domain_window_sql(table: str, concept_col: str, date_col: str, windows: Sequence[tuple[int, int]],
                      end_day: int) -> str:
    """Presence of each concept with a record dated ``start .. end_day`` days from index, for each
    ``(start, analysis_id)`` window; one pass over the table serves every window."""
    lo = min(w[0] for w in windows)
    inner = (f"SELECT c.row_id, c.cohort_start_date, t.{concept_col} AS concept_id, max(t.{date_col}) AS last_date "
             f"FROM {POP} c JOIN {table} t ON t.person_id = c.subject_id "
             f"WHERE t.{date_col} >= c.cohort_start_date + {int(lo)} "
             f"AND t.{date_col} <= c.cohort_start_date + {int(end_day)} AND t.{concept_col} <> 0 "
             f"GROUP BY c.row_id, c.cohort_start_date, t.{concept_col}")
    return (f"SELECT x.row_id, CAST(x.concept_id AS BIGINT) * 1000 + w.analysis_id AS covariate_id, {_one()} "
            f"FROM ({inner}) x JOIN (VALUES {_windows(windows)}) AS w(analysis_id, start_day) "
            f"ON x.last_date >= x.cohort_start_date + w.start_day")


def drug_group_sql(windows: Sequence[tuple[int, int]], end_day: int) -> str:
    """Exposure overlapping the window, rolled up to RxNorm ingredients and ATC classes (FE's drug groups).

    Relies on concept_ancestor's self rows (OMOP ships them) for records coded at the ingredient itself.
    """
    lo = min(w[0] for w in windows)
    groups = ("SELECT ca.ancestor_concept_id, ca.descendant_concept_id FROM concept_ancestor ca "
              "JOIN concept a ON a.concept_id = ca.ancestor_concept_id "
              "WHERE (a.vocabulary_id = 'RxNorm' AND a.concept_class_id = 'Ingredient') "
              "OR (a.vocabulary_id = 'ATC' AND length(a.concept_code) IN (1, 3, 4, 5))")
    end = "COALESCE(d.drug_exposure_end_date, d.drug_exposure_start_date)"
    inner = (f"SELECT c.row_id, c.cohort_start_date, g.ancestor_concept_id AS concept_id, max({end}) AS last_date "
             f"FROM {POP} c JOIN drug_exposure d ON d.person_id = c.subject_id "
             f"JOIN ({groups}) g ON g.descendant_concept_id = d.drug_concept_id "
             f"WHERE d.drug_exposure_start_date <= c.cohort_start_date + {int(end_day)} "
             f"AND {end} >= c.cohort_start_date + {int(lo)} "
             f"GROUP BY c.row_id, c.cohort_start_date, g.ancestor_concept_id")
    return (f"SELECT x.row_id, CAST(x.concept_id AS BIGINT) * 1000 + w.analysis_id AS covariate_id, {_one()} "
            f"FROM ({inner}) x JOIN (VALUES {_windows(windows)}) AS w(analysis_id, start_day) "
            f"ON x.last_date >= x.cohort_start_date + w.start_day")


def measurement_value_sql(start_day: int, end_day: int, analysis_id: int) -> str:
    """The last numeric value of each measurement (per unit) in the window.

    ``covariate_id = concept_id * 1e6 + (unit_concept_id mod 1000) * 1000 + analysis_id`` as in
    FeatureExtraction's measurement-value analyses.
    """
    inner = (f"SELECT c.row_id, m.measurement_concept_id, COALESCE(m.unit_concept_id, 0) AS unit, "
             f"m.value_as_number, row_number() OVER (PARTITION BY c.row_id, m.measurement_concept_id, "
             f"COALESCE(m.unit_concept_id, 0) ORDER BY m.measurement_date DESC, m.measurement_id DESC) AS rn "
             f"FROM {POP} c JOIN measurement m ON m.person_id = c.subject_id "
             f"WHERE m.measurement_date >= c.cohort_start_date + {int(start_day)} "
             f"AND m.measurement_date <= c.cohort_start_date + {int(end_day)} "
             f"AND m.value_as_number IS NOT NULL AND m.measurement_concept_id <> 0")
    return (f"SELECT row_id, CAST(measurement_concept_id AS BIGINT) * 1000000 + (unit % 1000) * 1000 + "
            f"{analysis_id} AS covariate_id, CAST(value_as_number AS DOUBLE) AS covariate_value "
            f"FROM ({inner}) mv WHERE rn = 1")


def charlson_sql(categories: Mapping[int, tuple[str, int, Sequence[int]]] | None = None) -> str:
    """FeatureExtraction's Charlson index from conditions recorded on or before the index date."""
    cats = categories or CHARLSON_CATEGORIES
    values = ", ".join(f"({cat}, {weight}, {anc})" for cat, (_, weight, ancs) in cats.items() for anc in ancs)
    concepts = (f"SELECT DISTINCT v.cat, v.weight, ca.descendant_concept_id AS concept_id FROM (VALUES {values}) "
                "AS v(cat, weight, ancestor) JOIN concept_ancestor ca ON ca.ancestor_concept_id = v.ancestor")
    hits = (f"SELECT DISTINCT c.row_id, cc.cat, cc.weight FROM {POP} c JOIN condition_occurrence co "
            f"ON co.person_id = c.subject_id AND co.condition_start_date <= c.cohort_start_date "
            f"JOIN ({concepts}) cc ON cc.concept_id = co.condition_concept_id")
    has = "max(CASE WHEN cat = {} THEN 1 ELSE 0 END)"
    weights = {c: w for c, (_, w, _) in cats.items()}
    adjust = " ".join(f"- {has.format(m)} * {has.format(s)} * {weights[m]}" for m, s in CHARLSON_HIERARCHY
                      if m in weights and s in weights)
    return (f"SELECT row_id, CAST(1000 + {CHARLSON} AS BIGINT) AS covariate_id, "
            f"CAST(sum(weight) {adjust} AS DOUBLE) AS covariate_value FROM ({hits}) h GROUP BY row_id")
