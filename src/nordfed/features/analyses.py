"""SQL for each covariate analysis, FeatureExtraction-style: ``covariate_id = concept_id * 1000 + analysis_id``.

Builders return DuckDB-dialect SELECTs (translated by sqlglot elsewhere) over the population relation
``nf_population(k, row_id, subject_id, cohort_start_date)`` (``k`` is the row's position in the matrix). Each
domain table is read once for all of its windows: :class:`Domain` gives its qualifying *records* (``day`` = days
from index), joined in the engine (:meth:`Domain.records_sql`) or scanned for an in-memory join
(:meth:`Domain.scan_sql`); :mod:`nordfed.features.assemble` turns records into covariates with numpy. Grouping
in SQL would not shrink the result (almost every person-concept pair is unique) but costs a hash aggregation
over every record, so repeats are merged while the sparse matrix is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

POP = "nf_population"

# analysis ids exactly as FeatureExtraction's PrespecAnalyses.csv numbers them, so covariate ids
# (concept_id * 1000 + analysis_id) mean the same thing to an OHDSI user as in PatientLevelPrediction
GENDER, AGE_GROUP, INDEX_YEAR, INDEX_MONTH = 1, 3, 6, 7
CONDITION_LONG, CONDITION_SHORT = 102, 104  # ConditionOccurrenceLongTerm / ShortTerm
DRUG_GROUP_LONG, DRUG_GROUP_SHORT = 410, 412  # DrugGroupEraLongTerm / ShortTerm (ATC and ingredient roll-up)
PROCEDURE_LONG, PROCEDURE_SHORT = 502, 504  # ProcedureOccurrenceLongTerm / ShortTerm
MEASUREMENT_LONG, MEASUREMENT_SHORT = 702, 704  # MeasurementLongTerm / ShortTerm
MEASUREMENT_VALUE_LONG = 706  # MeasurementValueLongTerm (FE keys it by measurement-unit; we take the last value)
OBSERVATION_LONG, OBSERVATION_SHORT = 802, 804  # ObservationLongTerm / ShortTerm
CHARLSON = 901
# VisitConceptCountLongTerm / ShortTerm: visits overlapping the window, counted per visit_concept_id
VISIT_CONCEPT_COUNT_LONG, VISIT_CONCEPT_COUNT_SHORT = 923, 925

ANALYSIS_NAMES: dict[int, str] = {
    GENDER: "gender", AGE_GROUP: "age group", INDEX_YEAR: "index year", INDEX_MONTH: "index month",
    CONDITION_LONG: "condition occurrence, long term", CONDITION_SHORT: "condition occurrence, short term",
    DRUG_GROUP_LONG: "drug group exposure, long term", DRUG_GROUP_SHORT: "drug group exposure, short term",
    PROCEDURE_LONG: "procedure occurrence, long term", PROCEDURE_SHORT: "procedure occurrence, short term",
    MEASUREMENT_LONG: "measurement, long term", MEASUREMENT_SHORT: "measurement, short term",
    MEASUREMENT_VALUE_LONG: "measurement value (last), long term",
    OBSERVATION_LONG: "observation, long term", OBSERVATION_SHORT: "observation, short term",
    CHARLSON: "Charlson comorbidity index",
    VISIT_CONCEPT_COUNT_LONG: "visit concept count, long term",
    VISIT_CONCEPT_COUNT_SHORT: "visit concept count, short term",
}
#: analyses whose values are not 0/1
CONTINUOUS = frozenset({MEASUREMENT_VALUE_LONG, CHARLSON, VISIT_CONCEPT_COUNT_LONG, VISIT_CONCEPT_COUNT_SHORT})

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


def demographics_sql(pop_table: str = POP) -> str:
    """Per population row: gender, year of birth and the index year and month (covariates built in numpy)."""
    return ("SELECT c.k, CAST(p.gender_concept_id AS BIGINT) AS gender_concept_id, "
            "CAST(p.year_of_birth AS INTEGER) AS year_of_birth, CAST(year(c.cohort_start_date) AS INTEGER) AS year, "
            "CAST(month(c.cohort_start_date) AS INTEGER) AS month "
            f"FROM {pop_table} c JOIN person p ON p.person_id = c.subject_id")


def persons_sql(person_min: int, person_max: int) -> str:
    """The person columns the demographics need, for an in-memory join (the scan path)."""
    return ("SELECT person_id, CAST(gender_concept_id AS BIGINT) AS gender_concept_id, "
            f"CAST(year_of_birth AS INTEGER) AS year_of_birth FROM person "
            f"WHERE person_id BETWEEN {int(person_min)} AND {int(person_max)}")


@dataclass(frozen=True)
class Domain:
    """A domain table's records as the presence analyses see them.

    A record counts in a window ``start .. end`` (days from index) when ``first <= index + end`` and
    ``last >= index + start``; its ``day`` is ``last - index``. ``extra`` are further ``(alias, expression)``
    columns, ``where`` a further filter (both over the table's own columns).
    """

    table: str
    concept: str
    first: str
    last: str
    extra: tuple[tuple[str, str], ...] = ()
    where: str = ""

    def _filters(self) -> str:
        return f" AND {self.concept} <> 0" + (f" AND {self.where}" if self.where else "")

    def _extra(self) -> str:
        return "".join(f", {expr} AS {alias}" for alias, expr in self.extra)

    def records_sql(self, start_day: int, end_day: int, pop_table: str = POP) -> str:
        """Joined with the population: ``k, concept_id, day, *extra`` of the records in the window."""
        return (f"SELECT c.k, CAST({self.concept} AS INTEGER) AS concept_id, "
                f"CAST({self.last} - c.cohort_start_date AS INTEGER) AS day{self._extra()} "
                f"FROM {pop_table} c JOIN {self.table} ON person_id = c.subject_id "
                f"WHERE {self.first} <= c.cohort_start_date + {int(end_day)} "
                f"AND {self.last} >= c.cohort_start_date + {int(start_day)}{self._filters()}")

    def scan_sql(self, first_max: str, last_min: str | None, person_min: int, person_max: int) -> str:
        """Without the join: ``person_id, concept_id, first, last, *extra`` of the records that may be in some
        population row's window (ISO date bounds over all rows; ``last_min`` None: no lower bound), for the
        caller to join in memory."""
        last = "" if self.last == self.first else f", {self.last} AS last_date"
        since = "" if last_min is None else f" AND {self.last} >= DATE '{last_min}'"
        return (f"SELECT person_id, CAST({self.concept} AS INTEGER) AS concept_id, {self.first} AS first_date{last}"
                f"{self._extra()} FROM {self.table} "
                f"WHERE person_id BETWEEN {int(person_min)} AND {int(person_max)} "
                f"AND {self.first} <= DATE '{first_max}'{since}{self._filters()}")


def drug_groups_sql() -> str:
    """Drug groups (FE's): RxNorm ingredients and ATC classes, with each descendant drug concept.

    Relies on concept_ancestor's self rows (OMOP ships them) for records coded at the ingredient itself.
    """
    return ("SELECT CAST(ca.ancestor_concept_id AS INTEGER) AS ancestor_concept_id, "
            "CAST(ca.descendant_concept_id AS INTEGER) AS descendant_concept_id FROM concept_ancestor ca "
            "JOIN concept a ON a.concept_id = ca.ancestor_concept_id "
            "WHERE (a.vocabulary_id = 'RxNorm' AND a.concept_class_id = 'Ingredient') "
            "OR (a.vocabulary_id = 'ATC' AND length(a.concept_code) IN (1, 3, 4, 5))")


DOMAINS: dict[str, Domain] = {
    "condition": Domain("condition_occurrence", "condition_concept_id", "condition_start_date",
                        "condition_start_date"),
    "procedure": Domain("procedure_occurrence", "procedure_concept_id", "procedure_date", "procedure_date"),
    "measurement": Domain("measurement", "measurement_concept_id", "measurement_date", "measurement_date"),
    "observation": Domain("observation", "observation_concept_id", "observation_date", "observation_date"),
    # FE's ConceptCounts.sql: a visit counts in every window it overlaps (so the index visit counts, endDays = 0)
    "visit": Domain("visit_occurrence", "visit_concept_id", "visit_start_date",
                    "COALESCE(visit_end_date, visit_start_date)"),
    # exposures overlapping the window; rolled up to drug groups in numpy, which also drops drugs in none (a
    # semi-join here would repeat the drug group query, over concept_ancestor, inside every scan)
    "drug": Domain("drug_exposure", "drug_concept_id", "drug_exposure_start_date",
                   "COALESCE(drug_exposure_end_date, drug_exposure_start_date)"),
}
#: what the last-value analysis needs on top (measurement_id breaks ties between same-day values)
MEASUREMENT_VALUES = Domain(
    "measurement", "measurement_concept_id", "measurement_date", "measurement_date",
    extra=(("unit", "CAST(COALESCE(unit_concept_id, 0) AS INTEGER)"), ("measurement_id", "measurement_id"),
           ("value", "CAST(value_as_number AS DOUBLE)")))


def charlson_concepts_sql(categories: Mapping[int, tuple[str, int, Sequence[int]]] | None = None) -> str:
    """``cat, weight, concept_id``: the condition concepts of each Charlson category (its ancestors' descendants)."""
    cats = categories or CHARLSON_CATEGORIES
    values = ", ".join(f"({cat}, {weight}, {anc})" for cat, (_, weight, ancs) in cats.items() for anc in ancs)
    return (f"SELECT DISTINCT CAST(v.cat AS INTEGER) AS cat, CAST(v.weight AS INTEGER) AS weight, "
            f"CAST(ca.descendant_concept_id AS INTEGER) AS concept_id FROM (VALUES {values}) "
            "AS v(cat, weight, ancestor) JOIN concept_ancestor ca ON ca.ancestor_concept_id = v.ancestor")


def charlson_sql(categories: Mapping[int, tuple[str, int, Sequence[int]]] | None = None, pop_table: str = POP) -> str:
    """FeatureExtraction's Charlson index from conditions recorded on or before the index date:
    ``k, covariate_id, covariate_value`` (few rows: only persons with a Charlson condition). The scan path
    computes the same from the condition records instead (:func:`nordfed.features.assemble.charlson`)."""
    cats = categories or CHARLSON_CATEGORIES
    concepts = charlson_concepts_sql(cats)
    hits = (f"SELECT DISTINCT c.k, cc.cat, cc.weight FROM {pop_table} c JOIN condition_occurrence co "
            f"ON co.person_id = c.subject_id AND co.condition_start_date <= c.cohort_start_date "
            f"JOIN ({concepts}) cc ON cc.concept_id = co.condition_concept_id")
    has = "max(CASE WHEN cat = {} THEN 1 ELSE 0 END)"
    weights = {c: w for c, (_, w, _) in cats.items()}
    adjust = " ".join(f"- {has.format(m)} * {has.format(s)} * {weights[m]}" for m, s in CHARLSON_HIERARCHY
                      if m in weights and s in weights)
    return (f"SELECT k, CAST(1000 + {CHARLSON} AS BIGINT) AS covariate_id, "
            f"CAST(sum(weight) {adjust} AS DOUBLE) AS covariate_value FROM ({hits}) h GROUP BY k")
