"""Achilles-style characterization in SQL equals pandas on the very rows inserted, on DuckDB and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from nordfed.omop import characterization as ch
from nordfed.omop.store import open_cdm
from test_omop_support import build_cdm


@pytest.fixture
def site(cdm_url):
    cdm = open_cdm(cdm_url, create=True)
    frames = build_cdm(cdm, n=250, seed=11)
    cdm.insert("concept", pd.DataFrame({
        "concept_id": [201826], "concept_name": ["Type 2 diabetes mellitus"], "domain_id": ["Condition"],
        "vocabulary_id": ["SNOMED"], "concept_class_id": ["Clinical Finding"], "standard_concept": ["S"],
        "concept_code": ["44054006"], "valid_start_date": [pd.Timestamp("1970-01-01").date()],
        "valid_end_date": [pd.Timestamp("2099-12-31").date()]}))
    return cdm, frames


def test_persons_by_birth_year_and_sex(site):
    cdm, f = site
    got = ch.persons_by_birth_year_sex(cdm)
    p = f["person"].assign(sex=f["person"]["gender_concept_id"].map({8507: "male", 8532: "female"}))
    ref = p.groupby(["year_of_birth", "sex"]).size().rename("persons").reset_index()
    pd.testing.assert_frame_equal(got.reset_index(drop=True), ref, check_dtype=False)


def test_persons_by_age_group_and_sex_at_first_observation(site):
    cdm, f = site
    got = ch.persons_by_age_sex(cdm, width=5)
    first = pd.to_datetime(f["observation_period"].groupby("person_id")["observation_period_start_date"].min())
    p = f["person"].set_index("person_id")
    age = (first.dt.year - p["year_of_birth"]).clip(lower=0, upper=90)
    ref = pd.DataFrame({"age_low": (age // 5 * 5).astype(int),
                        "sex": p["gender_concept_id"].map({8507: "male", 8532: "female"})})
    ref = ref.groupby(["age_low", "sex"]).size().rename("persons").reset_index()
    pd.testing.assert_frame_equal(got[["age_low", "sex", "persons"]], ref, check_dtype=False)
    assert got["persons"].sum() == 250
    assert got["age_group"].iloc[0] == f"{got['age_low'].iloc[0]}-{got['age_low'].iloc[0] + 4}"


def test_observation_time_distribution(site):
    cdm, f = site
    op = f["observation_period"]
    days = (pd.to_datetime(op["observation_period_end_date"]) - pd.to_datetime(op["observation_period_start_date"])
            ).dt.days.groupby(op["person_id"]).sum()
    got = ch.observation_time(cdm)
    assert got.persons == len(days)
    assert got.mean_days == pytest.approx(days.mean(), rel=1e-12)
    assert got.sd_days == pytest.approx(days.std(ddof=1), rel=1e-9)
    for q, v in [(0.1, got.p10_days), (0.25, got.p25_days), (0.5, got.median_days), (0.75, got.p75_days),
                 (0.9, got.p90_days)]:
        assert v == pytest.approx(np.quantile(days, q), rel=1e-12)  # both use linear interpolation
    assert (got.min_days, got.max_days) == (days.min(), days.max())
    ref_years = (days // 365.25).astype(int).value_counts().sort_index()
    assert got.by_year == {int(k): int(v) for k, v in ref_years.items()}


@pytest.mark.parametrize("domain", ["condition", "drug", "measurement"])
def test_top_concepts_with_names(site, domain):
    cdm, f = site
    table, col = ch.DOMAINS[domain]
    got = ch.top_concepts(cdm, domain, n=3)
    g = f[table].groupby(col).agg(persons=("person_id", "nunique"), records=("person_id", "size")).reset_index()
    ref = g.rename(columns={col: "concept_id"}).sort_values(["persons", "records", "concept_id"],
                                                            ascending=[False, False, True]).head(3)
    assert got[["concept_id", "persons", "records"]].values.tolist() == ref.values.tolist()
    names = dict(zip(got["concept_id"], got["concept_name"], strict=True))
    if 201826 in names:
        assert names[201826] == "Type 2 diabetes mellitus"
    assert all(v is None for k, v in names.items() if k != 201826)


def test_unknown_domain_is_refused(site):
    with pytest.raises(ValueError, match="unknown domain 'lab'"):
        ch.top_concepts(site[0], "lab")
