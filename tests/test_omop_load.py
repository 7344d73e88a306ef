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
from nordfed.omop.store import CDMUrl, open_cdm

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
    # found by fuzzing the loader (mutated copies of good/)
    "short_row": ("person.csv", 2, None, "the row has 6 values but the header names 8 columns"),
    "extra_value": ("person.csv", 2, None, "the row has 9 values but the header names 8 columns"),
    "trailing_delimiter": ("person.csv", None, None, "the header names 8 columns but every row has 9 values"),
    "unbalanced_quote": ("person.csv", 2, "person_source_value", "malformed quotes"),
    "nul_byte": ("person.csv", 2, "person_source_value", "contains a NUL character"),
    "bom_only": ("person.csv", None, None, "file is empty"),
    "duplicate_header": ("person.csv", None, "year_of_birth", "more than once in the header"),
    "unnamed_header": ("person.csv", None, None, "column 4 of the header has no name"),
    "semicolons": ("person.csv", None, None, "no comma or tab but ';'"),
    "utf16": ("person.csv", None, None, "the file is UTF-16"),
    "out_of_range": ("person.csv", 2, "gender_concept_id", "'3000000000' is out of range"),
    "loose_date": ("observation_period.csv", 1, "observation_period_end_date", "'2020-1-31' is not a date"),
    "infinite_number": ("measurement.csv", 1, "value_as_number", "'inf' is not a finite number"),
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


def _target_exists(url: str) -> bool:
    """Whether the DuckDB file or the PostgreSQL schema behind ``url`` exists (without creating it)."""
    location = CDMUrl.parse(url)
    if location.engine == "duckdb":
        return Path(location.target).exists()
    import psycopg

    with psycopg.connect(location.target) as con:
        found = con.execute("SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s",
                            (location.schema,)).fetchone()
    return bool(found and found[0])


# wrong_type fails on reading the file, orphan_person against the (new, empty) CDM's keys
@pytest.mark.parametrize("case", ["wrong_type", "orphan_person"])
def test_failed_load_into_new_cdm_leaves_nothing_behind(cdm_url, tmp_path, case):
    if cdm_url.startswith("duckdb"):  # in folders the load has to make
        cdm_url = f"duckdb:///{tmp_path / 'new' / 'site' / 'cdm.duckdb'}"
    with pytest.raises(LoadError):
        load_folder(CORPUS / case, cdm_url)
    assert not _target_exists(cdm_url)
    assert not (tmp_path / "new").exists()


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


def test_row_numbers_count_blank_lines_and_quoted_newlines(duckdb_url, tmp_path):
    """Row N is line N + 1 of the file (blank lines count); a quoted newline keeps a row one row."""
    (tmp_path / "person.csv").write_text(
        "person_id,gender_concept_id,year_of_birth,race_concept_id,ethnicity_concept_id,person_source_value\r\n"
        '101,8507,1950,0,0,"two\r\nlines"\r\n\r\n102,8532,19x1,0,0,p102\r\n')
    with pytest.raises(LoadError) as info:
        load_folder(tmp_path, duckdb_url)
    assert [(i.row, i.column) for i in info.value.issues] == [(3, "year_of_birth")]


def test_values_at_the_edges_load_exactly(cdm_url, tmp_path):
    """Signs, far dates, time zones, ids above 2**53 next to nulls and decimals: stored as written."""
    (tmp_path / "person.csv").write_text(
        "person_id,gender_concept_id,year_of_birth,race_concept_id,ethnicity_concept_id,birth_datetime\n"
        "+101,8507,1950,0,0,2010-01-01T10:00:00+02:00\n"
        "102,8532,1961,0,0,2010-01-01 10:00:00\n"
        "103,8532,1975,0,0,2010-01-01 10:00:00.5\n")
    (tmp_path / "observation_period.csv").write_text(
        "observation_period_id,person_id,observation_period_start_date,observation_period_end_date,"
        "period_type_concept_id\n1,101,0001-01-01,9999-12-31,32817\n")
    big = 2**53 + 1  # a float64 would store 2**53
    pq.write_table(pa.table({"measurement_id": pa.array([big, big + 2], pa.decimal128(20, 0)),
                             "person_id": [101, 102], "measurement_concept_id": [3016723] * 2,
                             "measurement_date": [dt.date(2020, 1, 1)] * 2, "measurement_type_concept_id": [32817] * 2,
                             "visit_occurrence_id": pa.array([big, None], pa.int64()),
                             "measurement_datetime": pa.array([pd.Timestamp("2020-01-01 10:00", tz="Europe/Oslo")] * 2,
                                                              pa.timestamp("us", tz="Europe/Oslo"))}),
                   tmp_path / "measurement.parquet")
    load_folder(tmp_path, cdm_url)
    cdm = open_cdm(cdm_url)
    person = cdm.query("SELECT person_id, birth_datetime FROM person ORDER BY person_id")
    assert person["person_id"].tolist() == [101, 102, 103]
    # an offset is converted to UTC; a value without one is kept as written, even next to one with an offset
    assert [pd.Timestamp(t) for t in person["birth_datetime"]] == [
        pd.Timestamp("2010-01-01 08:00"), pd.Timestamp("2010-01-01 10:00"), pd.Timestamp("2010-01-01 10:00:00.5")]
    period = cdm.query("SELECT * FROM observation_period")
    assert pd.Timestamp(period["observation_period_end_date"].iat[0]).date() == dt.date(9999, 12, 31)
    assert str(period["observation_period_start_date"].iat[0])[:10].lstrip("0") == "1-01-01"
    # as text: a query result with a NULL in an integer column comes back as floats
    got = cdm.query("SELECT CAST(measurement_id AS VARCHAR) AS id, CAST(visit_occurrence_id AS VARCHAR) AS visit, "
                    "measurement_datetime FROM measurement ORDER BY measurement_id")
    assert got["id"].tolist() == [str(big), str(big + 2)]
    assert got["visit"].iat[0] == str(big)
    assert pd.Timestamp(got["measurement_datetime"].iat[0]) == pd.Timestamp("2020-01-01 09:00")


