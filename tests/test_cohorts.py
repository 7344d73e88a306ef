"""Circe cohort definitions → SQL on tiny hand-built CDMs, with hand-computed expected cohorts."""

from __future__ import annotations

import datetime as dt

import pytest

from nordfed.cohorts.circe import CirceError, parse_cohort
from nordfed.cohorts.instantiate import cohort_rows, inclusion_attrition, instantiate
from nordfed.cohorts.population import population_inputs
from nordfed.fed.protocol import InProcessFederation
from nordfed.omop.store import open_cdm
from nordfed.privacy.disclosure import DisclosurePolicy
from test_cohorts_support import D, concept, condition, cs, new_cdm, person, procedure, window

CRC, COLON, RECTAL, EXCL, RESECTION, DIABETES = 100, 101, 102, 103, 200, 300


def build(url: str):
    cdm = new_cdm(url)
    concept(cdm, {CRC: "Colorectal cancer", COLON: "Colon cancer", RECTAL: "Rectal cancer", EXCL: "Carcinoid",
                  DIABETES: "Diabetes"}, [(CRC, COLON), (CRC, RECTAL), (CRC, EXCL)])
    concept(cdm, {RESECTION: "Colectomy"}, domain="Procedure")
    person(cdm, 1, 1950, obs=("2010-01-01", "2020-12-31"))
    condition(cdm, 1, COLON, "2015-03-01")
    condition(cdm, 1, COLON, "2015-03-20")
    condition(cdm, 1, RECTAL, "2016-01-01")
    procedure(cdm, 1, RESECTION, "2015-03-10")
    person(cdm, 2, 1960, obs=("2015-01-01", "2020-12-31"))
    condition(cdm, 2, CRC, "2015-02-01")
    condition(cdm, 2, COLON, "2017-05-01")
    procedure(cdm, 2, RESECTION, "2017-06-01")
    person(cdm, 3, 1955)
    condition(cdm, 3, EXCL, "2016-01-01")
    person(cdm, 4, 1970)
    condition(cdm, 4, COLON, "2016-06-01")
    person(cdm, 5, 1945)
    condition(cdm, 5, COLON, "2016-06-01")
    condition(cdm, 5, DIABETES, "2016-01-01")
    procedure(cdm, 5, RESECTION, "2016-06-15")
    person(cdm, 6, 1940, obs=("2010-01-01", "2015-01-10"))
    condition(cdm, 6, COLON, "2015-01-01")
    return cdm


def definition(limit: str = "First", prior: int = 0, end: dict | None = None, rules: list | None = None,
               additional: dict | None = None) -> dict:
    return {
        "ConceptSets": [cs(0, (CRC, True, False), (EXCL, False, True)), cs(1, (RESECTION, False, False)),
                        cs(2, (DIABETES, True, False))],
        "PrimaryCriteria": {"CriteriaList": [{"ConditionOccurrence": {"CodesetId": 0}}],
                            "ObservationWindow": {"PriorDays": prior, "PostDays": 0},
                            "PrimaryCriteriaLimit": {"Type": limit}},
        "QualifiedLimit": {"Type": "All"},
        "ExpressionLimit": {"Type": "All"},
        "InclusionRules": rules or [],
        "AdditionalCriteria": additional,
        "EndStrategy": end or {},
        "CensoringCriteria": [],
        "CollapseSettings": {"CollapseType": "ERA", "EraPad": 0},
        "CensorWindow": {},
    }


def entries(cdm, cid: int = 1) -> list[tuple[int, dt.date, dt.date]]:
    df = cohort_rows(cdm, cid)
    return [(int(r.subject_id), r.cohort_start_date.date(), r.cohort_end_date.date()) for r in df.itertuples()]


def test_first_event_prior_observation_descendants_and_exclusion(cdm_url):
    cdm = build(cdm_url)
    n = instantiate(cdm, definition("First", prior=365), 1)
    # person 2's first event lacks 365 days of prior observation, so their second event qualifies;
    # person 3 only has the excluded descendant; person 6's first event has enough prior time
    assert entries(cdm) == [
        (1, D("2015-03-01"), D("2020-12-31")),
        (2, D("2017-05-01"), D("2020-12-31")),
        (4, D("2016-06-01"), D("2020-12-31")),
        (5, D("2016-06-01"), D("2020-12-31")),
        (6, D("2015-01-01"), D("2015-01-10")),
    ]
    assert n == 5


