"""`nordfed omop load`: every file checked against the spec, errors name file/row/column, all or nothing."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.omop.loader import LoadError, load_folder
from nordfed.omop.store import open_cdm

CORPUS = Path(__file__).parent / "data" / "bad_cdm"

# case → (file, row, column, words in the message)
EXPECTED = {
    "missing_column": ("person.csv", None, "year_of_birth", "required column"),
    "wrong_type": ("person.csv", 3, "year_of_birth", "'19x5' is not an integer"),
    "duplicate_key": ("person.csv", 3, "person_id", "duplicate primary key 102 (first at row 2)"),
    "orphan_person": ("condition_occurrence.csv", 2, "person_id", "person_id 999 is not in person"),
    "bad_date": ("observation_period.csv", 2, "observation_period_start_date", "'2012-02-30' is not a date"),
    "empty_file": ("person.csv", None, None, "file is empty"),
    "wrong_encoding": ("person.csv", 2, "person_source_value", "not valid UTF-8"),
    "unknown_table": ("persons.csv", None, None, "not an OMOP CDM v5.4 table"),
    "unknown_column": ("person.csv", None, "sex_source_value", "has no column"),
    "required_null": ("person.csv", 2, "gender_concept_id", "required value is empty"),
    "too_long": ("person.csv", 2, "person_source_value", "at most 50 allowed"),
}


def test_corpus_has_a_case_for_every_expectation():
    cases = {p.name for p in CORPUS.iterdir() if p.is_dir()} - {"good"}
    assert cases == set(EXPECTED)


def test_good_folder_loads_with_types_and_mixed_case_names(cdm_url):
    result = load_folder(CORPUS / "good", cdm_url)
    assert result.rows == {"person": 3, "condition_occurrence": 2, "observation_period": 3}
    cdm = open_cdm(cdm_url)
    person = cdm.query("SELECT * FROM person ORDER BY person_id")
    assert person["person_id"].tolist() == [101, 102, 103]
    assert person["month_of_birth"].isna().tolist() == [False, True, False]  # empty field → NULL
    cond = cdm.query("SELECT * FROM condition_occurrence ORDER BY condition_occurrence_id")  # from the .tsv
    assert pd.Timestamp(cond["condition_start_date"].iat[1]).date() == dt.date(2019, 7, 15)
    assert cond["condition_end_date"].isna().tolist() == [True, False]


def test_each_bad_file_gives_clear_error_and_leaves_cdm_unchanged(cdm_url):
    # one CDM for all cases (schema creation dominates the cost); each case is checked independently
    load_folder(CORPUS / "good", cdm_url)
    before = open_cdm(cdm_url).row_counts()
    for case, (file, row, column, words) in sorted(EXPECTED.items()):
        with pytest.raises(LoadError) as info:
            load_folder(CORPUS / case, cdm_url)
        hits = [i for i in info.value.issues if i.file == file and i.row == row and i.column == column]
        assert hits, f"{case}: no issue at {file}/{row}/{column} in {info.value.issues}"
        assert words in hits[0].message, case
        assert open_cdm(cdm_url).row_counts() == before, case


@pytest.mark.parametrize("case", ["wrong_type", "orphan_person"])
def test_failed_load_into_new_cdm_creates_no_rows(duckdb_url, case):
    with pytest.raises(LoadError):
        load_folder(CORPUS / case, duckdb_url)
    assert sum(open_cdm(duckdb_url).row_counts().values()) == 0


def test_parquet_and_existing_key_conflict(cdm_url, tmp_path):
    load_folder(CORPUS / "good", cdm_url)
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"person_id": [201, 202], "gender_concept_id": [8507, 8532],
                             "year_of_birth": [1980, 1990], "race_concept_id": [0, 0],
                             "ethnicity_concept_id": [0, 0]}), folder / "Person.parquet")
    pq.write_table(pa.table({"measurement_id": [1, 2], "person_id": [201, 101], "measurement_concept_id": [3016723] * 2,
                             "measurement_date": [dt.date(2020, 1, 1), dt.date(2021, 2, 3)],
                             "measurement_type_concept_id": [32817] * 2, "value_as_number": [81.5, 90.0]}),
                   folder / "measurement.parquet")
    assert load_folder(folder, cdm_url).rows == {"person": 2, "measurement": 2}
    got = open_cdm(cdm_url).query("SELECT person_id, value_as_number FROM measurement ORDER BY measurement_id")
    assert got["value_as_number"].tolist() == [81.5, 90.0]
    # loading the same folder again: every key is already taken, nothing changes
    before = open_cdm(cdm_url).row_counts()
    with pytest.raises(LoadError, match="primary key 201 is already in the CDM"):
        load_folder(folder, cdm_url)
    assert open_cdm(cdm_url).row_counts() == before


def test_database_refusal_mid_load_rolls_back_everything(duckdb_url, tmp_path):
    """A failure the file checks cannot see (here a site-altered table) still leaves the CDM as before."""
    load_folder(CORPUS / "good", duckdb_url)
    cdm = open_cdm(duckdb_url)
    cdm.execute("DROP TABLE visit_occurrence")
    cdm.execute("CREATE TABLE visit_occurrence (visit_occurrence_id INTEGER, person_id INTEGER CHECK (person_id < 0))")
    cdm.close()
    folder = tmp_path / "more"
    folder.mkdir()
    shutil.copy(CORPUS / "good" / "PERSON.csv", folder / "person.csv")
    (folder / "person.csv").write_text((folder / "person.csv").read_text().replace("10", "20"))  # new ids 201..203
    (folder / "visit_occurrence.csv").write_text(
        "visit_occurrence_id,person_id,visit_concept_id,visit_start_date,visit_end_date,visit_type_concept_id\n"
        "1,201,9201,2020-01-01,2020-01-03,32817\n")
    before = open_cdm(duckdb_url).row_counts()
    with pytest.raises(LoadError, match="the database refused the rows") as info:
        load_folder(folder, duckdb_url)
    assert info.value.issues[0].file == "visit_occurrence.csv"
    assert open_cdm(duckdb_url).row_counts() == before


def test_cli_load_exit_codes(tmp_path):
    url = f"duckdb:///{tmp_path / 'cli.duckdb'}"
    runner = CliRunner()
    ok = runner.invoke(app, ["omop", "load", str(CORPUS / "good"), "--into", url])
    assert ok.exit_code == 0, ok.output
    bad = runner.invoke(app, ["omop", "load", str(CORPUS / "wrong_type"), "--into", url])
    assert bad.exit_code == 1
    assert "person.csv, row 3, column year_of_birth" in bad.output