PERSON_PARQUET = {"person_id": [201, 202], "gender_concept_id": [8507, 8532], "year_of_birth": [1980, 1990],
                  "race_concept_id": [0, 0], "ethnicity_concept_id": [0, 0]}


@pytest.mark.parametrize(("column", "values", "words"), [
    # each was loaded (reinterpreted) or crashed before: a bool as 1, a timestamp as nanoseconds, bytes as "b'…'"
    ("gender_concept_id", pa.array([True, False]), "True (bool) is not an integer"),
    ("person_id", pa.array([dt.datetime(2020, 1, 1)] * 2, pa.timestamp("ns")), "is not an integer"),
    ("birth_datetime", pa.array([5, 6]), "5 (int) is not a date-time"),
    ("person_source_value", pa.array([b"p201", b"p202"]), "(bytes) is not text"),
    ("person_source_value", pa.array([[1], [2]]), "[1] (list) is not text"),
    ("gender_concept_id", pa.array([2**40, 1]), "is out of range for gender_concept_id"),
])
def test_parquet_value_of_wrong_type_is_an_error_naming_row_and_column(duckdb_url, tmp_path, column, values, words):
    pq.write_table(pa.table({**PERSON_PARQUET, column: values}), tmp_path / "person.parquet")
    with pytest.raises(LoadError) as info:
        load_folder(tmp_path, duckdb_url)
    first = info.value.issues[0]
    assert (first.file, first.row, first.column) == ("person.parquet", 1, column)
    assert words in first.message
    assert not Path(CDMUrl.parse(duckdb_url).target).exists()  # the target this load made went again


def test_parquet_duplicate_column_is_named(duckdb_url, tmp_path):
    table = pa.table(PERSON_PARQUET)
    pq.write_table(table.append_column("Year_Of_Birth", pa.array([1, 2])), tmp_path / "person.parquet")
    with pytest.raises(LoadError, match="column appears more than once") as info:
        load_folder(tmp_path, duckdb_url)
    assert info.value.issues[0].column == "year_of_birth"


def test_cli_bad_target_is_an_error_not_a_traceback():
    bad = CliRunner().invoke(app, ["omop", "load", str(CORPUS / "good"), "--into", "mysql://nowhere/cdm"])
    assert bad.exit_code == 1
    assert isinstance(bad.exception, SystemExit), bad.exception
    assert "cannot open it: unsupported CDM URL" in bad.output


def test_tab_separated_values_keep_their_quotes(duckdb_url, tmp_path):
    # Athena's vocabulary files and IANA's TSV have no quoting: a value may start with a quote
    folder = tmp_path / "tsv"
    folder.mkdir()
    (folder / "person.csv").write_text(
        "person_id\tgender_concept_id\tyear_of_birth\trace_concept_id\tethnicity_concept_id\tperson_source_value\n"
        '1\t8507\t1980\t0\t0\t"quoted" start\n2\t8532\t1990\t0\t0\tplain\n')
    assert load_folder(folder, duckdb_url).rows == {"person": 2}
    got = open_cdm(duckdb_url).query("SELECT person_source_value FROM person ORDER BY person_id")
    assert got["person_source_value"].tolist() == ['"quoted" start', "plain"]