def test_all_events_date_offset_end_capped_and_eras(cdm_url):
    cdm = build(cdm_url)
    instantiate(cdm, definition("All", end={"DateOffset": {"DateField": "StartDate", "Offset": 30}}), 7)
    assert entries(cdm, 7) == [
        (1, D("2015-03-01"), D("2015-04-19")),  # 03-01+30 overlaps 03-20+30: one era
        (1, D("2016-01-01"), D("2016-01-31")),
        (2, D("2015-02-01"), D("2015-03-03")),
        (2, D("2017-05-01"), D("2017-05-31")),
        (4, D("2016-06-01"), D("2016-07-01")),
        (5, D("2016-06-01"), D("2016-07-01")),
        (6, D("2015-01-01"), D("2015-01-10")),  # capped at the end of observation
    ]


def test_inclusion_rules_windows_occurrence_and_attrition(cdm_url):
    cdm = build(cdm_url)
    rules = [
        {"name": "resection within 30 days", "expression": {"Type": "ALL", "CriteriaList": [{
            "Criteria": {"ProcedureOccurrence": {"CodesetId": 1}}, "StartWindow": window(0, 30),
            "Occurrence": {"Type": 2, "Count": 1}}], "DemographicCriteriaList": [], "Groups": []}},
        {"name": "no diabetes in the prior year", "expression": {"Type": "ALL", "CriteriaList": [{
            "Criteria": {"ConditionOccurrence": {"CodesetId": 2}}, "StartWindow": window(-365, 0),
            "Occurrence": {"Type": 0, "Count": 0}}], "Groups": []}},
    ]
    d = definition("First", end={"DateOffset": {"DateField": "StartDate", "Offset": 0}}, rules=rules)
    instantiate(cdm, d, 1)
    assert entries(cdm) == [(1, D("2015-03-01"), D("2015-03-01"))]
    att = inclusion_attrition(cdm, d)
    assert att["persons"].tolist() == [5, 2, 1]  # 1,2,4,5,6 → 1,5 → 1
    assert att["events_satisfying_rule"].tolist() == [5, 2, 4]
    # released: a rule met by 4 of the 5 qualifying events says 1 event failed it, a count below the minimum
    out = InProcessFederation.from_cdms({"A": cdm}, DisclosurePolicy(min_cell_count=2)).run(
        "nordfed.cohorts.instantiate", {"definition": d, "cohort_definition_id": 1})["A"]["attrition"]
    assert [r["events_satisfying_rule"] for r in out] == [5, 2, None]
    assert [r["persons"] for r in out] == [5, 2, None]  # 1 person left: withheld, and 2 is 3 less than 5


def test_additional_criteria_group_at_least_two_and_any(cdm_url):
    cdm = build(cdm_url)
    additional = {"Type": "ANY", "CriteriaList": [
        {"Criteria": {"ConditionOccurrence": {"CodesetId": 0}}, "StartWindow": window(None, None),
         "Occurrence": {"Type": 2, "Count": 3}},
        {"Criteria": {"ProcedureOccurrence": {"CodesetId": 1}}, "StartWindow": window(0, 15),
         "Occurrence": {"Type": 2, "Count": 1}},
    ], "Groups": [{"Type": "AT_MOST", "Count": 0, "CriteriaList": [
        {"Criteria": {"ConditionOccurrence": {"CodesetId": 2}}, "StartWindow": window(None, None),
         "Occurrence": {"Type": 2, "Count": 1}}]}]}
    # person 1: three CRC events (and a resection within 15 days); person 5: resection within 15 days;
    # the nested AT_MOST 0 group is true for everyone without diabetes: all but person 5 qualify via it
    instantiate(cdm, definition("First", additional=additional), 1)
    assert [e[0] for e in entries(cdm)] == [1, 2, 4, 5, 6]
    additional["Groups"] = []
    additional["CriteriaList"][1]["StartWindow"] = window(0, 5)
    instantiate(cdm, definition("First", additional=additional), 1)
    assert [e[0] for e in entries(cdm)] == [1]  # replaced, not appended


def test_instantiate_replaces_only_its_definition_and_partial_suppresses(duckdb_url):
    cdm = build(duckdb_url)
    instantiate(cdm, definition("All", end={"DateOffset": {"DateField": "StartDate", "Offset": 30}}), 1)
    instantiate(cdm, definition("First"), 2)
    assert len(entries(cdm, 1)) == 7 and len(entries(cdm, 2)) == 5
    fed = InProcessFederation.from_cdms({"A": cdm}, DisclosurePolicy(min_cell_count=6))
    out = fed.run("nordfed.cohorts.instantiate", {"definition": definition("First"), "cohort_definition_id": 2})
    assert out["A"]["entries"] is None and out["A"]["persons"] is None  # 5 < 6
    fed = InProcessFederation.from_cdms({"A": cdm}, DisclosurePolicy(min_cell_count=5))
    out = fed.run("nordfed.cohorts.instantiate", {"definition": definition("First"), "cohort_definition_id": 2})
    assert out["A"]["entries"] == 5 and out["A"]["attrition"][0]["persons"] == 5


