"""Five generated sites (5,000 persons each) checked directly with SQL: structural invariants, planted
data-quality defects at the rate the truth states, and the ground truth itself — reading the CDM only as the truth
JSON describes (concept sets with descendants, windows, unit factors) reproduces cohorts, features, linear
predictors and outcomes, and a model fitted on those features recovers the main risk factors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nordfed.omop.schema import DATE_PAIRS, EVENT_DATES, schema
from nordfed.omop.store import open_cdm
from nordfed.synth import SITES, write_site
from nordfed.synth import vocabulary as v
from nordfed.synth.truth import auroc
from test_synth_support import (
    cll_cohort_sql,
    crc_cohort_sql,
    death_within,
    extract_features,
    first_event_within,
    linear_predictor,
)

PERSONS = 5000


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """site -> (cdm, truth, person-level truth frames)"""
    folder = tmp_path_factory.mktemp("sites")
    out = {}
    for i, code in enumerate(SITES):
        url = f"duckdb:///{folder / (code.lower() + '.duckdb')}"
        write_site(code, PERSONS, seed=21 + i, url=url, notes=False)
        truth = json.loads((folder / f"{code.lower()}.truth.json").read_text())
        people = {name: pd.read_parquet(folder / f) for name, f in truth["person_level_files"].items()}
        out[code] = (open_cdm(url), truth, people)
    yield out
    for cdm, _, _ in out.values():
        cdm.close()


@pytest.fixture(params=SITES)
def site(request, sites):
    cdm, truth, _ = sites[request.param]
    return cdm, truth

def _zero(cdm, sql: str) -> None:
    n = cdm.scalar(f"SELECT count(*) FROM ({sql}) q")
    assert n == 0, f"{n} rows violate: {sql}"


def _tables(cdm) -> list:
    counts = cdm.row_counts()
    return [schema()[t] for t, n in counts.items() if n > 0]


def test_primary_keys_unique_and_required_fields_present(site):
    cdm, _ = site
    for t in _tables(cdm):
        if t.primary_key:
            _zero(cdm, f'SELECT "{t.primary_key}" FROM "{t.name}" GROUP BY 1 HAVING count(*) > 1')
        for f in t.fields:
            if f.required:
                _zero(cdm, f'SELECT 1 FROM "{t.name}" WHERE "{f.name}" IS NULL')


def test_person_references_are_valid(site):
    cdm, _ = site
    for t in _tables(cdm):
        if t.has_person:
            _zero(cdm, f'SELECT 1 FROM "{t.name}" x LEFT JOIN person p USING (person_id) WHERE p.person_id IS NULL')
    _zero(cdm, "SELECT person_id FROM observation_period GROUP BY 1 HAVING count(*) <> 1")


def test_start_not_after_end(site):
    cdm, _ = site
    present = {t.name for t in _tables(cdm)}
    for table, (start, end) in DATE_PAIRS.items():
        if table in present:
            _zero(cdm, f'SELECT 1 FROM "{table}" WHERE "{end}" < "{start}"')


def test_every_event_inside_an_observation_period_and_nothing_after_death(site):
    cdm, _ = site
    present = {t.name for t in _tables(cdm)}
    for table, date in EVENT_DATES.items():
        if table not in present:
            continue
        dates = [date] + [e for t, (_s, e) in DATE_PAIRS.items() if t == table]
        for d in dates:
            _zero(cdm, f'SELECT 1 FROM "{table}" x WHERE "{d}" IS NOT NULL AND NOT EXISTS (SELECT 1 FROM '
                       f'observation_period op WHERE op.person_id = x.person_id AND x."{d}" BETWEEN '
                       f'op.observation_period_start_date AND op.observation_period_end_date)')
            _zero(cdm, f'SELECT 1 FROM "{table}" x JOIN death USING (person_id) WHERE x."{d}" > death.death_date')
    _zero(cdm, "SELECT 1 FROM death d JOIN observation_period op USING (person_id) "
               "WHERE d.death_date <> op.observation_period_end_date")
    _zero(cdm, "SELECT 1 FROM observation_period op JOIN person p USING (person_id) "
               "WHERE year(op.observation_period_start_date) < p.year_of_birth")


def test_events_sit_on_their_visits(site):
    cdm, _ = site
    for table, date in EVENT_DATES.items():
        if table in ("visit_occurrence", "note", "specimen", "device_exposure"):
            continue
        _zero(cdm, f'SELECT 1 FROM "{table}" x LEFT JOIN visit_occurrence vo USING (visit_occurrence_id) '
                   f'WHERE x.visit_occurrence_id IS NOT NULL AND (vo.visit_occurrence_id IS NULL '
                   f'OR vo.person_id <> x.person_id '
                   f'OR x."{date}" NOT BETWEEN vo.visit_start_date AND vo.visit_end_date)')


def test_event_concepts_are_in_the_bundled_vocabulary(site):
    cdm, truth = site
    planted = {d["check"] for d in truth["dq_defects"]}
    for table, field in (("condition_occurrence", "condition_concept_id"), ("drug_exposure", "drug_concept_id"),
                         ("procedure_occurrence", "procedure_concept_id"), ("measurement", "measurement_concept_id"),
                         ("observation", "observation_concept_id"), ("visit_occurrence", "visit_concept_id"),
                         ("measurement", "unit_concept_id")):
        _zero(cdm, f"SELECT 1 FROM {table} x LEFT JOIN concept c ON c.concept_id = x.{field} "
                   f"WHERE x.{field} IS NOT NULL AND c.concept_id IS NULL")
        if "concept_conformance" not in planted:
            _zero(cdm, f"SELECT 1 FROM {table} x JOIN concept c ON c.concept_id = x.{field} "
                       f"WHERE c.standard_concept IS DISTINCT FROM 'S'")


def test_haemoglobin_units_follow_the_site(site):
    cdm, truth = site
    expected = {"DK": v.UNIT_MMOL_L, "NO": v.UNIT_G_DL, "SE": v.UNIT_G_L, "FI": v.UNIT_G_L, "EE": v.UNIT_G_L}
    units = cdm.query(f"SELECT DISTINCT unit_concept_id FROM measurement WHERE measurement_concept_id = "
                      f"{v.HEMOGLOBIN}")["unit_concept_id"].tolist()
    assert units == [expected[truth["site"]]]
    mean = cdm.scalar(f"SELECT avg(value_as_number) FROM measurement WHERE measurement_concept_id = {v.HEMOGLOBIN}")
    low, high = {"DK": (7, 10), "NO": (11.5, 15.5), "SE": (115, 155), "FI": (115, 155), "EE": (115, 155)}[truth["site"]]
    assert low < mean < high


def _measured_rate(cdm, d: dict) -> float:
    if d["check"] == "concept_conformance":
        if d["concept_id"] == 0:
            bad = "condition_concept_id = 0"
        else:
            bad = ("condition_concept_id IN (SELECT concept_id FROM concept WHERE standard_concept IS NULL "
                   "AND concept_id <> 0)")
        return cdm.scalar(f"SELECT avg(({bad})::INT) FROM condition_occurrence")
    if d["check"] == "missing_unit":
        return cdm.scalar(f"SELECT avg((unit_concept_id IS NULL)::INT) FROM measurement "
                          f"WHERE measurement_concept_id = {d['concept_id']}")
    if d["check"] == "implausible_value":
        # negative heights, or creatinine over 5 times the site's median (a unit slip, as the DQ checks see it)
        median = cdm.scalar(f"SELECT median(value_as_number) FROM measurement WHERE measurement_concept_id = "
                            f"{d['concept_id']}")
        bad = "value_as_number < 0" if d["concept_id"] == v.BODY_HEIGHT else f"value_as_number > 5 * {median}"
        return cdm.scalar(f"SELECT avg(({bad})::INT) FROM measurement WHERE measurement_concept_id = "
                          f"{d['concept_id']}")
    assert d["check"] == "sex_plausibility"
    wrong = v.GENDER_FEMALE if d["concept_id"] == v.BENIGN_PROSTATIC_HYPERPLASIA else v.GENDER_MALE
    return cdm.scalar(f"SELECT avg((p.gender_concept_id = {wrong})::INT) FROM condition_occurrence c "
                      f"JOIN person p USING (person_id) WHERE c.condition_concept_id = {d['concept_id']}")


def test_planted_defects_are_there_at_the_stated_rate(site):
    cdm, truth = site
    defects = truth["dq_defects"]
    if truth["site"] == "DK":
        assert defects == []
    else:
        assert {d["check"] for d in defects} <= {"concept_conformance", "missing_unit", "implausible_value",
                                                 "sex_plausibility"}
        assert len(defects) == 2
    for d in defects:
        assert set(d) >= {"check", "table", "field", "concept_id", "rate", "description"}
        assert 0 < d["rate"] < 0.2
        exact = not (d["check"] == "implausible_value" and d["concept_id"] == v.CREATININE)
        assert _measured_rate(cdm, d) == pytest.approx(d["rate"], abs=1e-6 if exact else 0.1 * d["rate"]), d
    checks = {d["check"] for d in defects}
    # the clean parts really are clean
    if "missing_unit" not in checks:
        _zero(cdm, "SELECT 1 FROM measurement WHERE unit_concept_id IS NULL AND value_as_number IS NOT NULL")
    if "implausible_value" not in checks:
        _zero(cdm, f"SELECT 1 FROM measurement WHERE value_as_number < 0 OR (measurement_concept_id = "
                   f"{v.CREATININE} AND value_as_number > 1000)")
    if "sex_plausibility" not in checks:
        _zero(cdm, f"SELECT 1 FROM condition_occurrence c JOIN person p USING (person_id) WHERE "
                   f"(c.condition_concept_id IN ({v.BENIGN_PROSTATIC_HYPERPLASIA}, {v.PROSTATE_CANCER}) AND "
                   f"p.gender_concept_id = {v.GENDER_FEMALE}) OR (c.condition_concept_id = {v.ENDOMETRIOSIS} "
                   f"AND p.gender_concept_id = {v.GENDER_MALE})")


def test_truth_document_describes_every_variable(sites):
    _, truth, _ = sites["DK"]
    crc = truth["cohorts"]["crc_surgery"]
    variables = crc["model"]["variables"]
    assert len(variables) >= 40
    names = {x["name"] for x in variables}
    assert {"age_per_10y", "male", "emergency_surgery", "stage_iv", "asa_class", "hemoglobin", "albumin", "crp",
            "creatinine", "heart_failure", "dementia", "anticoagulant", "corticosteroid"} <= names
    for x in variables:
        assert {"name", "beta", "domain", "table", "how", "feature"} <= set(x)
        if x["table"] != "person":
            assert x["concept_ids"] and x["window_days"] and x["type"] in ("binary presence", "measurement value")
    hb = next(x for x in variables if x["name"] == "hemoglobin")
    assert hb["window_days"] == [-30, 0]
    units = {s: hb["site_units"][s]["unit_concept_id"] for s in SITES}
    assert units == {"DK": v.UNIT_MMOL_L, "NO": v.UNIT_G_DL, "SE": v.UNIT_G_L, "FI": v.UNIT_G_L, "EE": v.UNIT_G_L}
    assert hb["site_units"]["SE"]["to_model_unit_factor"] == pytest.approx(0.1)
    assert crc["outcome"]["window_days"] == [0, 365] and crc["outcome"]["table"] == "death"
    assert isinstance(crc["model"]["intercept"], float)
    missing = []
    for code in SITES:
        crc, cll = (sites[code][1]["cohorts"][c] for c in ("crc_surgery", "cll"))
        assert 0.05 <= crc["size"] / PERSONS <= 0.10, code
        assert 0.72 <= crc["auroc_true_lp"] <= 0.9, code
        assert cll["size"] > 40 and cll["outcome"]["name"] == "serious_infection_730d"
        missing.append(pd.Series(cll["lab_missingness"]) * cll["size"] / sum(
            sites[c][1]["cohorts"]["cll"]["size"] for c in SITES))
    pooled = sum(missing)  # CLL labs are 30-60 % missing at every site (about 90 persons per site here)
    assert pooled.between(0.25, 0.65).all(), pooled


@pytest.mark.parametrize("name, cohort_sql", [("crc_surgery", crc_cohort_sql), ("cll", cll_cohort_sql)])
def test_cohort_features_and_outcomes_are_recovered_from_the_cdm(sites, name, cohort_sql):
    cdm, truth, people = sites["DK"]  # the clean site: every value must match exactly
    cohort = cdm.query(cohort_sql(truth))
    expected = people[name].set_index("person_id")
    assert sorted(cohort["person_id"]) == sorted(expected.index)
    expected = expected.loc[cohort["person_id"]]
    assert (pd.to_datetime(cohort["index_date"]).dt.date.to_numpy()
            == pd.to_datetime(expected["index_date"].astype(str)).dt.date.to_numpy()).all()
    model = truth["cohorts"][name]["model"]
    features = extract_features(cdm, truth, name, cohort)
    for var in model["variables"]:
        np.testing.assert_allclose(features[var["name"]].to_numpy(), expected[var["name"]].to_numpy(), atol=1e-9,
                                   err_msg=var["name"])
    np.testing.assert_allclose(linear_predictor(model, features), expected["lp"].to_numpy(), atol=1e-9)
    if name == "crc_surgery":
        lo, hi = truth["cohorts"][name]["outcome"]["window_days"]
        y = death_within(cdm, cohort, lo, hi)
    else:
        y = first_event_within(cdm, cohort, truth["cohorts"][name]["outcome"])
        treated = first_event_within(cdm, cohort, truth["cohorts"][name]["treatment"]["outcome"])
        np.testing.assert_array_equal(treated, expected["treatment"].to_numpy())
    np.testing.assert_array_equal(y, expected["outcome"].to_numpy())
    assert y.sum() == truth["cohorts"][name]["events"]


def test_defects_only_blur_a_few_features_elsewhere(sites):
    for code in SITES[1:]:
        cdm, truth, people = sites[code]
        cohort = cdm.query(crc_cohort_sql(truth))
        expected = people["crc_surgery"].set_index("person_id")
        kept = cohort[cohort["person_id"].isin(expected.index)].reset_index(drop=True)
        assert len(kept) >= 0.97 * len(expected), code
        features = extract_features(cdm, truth, "crc_surgery", kept)
        names = [x["name"] for x in truth["cohorts"]["crc_surgery"]["model"]["variables"]]
        same = np.isclose(features[names].to_numpy(), expected.loc[kept["person_id"], names].to_numpy(), atol=1e-9)
        assert same.mean() > 0.99, code


def test_a_model_on_cdm_features_recovers_the_main_risk_factors(sites):
    """Pooled over the five sites (site intercepts as dummies), as a federated fit would see them."""
    from sklearn.linear_model import LogisticRegression

    xs, ys, names = [], [], None
    for i, code in enumerate(SITES):
        cdm, truth, _ = sites[code]
        cohort = cdm.query(crc_cohort_sql(truth))
        model = truth["cohorts"]["crc_surgery"]["model"]
        names = [x["name"] for x in model["variables"]]
        features = extract_features(cdm, truth, "crc_surgery", cohort)[names].to_numpy()
        dummies = np.zeros((len(cohort), len(SITES) - 1))
        if i:
            dummies[:, i - 1] = 1
        xs.append(np.hstack([features, dummies]))
        ys.append(death_within(cdm, cohort, 0, 365))
    x, y = np.vstack(xs), np.concatenate(ys)
    assert len(y) > 1500 and y.sum() > 150
    fit = LogisticRegression(C=1.0, max_iter=5000).fit(x, y)
    coef = dict(zip(names, fit.coef_[0][: len(names)], strict=True))
    assert auroc(y, fit.decision_function(x)) > 0.75
    betas = {x["name"]: x["beta"] for x in sites["DK"][1]["cohorts"]["crc_surgery"]["model"]["variables"]}
    for strong in ("age_per_10y", "stage_iv", "emergency_surgery", "asa_class", "albumin", "heart_failure"):
        assert np.sign(coef[strong]) == np.sign(betas[strong]), (strong, coef[strong], betas[strong])
    assert np.corrcoef([betas[n] for n in names], [coef[n] for n in names])[0, 1] > 0.6
