"""Visit concept counts (FE 923/925) and observation presence (FE 802/804) against a hand count on a tiny CDM."""

from __future__ import annotations

import pandas as pd
import pytest

from nordfed.features import analyses as A
from nordfed.features import records
from nordfed.features.covariates import CovariateSettings, extract_covariates, population_rows
from nordfed.studies.truth import matching_covariates
from test_cohorts_support import D, add, concept, new_cdm, person

INPATIENT, ER_INPATIENT, OUTPATIENT = 9201, 262, 9202
SMOKER, FORMER = 4001, 4002
ONLY_NEW = CovariateSettings(**{f: False for f in (
    "gender", "age_group", "index_year", "index_month", "condition_long_term", "condition_short_term",
    "drug_group_long_term", "drug_group_short_term", "procedure_long_term", "procedure_short_term",
    "measurement_long_term", "measurement_short_term", "measurement_value_long_term", "charlson_index")},
    visit_concept_count_long_term=True, visit_concept_count_short_term=True)


def visit(cdm, pid: int, concept_id: int, start: str, end: str) -> None:
    add(cdm, "visit_occurrence", [{"person_id": pid, "visit_concept_id": concept_id, "visit_start_date": D(start),
                                   "visit_end_date": D(end)}])


def observation(cdm, pid: int, concept_id: int, date: str) -> None:
    add(cdm, "observation", [{"person_id": pid, "observation_concept_id": concept_id, "observation_date": D(date)}])


def build(url: str):
    cdm = new_cdm(url)
    concept(cdm, {INPATIENT: "Inpatient Visit", ER_INPATIENT: "Emergency Room and Inpatient Visit",
                  OUTPATIENT: "Outpatient Visit"}, domain="Visit", vocabulary="Visit", concept_class="Visit")
    concept(cdm, {SMOKER: "Current smoker", FORMER: "Former smoker"}, domain="Observation")
    for pid in (1, 2, 3, 4):
        person(cdm, pid, 1950)
    # person 1, index 2020-06-01 (days from index in the comments; a visit counts where it overlaps the window)
    visit(cdm, 1, ER_INPATIENT, "2020-06-01", "2020-06-09")  # the index visit: 0 .. 8
    visit(cdm, 1, OUTPATIENT, "2020-05-20", "2020-05-20")  # -12
    visit(cdm, 1, OUTPATIENT, "2020-04-25", "2020-05-05")  # -37 .. -27: reaches into the short window
    visit(cdm, 1, OUTPATIENT, "2019-12-01", "2019-12-01")  # -183
    visit(cdm, 1, OUTPATIENT, "2019-06-01", "2019-06-01")  # -366: outside
    visit(cdm, 1, INPATIENT, "2019-05-25", "2019-06-05")  # -373 .. -362: overlaps the long window
    visit(cdm, 1, INPATIENT, "2020-06-02", "2020-06-04")  # after index
    visit(cdm, 1, 0, "2020-05-01", "2020-05-01")  # no concept: never a covariate
    # person 2, index 2020-06-01
    visit(cdm, 2, INPATIENT, "2020-05-01", "2020-05-03")  # -31 .. -29
    visit(cdm, 2, INPATIENT, "2020-04-01", "2020-04-30")  # -61 .. -32
    observation(cdm, 2, SMOKER, "2020-05-31")  # -1
    observation(cdm, 2, SMOKER, "2019-07-01")  # -336: a second record, still one covariate
    observation(cdm, 2, FORMER, "2020-06-02")  # after index
    observation(cdm, 2, 0, "2020-05-01")
    # person 3, index 2020-03-01: an observation on the long window's first day (-365)
    observation(cdm, 3, FORMER, "2019-03-02")
    # person 4 is not in the population
    visit(cdm, 4, INPATIENT, "2020-05-01", "2020-05-01")
    observation(cdm, 4, SMOKER, "2020-05-01")
    pop = pd.DataFrame({"row_id": [10, 20, 30], "subject_id": [1, 2, 3],
                        "cohort_start_date": pd.to_datetime(["2020-06-01", "2020-06-01", "2020-03-01"])})
    return cdm, pop


def cov(concept_id: int, analysis_id: int) -> int:
    return concept_id * 1000 + analysis_id