@pytest.mark.parametrize("mutate, path", [
    (lambda d: d["PrimaryCriteria"]["CriteriaList"][0]["ConditionOccurrence"].update(
        ConditionType=[{"CONCEPT_ID": 1}]), "$.PrimaryCriteria.CriteriaList[0].ConditionOccurrence.ConditionType"),
    (lambda d: d["PrimaryCriteria"]["CriteriaList"][0]["ConditionOccurrence"].update(CodesetId=9),
     "$.PrimaryCriteria.CriteriaList[0].ConditionOccurrence.CodesetId"),
    (lambda d: d["PrimaryCriteria"]["CriteriaList"].append({"DeviceExposure": {"CodesetId": 0}}),
     "$.PrimaryCriteria.CriteriaList[1].DeviceExposure"),
    (lambda d: d.update(EndStrategy={"CustomEra": {"DrugCodesetId": 0}}), "$.EndStrategy.CustomEra"),
    (lambda d: d["PrimaryCriteria"].update(PrimaryCriteriaLimit={"Type": "Some"}),
     "$.PrimaryCriteria.PrimaryCriteriaLimit.Type"),
    (lambda d: d.update(InclusionRules=[{"name": "x", "expression": {"Type": "ALL", "CriteriaList": [{
        "Criteria": {"ConditionOccurrence": {"CodesetId": 0}}, "StartWindow": window(0, 1),
        "Occurrence": {"Type": 5, "Count": 1}}]}}]), "$.InclusionRules[0].expression.CriteriaList[0].Occurrence.Type"),
])
def test_unsupported_or_invalid_features_name_their_json_path(mutate, path):
    d = definition()
    mutate(d)
    with pytest.raises(CirceError) as err:
        parse_cohort(d)
    assert err.value.path == path and path in str(err.value)


def test_cohorts_go_to_the_results_schema_the_url_names(cdm_url):
    # OHDSI's cohort database schema: a study writes there, and the CDM's own cohort table is left alone
    build(cdm_url).close()
    sep = "&" if "?" in cdm_url else "?"
    cdm = open_cdm(f"{cdm_url}{sep}results=nf_results")
    try:
        assert instantiate(cdm, definition("All", end={"DateOffset": {"DateField": "StartDate", "Offset": 30}}),
                           1) == 7
        assert len(cohort_rows(cdm, 1)) == 7 == cdm.scalar('SELECT count(*) FROM "nf_results".cohort')
        assert cdm.scalar("SELECT count(*) FROM cohort") == 0
        target, _ = population_inputs(cdm, 1, "death")
        assert len(target) == 7
    finally:
        if cdm.dialect == "duckdb":
            cdm.close()
        else:  # the test schema's fixture drops only its own schema
            cdm.execute('DROP SCHEMA IF EXISTS "nf_results" CASCADE')
            cdm.close()


def test_a_read_only_cdm_schema_needs_a_results_schema(pg_url):
    import uuid

    import psycopg

    from nordfed.omop.store import CDMError, CDMUrl

    build(pg_url).close()
    loc = CDMUrl.parse(pg_url)
    role, results = f"nf_ro_{uuid.uuid4().hex[:8]}", f"nf_res_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(loc.target, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        try:
            admin.execute(f'GRANT USAGE ON SCHEMA "{loc.schema}" TO "{role}"')
            admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{loc.schema}" TO "{role}"')
            (db,) = admin.execute("SELECT current_database()").fetchone()
            admin.execute(f'GRANT CREATE ON DATABASE "{db}" TO "{role}"')  # to make its results schema
            server = loc.target.split("://", 1)[1].rsplit("@", 1)[-1]
            as_role = f"postgresql://{role}@{server}?schema={loc.schema}"
            with open_cdm(as_role) as cdm, pytest.raises(CDMError, match="permission denied"):
                instantiate(cdm, definition("First"), 2)
            with open_cdm(f"{as_role}&results={results}") as cdm:
                assert instantiate(cdm, definition("First"), 2) == 5
                assert len(population_inputs(cdm, 2, "death")[0]) == 5
        finally:
            admin.execute(f'DROP SCHEMA IF EXISTS "{results}" CASCADE')
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')
