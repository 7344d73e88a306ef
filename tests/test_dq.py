"""DQD-style checks: planted defects are found with exact counts; a clean site passes every check."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.omop import dq
from nordfed.omop.store import open_cdm
from test_omop_support import CREATININE, HAEMOGLOBIN, UMOL_L, build_cdm


def _row(df: pd.DataFrame, check: str, table: str, concept_id: int | None = None) -> pd.Series:
    sel = (df["check"] == check) & (df["table"] == table)
    sel &= df["concept_id"].isna() if concept_id is None else df["concept_id"] == concept_id
    assert sel.sum() == 1, (check, table, concept_id)
    return df[sel].iloc[0]


def test_clean_site_passes_everything(duckdb_url):
    cdm = open_cdm(duckdb_url, create=True)
    build_cdm(cdm, n=200, seed=21)
    res = dq.run_checks(cdm)
    assert set(res["status"]) <= {"pass", "n/a"}
    assert (res["status"] == "pass").sum() >= 20


def test_planted_defects_fail_with_exact_counts(cdm_url):
    cdm = open_cdm(cdm_url, create=True)
    f = build_cdm(cdm, n=200, seed=22, defects=True)
    res = dq.run_checks(cdm)
    failing = {(r.check, r.table, None if pd.isna(r.concept_id) else int(r.concept_id))
               for r in res[res["status"] == "fail"].itertuples()}
    assert failing == {
        ("concept mapped (not 0)", "condition_occurrence", None),
        ("unit present", "measurement", None),
        ("unit present", "measurement", HAEMOGLOBIN),
        ("plausible value", "measurement", CREATININE),
        ("no unit slip", "measurement", CREATININE),
        ("sex plausible", "condition_occurrence", 200962),
    }
    cond, meas = f["condition_occurrence"], f["measurement"]
    r = _row(res, "concept mapped (not 0)", "condition_occurrence")
    assert (r.n_rows, r.n_fail) == (len(cond), (cond["condition_concept_id"] == 0).sum())
    cre = meas[meas["measurement_concept_id"] == CREATININE]
    r = _row(res, "plausible value", "measurement", CREATININE)
    outside = ((cre["value_as_number"] < 10) | (cre["value_as_number"] > 2200)) & (cre["unit_concept_id"] == UMOL_L)
    assert (r.n_rows, r.n_fail) == (len(cre), outside.sum())
    assert r.pct_fail == pytest.approx(100 * outside.sum() / len(cre))
    med = cre["value_as_number"].median()  # one unit at this site; quantile_cont and pandas both interpolate
    slip = (cre["value_as_number"] > 5 * med) | (cre["value_as_number"] < med / 5)
    r = _row(res, "no unit slip", "measurement", CREATININE)
    assert (r.n_rows, r.n_fail) == (len(cre), slip.sum()) and slip.sum() > 0
    hb = meas[meas["measurement_concept_id"] == HAEMOGLOBIN]
    r = _row(res, "unit present", "measurement", HAEMOGLOBIN)
    assert (r.n_rows, r.n_fail) == (len(hb), hb["unit_concept_id"].isna().sum())
    persons = f["person"].set_index("person_id")["gender_concept_id"]
    prostate = cond[cond["condition_concept_id"] == 200962]
    r = _row(res, "sex plausible", "condition_occurrence", 200962)
    assert (r.n_rows, r.n_fail) == (len(prostate), (prostate["person_id"].map(persons) != 8507).sum())
    assert r.n_fail == 1


def test_concept_conformance_and_date_plausibility(duckdb_url):
    cdm = open_cdm(duckdb_url, create=True)
    f = build_cdm(cdm, n=100, seed=23)
    drugs = sorted(f["drug_exposure"]["drug_concept_id"].unique())
    # the vocabulary knows every drug but the last; the first is non-standard (a source code)
    cdm.insert("concept", pd.DataFrame({
        "concept_id": drugs[:-1], "concept_name": [f"drug {d}" for d in drugs[:-1]], "domain_id": "Drug",
        "vocabulary_id": "RxNorm", "concept_class_id": "Clinical Drug",
        "standard_concept": [None] + ["S"] * (len(drugs) - 2), "concept_code": [str(d) for d in drugs[:-1]],
        "valid_start_date": pd.Timestamp("1970-01-01").date(), "valid_end_date": pd.Timestamp("2099-12-31").date()}))
    pid = int(f["person"]["person_id"].iloc[0])
    cdm.execute("INSERT INTO death (person_id, death_date) VALUES (:p, DATE '1990-01-01')", {"p": pid})
    res = dq.run_checks(cdm)
    d = f["drug_exposure"]
    r = _row(res, "concept in vocabulary", "drug_exposure")
    assert (r.n_fail, r.status) == ((d["drug_concept_id"] == drugs[-1]).sum(), "fail")
    r = _row(res, "concept is standard", "drug_exposure")
    assert (r.n_fail, r.status) == ((d["drug_concept_id"] == drugs[0]).sum(), "fail")
    r = _row(res, "date before death", "drug_exposure")
    late = (d["person_id"] == pid) & (pd.to_datetime(d["drug_exposure_start_date"]) > pd.Timestamp("1990-03-02"))
    assert r.n_fail == late.sum() and r.n_fail > 0


def test_compare_and_cli_side_by_side(tmp_path, monkeypatch):
    urls = []
    for i, defects in enumerate([False, True]):
        url = f"duckdb:///{tmp_path / f'site{i}.duckdb'}"
        build_cdm(open_cdm(url, create=True), n=120, seed=30 + i, defects=defects)
        urls.append(url)
    table = dq.compare({"clean": dq.run_checks(open_cdm(urls[0])), "dirty": dq.run_checks(open_cdm(urls[1]))})
    row = table[table["key"] == f"measurement.value_as_number: plausible value [{CREATININE}]"].iloc[0]
    assert row["clean"] == "0.0% pass" and row["dirty"].endswith("fail") and row["threshold"] == 1.0
    monkeypatch.setenv("COLUMNS", "250")
    out = CliRunner().invoke(app, ["omop", "dq", *urls, "--failed"])
    assert out.exit_code == 0, out.output
    assert f"plausible value [{CREATININE}]" in out.output and "site0" in out.output and "site1" in out.output
    assert "6 check(s) fail at some site (6 failing check × site result(s), 2 site(s))" in out.output
