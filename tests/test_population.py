"""PLP study population rules on hand-computed cases, and the plp dataset end to end on a tiny CDM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nordfed.cohorts.population import PopulationSettings, create_study_population
from nordfed.features.covariates import covariate_ref
from nordfed.fed.protocol import SiteData
from test_cohorts_support import concept, condition, cs, new_cdm, person


def _entry(sid: int, start: str, obs: tuple[str, str] = ("2010-01-01", "2020-12-31"), end: str | None = None):
    return {"subject_id": sid, "cohort_start_date": start, "cohort_end_date": end or start,
            "observation_period_start_date": obs[0], "observation_period_end_date": obs[1]}


COHORT = pd.DataFrame([
    _entry(1, "2015-01-01"), _entry(1, "2017-01-01"),
    _entry(2, "2015-01-01", obs=("2014-10-01", "2020-12-31")),       # 92 days of prior observation
    _entry(3, "2015-01-01", obs=("2010-01-01", "2015-06-30")),       # 180 days at risk, no outcome
    _entry(4, "2015-01-01", obs=("2010-01-01", "2015-03-01")),       # 59 days at risk, outcome on day 31
    _entry(5, "2015-01-01"),                                         # outcome 214 days before index
    _entry(6, "2015-01-01"),                                         # outcome on the index day
    _entry(7, "2015-01-01"),                                         # outcome after the risk window
])
OUTCOMES = pd.DataFrame({"subject_id": [1, 4, 5, 6, 7],
                         "outcome_date": ["2015-06-01", "2015-02-01", "2014-06-01", "2015-01-01", "2016-02-05"]})


def test_plp_rules_and_attrition_hand_computed():
    s = PopulationSettings(first_exposure_only=True, washout_period=365)
    pop, att = create_study_population(COHORT, OUTCOMES, s)
    assert att[["rows", "persons", "outcomes"]].values.tolist() == [
        [8, 7, 2], [7, 7, 2], [6, 6, 2], [4, 4, 2], [3, 3, 2]]
    assert pop["subject_id"].tolist() == [1, 4, 7]
    assert pop["outcome"].tolist() == [1, 1, 0]
    assert pop["days_to_event"].tolist()[:2] == [151, 31]
    assert pop["tar_end"].tolist() == [365, 59, 365] and pop["time_at_risk"].tolist() == [365, 59, 365]


def test_plp_options_include_all_outcomes_lookback_and_end_anchor():
    s = PopulationSettings(include_all_outcomes=False, prior_outcome_lookback=100)
    pop, _ = create_study_population(COHORT, OUTCOMES, s)
    # person 4 (59 days at risk) goes despite the outcome; person 5's outcome is beyond the 100-day lookback
    assert pop["subject_id"].tolist() == [1, 1, 2, 5, 7]
    cohort = pd.DataFrame([_entry(1, "2015-01-01", end="2015-04-11"), _entry(2, "2015-01-01", end="2015-01-11")])
    s = PopulationSettings(risk_window_start=0, start_anchor="cohort start", risk_window_end=0,
                           end_anchor="cohort end", min_time_at_risk=30)
    pop, _ = create_study_population(cohort, pd.DataFrame({"subject_id": [2], "outcome_date": ["2015-01-12"]}), s)
    assert pop["tar_end"].tolist() == [100] and pop["outcome"].tolist() == [0]
    with pytest.raises(ValueError, match="riskWindowStrat"):
        PopulationSettings.from_dict({"riskWindowStrat": 1})
    assert PopulationSettings.from_dict({"riskWindowStart": 0, "washoutPeriod": 10}).washout_period == 10


def test_plp_dataset_from_cdm_with_death_outcome(cdm_url):
    cdm = new_cdm(cdm_url)
    concept(cdm, {10: "Cancer", 20: "Flu"})
    for pid, (died, flu) in enumerate([("2016-02-01", True), (None, True), ("2019-01-01", False), (None, False)], 1):
        person(cdm, pid, 1950 + pid, obs=("2010-01-01", died or "2020-12-31"), death=died)
        condition(cdm, pid, 10, "2016-01-01")
        if flu:
            condition(cdm, pid, 20, "2015-12-20")
    target = {"ConceptSets": [cs(0, (10, False, False))],
              "PrimaryCriteria": {"CriteriaList": [{"ConditionOccurrence": {"CodesetId": 0}}],
                                  "ObservationWindow": {"PriorDays": 0, "PostDays": 0}}}
    data = SiteData(site="A", cdm=cdm)
    spec = {"builder": "plp", "target": target, "outcome": "death",
            "population": {"riskWindowStart": 1, "riskWindowEnd": 365, "minTimeAtRisk": 1},
            "covariates": {"index_year": False, "index_month": False}}
    df = data.frame(spec)
    assert df["subject_id"].tolist() == [1, 2, 3, 4] and df["outcome"].tolist() == [1, 0, 0, 0]
    assert df["20102"].tolist() == [1, 1, 0, 0] and df["20104"].tolist() == [1, 1, 0, 0]
    ref = covariate_ref(cdm, np.array([int(c) for c in df.columns if c.isdigit()])).set_index("covariate_id")
    assert ref.loc[20102, "covariate_name"].endswith("Flu") and ref.loc[20102, "analysis_id"] == 102
    wanted = data.frame({**spec, "covariate_ids": [10102, 99102, 20102]})
    assert list(wanted.columns[-3:]) == ["10102", "99102", "20102"] and wanted["99102"].sum() == 0
