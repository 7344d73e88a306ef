"""nordfed.synth: API, determinism, vocabulary hierarchy, writing (DuckDB, PostgreSQL), CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.omop.schema import schema
from nordfed.omop.store import CDMError, open_cdm
from nordfed.synth import SITES, generate, truth_path_for, write, write_site
from nordfed.synth import vocabulary as v

PERSONS = 1500


@pytest.fixture(scope="module")
def dk() -> object:
    return generate("DK", PERSONS, seed=5, notes=False)


def test_tables_are_cdm_tables_with_cdm_columns(dk):
    spec = schema()
    for name, df in dk.tables.items():
        table = spec[name]
        assert set(df.columns) <= set(table.columns), name
        for f in table.fields:
            if f.required and not df.empty:
                assert f.name in df.columns, f"{name}.{f.name} missing"
                assert not df[f.name].isna().any(), f"{name}.{f.name} has NULLs"
    assert len(dk.tables["person"]) == PERSONS
    assert {"concept", "concept_ancestor", "concept_relationship", "vocabulary", "domain", "concept_class",
            "death", "measurement", "observation", "procedure_occurrence", "drug_exposure"} <= set(dk.tables)


def test_same_seed_same_tables_other_seed_other_tables():
    a = generate("NO", 800, seed=3, notes=False)
    b = generate("NO", 800, seed=3, notes=False)
    c = generate("NO", 800, seed=4, notes=False)
    assert a.tables.keys() == b.tables.keys()
    for name in a.tables:
        pd.testing.assert_frame_equal(a.tables[name], b.tables[name], check_exact=True)
    assert json.dumps(a.truth, sort_keys=True, default=str) == json.dumps(b.truth, sort_keys=True, default=str)
    assert not a.tables["measurement"].equals(c.tables["measurement"])


def test_chunks_keep_ids_unique_and_persons_complete():
    r = generate("SE", 2100, seed=2, chunk_size=700, notes=False)
    assert r.tables["person"]["person_id"].tolist() == list(range(1, 2101))
    for name, df in r.tables.items():
        pk = schema()[name].primary_key
        if pk and not df.empty:
            assert df[pk].is_unique, name
    visits = set(r.tables["visit_occurrence"]["visit_occurrence_id"])
    refs = r.tables["condition_occurrence"]["visit_occurrence_id"].dropna()
    assert set(refs) <= visits


def test_cohort_shares_and_event_rates(dk):
    crc = dk.truth["cohorts"]["crc_surgery"]
    assert 0.05 <= crc["size"] / PERSONS <= 0.10
    assert 0.03 <= crc["event_rate"] <= 0.3
    cll = dk.truth["cohorts"]["cll"]
    assert cll["size"] > 0 and cll["events"] > 0
    assert len(dk.cohorts["crc_surgery"]) == crc["size"]


def test_vocabulary_hierarchy_works_like_omop():
    anc = v.concept_ancestor_table()
    concept = v.concept_table()
    self_rows = anc[anc["ancestor_concept_id"] == anc["descendant_concept_id"]]
    assert set(self_rows["ancestor_concept_id"]) == set(concept["concept_id"]) - {0}
    assert (self_rows[["min_levels_of_separation", "max_levels_of_separation"]] == 0).all().all()

    def levels(a: int, d: int) -> tuple[int, int]:
        row = anc[(anc["ancestor_concept_id"] == a) & (anc["descendant_concept_id"] == d)]
        assert len(row) == 1, (a, d)
        return int(row["min_levels_of_separation"].iloc[0]), int(row["max_levels_of_separation"].iloc[0])

    assert levels(v.LARGE_INTESTINE_CANCER, v.COLON_CANCER) == (1, 1)
    assert levels(v.LARGE_INTESTINE_CANCER, v.RECTAL_CANCER) == (1, 1)
    assert levels(v.LARGE_INTESTINE_CANCER, v.SIGMOID_COLON_CANCER) == (2, 2)
    assert levels(v.COLECTOMY, v.RIGHT_HEMICOLECTOMY) == (1, 1)
    assert levels(v.RESECTION_LARGE_INTESTINE, v.LAP_RIGHT_HEMICOLECTOMY) == (2, 3)
    assert levels(v.ATC_B01A_ANTITHROMBOTICS, v.APIXABAN) == (2, 2)
    assert levels(v.ATC_C10AA_STATINS, v.SIMVASTATIN) == (1, 1)
    assert {v.RIGHT_HEMICOLECTOMY, v.SIGMOID_COLECTOMY, v.ANTERIOR_RESECTION_RECTUM,
            v.HARTMANN_PROCEDURE} <= v.descendants(v.RESECTION_LARGE_INTESTINE)
    std = dict(zip(concept["concept_id"], concept["standard_concept"], strict=True))
    assert std[v.GENDER_MALE] == "S" and std[v.ATC_C10AA_STATINS] == "C" and std[v.ICD10_I10] is None
    rel = v.concept_relationship_table()
    assert ((rel["concept_id_1"] == v.ICD10_I10) & (rel["concept_id_2"] == v.HYPERTENSION)
            & (rel["relationship_id"] == "Maps to")).any()
    # real OMOP ids where known, the local range (> 2e9) for the rest
    assert (v.GENDER_MALE, v.GENDER_FEMALE, v.VISIT_INPATIENT, v.TYPE_EHR) == (8507, 8532, 9201, 32817)
    assert v.COLECTOMY > v.LOCAL_BASE and v.HEMOGLOBIN == 3000963


def test_write_duckdb_truth_beside_not_inside(tmp_path, dk):
    url = f"duckdb:///{tmp_path / 'x' / 'dk.duckdb'}"
    path = write(dk, url)
    assert path == tmp_path / "x" / "dk.truth.json"
    truth = json.loads(path.read_text())
    assert truth["site"] == "DK" and truth["persons"] == PERSONS
    for name in truth["person_level_files"].values():
        assert (tmp_path / "x" / name).exists()
    with open_cdm(url) as cdm:
        assert cdm.table_names() <= set(schema().tables)
        counts = cdm.row_counts()
    for name, df in dk.tables.items():
        assert counts[name] == len(df), name


def test_write_refuses_a_non_empty_cdm(tmp_path, dk):
    url = f"duckdb:///{tmp_path / 'dk.duckdb'}"
    write(dk, url)
    with pytest.raises(CDMError, match="already holds"):
        write(dk, url)


def test_write_is_all_or_nothing(tmp_path, dk):
    url = f"duckdb:///{tmp_path / 'dk.duckdb'}"
    broken = type(dk)(dk.site, dk.persons, dk.seed, dict(dk.tables), dk.truth, dk.cohorts)
    broken.tables["measurement"] = dk.tables["measurement"].assign(no_such_column=1)
    with pytest.raises(CDMError):
        write(broken, url)
    with open_cdm(url) as cdm:
        assert cdm.scalar("SELECT count(*) FROM person") == 0
        assert cdm.scalar("SELECT count(*) FROM concept") == 0
    assert not (tmp_path / "dk.truth.json").exists()


def test_truth_path_rules(tmp_path):
    assert truth_path_for("duckdb:///a/b/site.duckdb") == Path("a/b/site.truth.json")
    with pytest.raises(CDMError, match="truth_path"):
        truth_path_for("postgresql://localhost/db?schema=s")
    with pytest.raises(CDMError, match="truth_path"):
        truth_path_for("duckdb:///:memory:")
    assert truth_path_for("postgresql://h/db", tmp_path / "t.json") == tmp_path / "t.json"


def test_streamed_write_equals_in_memory_generate(tmp_path):
    url = f"duckdb:///{tmp_path / 'fi.duckdb'}"
    seen = []
    truth = write_site("FI", 1200, 9, url, chunk_size=500, notes=False, progress=lambda d, r: seen.append(d))
    mem = generate("FI", 1200, 9, chunk_size=500, notes=False)
    assert seen == [500, 1000, 1200]
    assert json.dumps(truth, sort_keys=True, default=str) == json.dumps(mem.truth, sort_keys=True, default=str)
    with open_cdm(url) as cdm:
        meas = cdm.query("SELECT measurement_id, person_id, measurement_concept_id, value_as_number "
                         "FROM measurement ORDER BY measurement_id")
    expected = mem.tables["measurement"][meas.columns.tolist()]
    np.testing.assert_array_equal(meas["measurement_id"], expected["measurement_id"])
    np.testing.assert_allclose(meas["value_as_number"].astype(float), expected["value_as_number"].astype(float))


def test_notes_go_into_the_cdm_and_gold_beside_the_truth(tmp_path):
    result = generate("DK", 300, seed=1, chunk_size=150)
    note = result.tables.get("note")
    if note is None:  # the clinical-text generator returned no notes
        assert result.notes_gold.empty
        return
    assert note["note_id"].is_unique
    assert set(note["person_id"]) <= set(result.tables["person"]["person_id"])
    period = result.tables["observation_period"].set_index("person_id")
    d = pd.to_datetime(note["note_date"].astype(str))
    start = pd.to_datetime(period.loc[note["person_id"], "observation_period_start_date"].astype(str)).to_numpy()
    end = pd.to_datetime(period.loc[note["person_id"], "observation_period_end_date"].astype(str)).to_numpy()
    assert ((d.to_numpy() >= start) & (d.to_numpy() <= end)).all()
    assert set(result.notes_gold["note_id"]) <= set(note["note_id"])
    path = write(result, f"duckdb:///{tmp_path / 'dk.duckdb'}")
    assert (tmp_path / "dk.notes_gold.parquet").exists() and path.exists()


def _said(res) -> str:
    return " ".join(res.output.split())  # rich wraps long lines


def test_cli_synth(tmp_path):
    runner = CliRunner()
    url = f"duckdb:///{tmp_path / 'no.duckdb'}"
    res = runner.invoke(app, ["synth", "--site", "no", "--persons", "600", "--seed", "3", "--out", url, "--no-notes"])
    assert res.exit_code == 0, res.output
    assert "NO: 600 persons" in _said(res)
    truth = json.loads((tmp_path / "no.truth.json").read_text())
    assert truth["site"] == "NO" and truth["seed"] == 3
    res = runner.invoke(app, ["synth", "--site", "XX", "--persons", "10", "--out", url])
    assert res.exit_code == 2 and "unknown site" in _said(res)
    res = runner.invoke(app, ["synth", "--site", "NO", "--persons", "10", "--out", "postgresql://h/db?schema=s"])
    assert res.exit_code == 2 and "add --truth PATH" in _said(res)
    res = runner.invoke(app, ["synth", "--site", "NO", "--persons", "10", "--out", url, "--no-notes"])
    assert res.exit_code == 2 and "already holds" in _said(res)


@pytest.mark.postgres
def test_write_to_postgres_matches_duckdb(pg_url, tmp_path):
    result = generate("EE", 400, seed=4, notes=False)
    path = write(result, pg_url, truth_path=tmp_path / "ee.truth.json")
    assert path.exists() and (tmp_path / "ee.truth_crc_surgery.parquet").exists()
    with open_cdm(pg_url) as cdm:
        counts = cdm.row_counts()
        hb = cdm.query(f"SELECT unit_concept_id, count(*) AS n FROM measurement WHERE measurement_concept_id = "
                       f"{v.HEMOGLOBIN} GROUP BY unit_concept_id")
        deaths_after = cdm.scalar("SELECT count(*) FROM condition_occurrence c JOIN death d USING (person_id) "
                                  "WHERE c.condition_start_date > d.death_date")
    for name, df in result.tables.items():
        assert counts[name] == len(df), name
    assert set(hb["unit_concept_id"]) == {v.UNIT_G_L}
    assert deaths_after == 0


def test_every_site_profile_generates():
    for site in SITES:
        r = generate(site, 300, seed=1, notes=False)
        assert r.truth["site"] == site
        assert len(r.tables["person"]) == 300
