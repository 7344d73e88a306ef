"""studies/cohorts/crc_resection.json on a synthetic site reproduces the generator's documented truth."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from nordfed.cohorts.instantiate import cohort_rows, instantiate
from nordfed.fed.protocol import SiteData
from nordfed.omop.store import open_cdm
from nordfed.synth import generate, truth_path_for, write


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "no.duckdb"
    url = f"duckdb:///{path}"
    write(generate("NO", persons=1500, seed=11), url)
    truth = json.loads(truth_path_for(url).read_text())
    return url, truth, path.parent


def test_crc_cohort_and_outcome_match_truth(site):
    url, truth, folder = site
    crc = truth["cohorts"]["crc_surgery"]
    cdm = open_cdm(url)
    assert instantiate(cdm, "crc_resection", 1) == crc["size"] > 20
    people = pd.read_parquet(folder / truth["person_level_files"]["crc_surgery"])
    got = cohort_rows(cdm, 1)
    assert got["subject_id"].tolist() == sorted(people["person_id"].tolist())
    expected_index = people.set_index("person_id")["index_date"].map(pd.Timestamp)
    assert (got.set_index("subject_id")["cohort_start_date"] == expected_index.loc[got["subject_id"]]).all()
    spec = {"builder": "plp", "target": 1, "outcome": "death",
            "population": {"riskWindowStart": 0, "riskWindowEnd": 365, "requireTimeAtRisk": False},
            "covariates": {"measurement_value_long_term": False}}
    frame = SiteData(site="NO", cdm=cdm).frame(spec)
    assert len(frame) == crc["size"] and int(frame["outcome"].sum()) == crc["events"]
    # sex as FeatureExtraction encodes it equals the generator's "male" variable
    male = people.set_index("person_id").loc[frame["subject_id"], "male"].to_numpy()
    np.testing.assert_array_equal(frame["8507001"].to_numpy(), male)