EXPECTED = {
    (10, cov(ER_INPATIENT, 923)): 1.0, (10, cov(ER_INPATIENT, 925)): 1.0,
    (10, cov(OUTPATIENT, 923)): 3.0, (10, cov(OUTPATIENT, 925)): 2.0, (10, cov(INPATIENT, 923)): 1.0,
    (20, cov(INPATIENT, 923)): 2.0, (20, cov(INPATIENT, 925)): 1.0,
    (20, cov(SMOKER, 802)): 1.0, (20, cov(SMOKER, 804)): 1.0,
    (30, cov(FORMER, 802)): 1.0,
}
#: person 1 again, index 2019-12-01 (a person twice: the engine-join path on DuckDB as well)
AGAIN = {(11, cov(OUTPATIENT, 923)): 2.0, (11, cov(OUTPATIENT, 925)): 1.0, (11, cov(INPATIENT, 923)): 1.0}


def as_dict(data) -> dict[tuple[int, int], float]:
    coo = data.matrix.tocoo()
    return {(int(data.row_ids[r]), int(data.covariate_ids[c])): float(v)
            for r, c, v in zip(coo.row, coo.col, coo.data, strict=True)}


def test_visit_counts_and_observations_match_a_hand_count(cdm_url):
    cdm, pop = build(cdm_url)
    data = extract_covariates(cdm, pop, ONLY_NEW)
    assert as_dict(data) == EXPECTED
    names = data.covariate_ref.set_index("covariate_id")["covariate_name"]
    assert names[cov(ER_INPATIENT, 923)] == "visit concept count, long term: Emergency Room and Inpatient Visit"
    assert names[cov(SMOKER, 804)] == "observation, short term: Current smoker"
    assert set(data.covariate_ref["concept_id"]) == {ER_INPATIENT, OUTPATIENT, INPATIENT, SMOKER, FORMER}


def test_join_path_counts_a_person_with_two_index_dates(duckdb_url):
    cdm, pop = build(duckdb_url)
    again = pd.DataFrame({"row_id": [11], "subject_id": [1], "cohort_start_date": pd.to_datetime(["2019-12-01"])})
    data = extract_covariates(cdm, pd.concat([pop, again]), ONLY_NEW)
    assert as_dict(data) == {**EXPECTED, **AGAIN}


def test_scan_path_returns_the_join_paths_visit_and_observation_records(duckdb_url):
    cdm, pop = build(duckdb_url)
    _, k = population_rows(pop)
    p = records.Population(pop, k)
    assert p.unique_persons
    records.register(cdm, p)
    for domain in (A.DOMAINS["visit"], A.DOMAINS["observation"]):
        scanned = pd.DataFrame(records.records(cdm, p, domain, -365, 0))
        joined = pd.DataFrame(records.fetch(cdm, domain.records_sql(-365, 0)))
        assert len(scanned) >= 3
        key = sorted(joined.columns)
        pd.testing.assert_frame_equal(scanned[key].sort_values(key, ignore_index=True),
                                      joined[key].sort_values(key, ignore_index=True), check_dtype=False)


def test_defaults_follow_feature_extraction():
    s = CovariateSettings()
    assert s.windows("observation") == [(-365, A.OBSERVATION_LONG), (-30, A.OBSERVATION_SHORT)]
    assert s.windows("visit") == []  # VisitConceptCount is not in FeatureExtraction's default settings
    assert {A.VISIT_CONCEPT_COUNT_LONG, A.VISIT_CONCEPT_COUNT_SHORT} <= A.CONTINUOUS


@pytest.mark.parametrize(("var", "want"), [
    ({"table": "visit_occurrence", "concept_ids": [ER_INPATIENT], "include_descendants": False},
     [cov(ER_INPATIENT, 923), cov(ER_INPATIENT, 925)]),
    ({"table": "observation", "concept_ids": [SMOKER], "include_descendants": True},
     [cov(SMOKER, 802), cov(SMOKER, 804)]),
])
def test_truth_variables_in_visits_and_observations_are_matched(var, want):
    ids = sorted({c for _, c in EXPECTED})
    assert matching_covariates(var, ids) == want
