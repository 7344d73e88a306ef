"""`nordfed omop validate`: the same SQL finds the same problems on DuckDB and PostgreSQL."""

from __future__ import annotations

from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.omop.schema import EVENT_DATES, create_table_sql, schema
from nordfed.omop.store import open_cdm
from nordfed.omop.validate import validate
from test_omop_support import build_cdm


def _found(report, check, table):
    return next((f for f in report.findings if f.check == check and f.table == table), None)


def test_clean_cdm_has_no_findings(cdm_url):
    cdm = open_cdm(cdm_url, create=True)
    build_cdm(cdm, n=60, seed=3)
    report = validate(cdm)
    assert report.ok and report.findings == []
    assert report.checked_tables["person"] == 60


def test_planted_problems_are_found_with_counts_and_examples(cdm_url):
    cdm = open_cdm(cdm_url, create=True)
    frames = build_cdm(cdm, n=60, seed=4)
    first = frames["observation_period"].iloc[0]
    pid = int(first["person_id"])
    # 2 orphans, 1 end-before-start, 1 duplicate key, 1 event after death, 1 outside observation, 1 before birth
    cdm.execute(
        "INSERT INTO condition_occurrence (condition_occurrence_id, person_id, condition_concept_id, "
        "condition_start_date, condition_end_date, condition_type_concept_id) VALUES "
        "(900001, 99991, 201826, DATE '2015-01-01', NULL, 32817), "
        "(900002, 99992, 201826, DATE '2015-01-01', NULL, 32817)")
    cdm.execute("UPDATE drug_exposure SET drug_exposure_end_date = drug_exposure_start_date - INTERVAL 3 DAY "
                "WHERE drug_exposure_id = 5")
    # CDMs made by other tools often lack the primary-key constraint our DDL declares
    cdm.execute("DROP TABLE observation_period")
    cdm.execute(create_table_sql(schema()["observation_period"], cdm.dialect, constraints=False))
    cdm.insert("observation_period", frames["observation_period"])
    cdm.execute("INSERT INTO observation_period SELECT observation_period_id, person_id + 1000, "
                "observation_period_start_date, observation_period_end_date, period_type_concept_id "
                "FROM observation_period WHERE observation_period_id = :i", {"i": pid})
    cdm.execute("INSERT INTO death (person_id, death_date) VALUES (:p, :d)",
                {"p": pid, "d": str(first["observation_period_start_date"])})
    cdm.execute("INSERT INTO measurement (measurement_id, person_id, measurement_concept_id, measurement_date, "
                "measurement_type_concept_id) VALUES (900003, :p, 3016723, DATE '1901-01-01', 32817)", {"p": pid})
    report = validate(cdm)
    orphans = _found(report, "person reference", "condition_occurrence")
    assert (orphans.rows, orphans.examples, orphans.severity) == (2, (900001, 900002), "error")
    order = _found(report, "start before end", "drug_exposure")
    assert (order.rows, order.examples) == (1, (5,))
    dup = _found(report, "primary key unique", "observation_period")
    assert (dup.rows, dup.examples) == (1, (pid,))
    assert _found(report, "person reference", "observation_period").rows == 1
    death = first["observation_period_start_date"]
    for table, date in EVENT_DATES.items():
        if table in frames:
            f = frames[table]
            expected = int(((f["person_id"] == pid) & (f[date] > death)).sum())
            got = _found(report, "not after death", table)
            assert (got.rows if got else 0) == expected, table
    assert _found(report, "not before birth", "measurement").examples == (900003,)
    assert _found(report, "inside observation period", "measurement").rows >= 1
    assert not report.ok


def test_cli_validate_exit_code_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    url = f"duckdb:///{tmp_path / 'v.duckdb'}"
    cdm = open_cdm(url, create=True)
    build_cdm(cdm, n=30, seed=5)
    runner = CliRunner()
    ok = runner.invoke(app, ["omop", "validate", url])
    assert ok.exit_code == 0 and "valid" in ok.output
    cdm.execute("UPDATE drug_exposure SET person_id = 4242 WHERE drug_exposure_id = 7")
    cdm.close()
    bad = runner.invoke(app, ["omop", "validate", url])
    assert bad.exit_code == 1
    assert "person reference" in bad.output and "drug_exposure" in bad.output and " 7 " in bad.output


def test_structure_wrong_type_and_missing_required_column(cdm_url):
    """CDMs built by other tools: a column of the wrong type and a missing required column are errors."""
    cdm = open_cdm(cdm_url, create=True)
    build_cdm(cdm, n=20, seed=6)
    cdm.execute("DROP TABLE person")
    cdm.execute("CREATE TABLE person (person_id BIGINT, gender_concept_id INTEGER, year_of_birth VARCHAR(4), "
                "race_concept_id INTEGER)")
    cdm.execute("INSERT INTO person VALUES (1, 8507, '1950', 0)")
    report = validate(cdm)
    typ = _found(report, "column type", "person")
    assert typ.field == "year_of_birth" and "spec says integer" in typ.message and typ.severity == "error"
    missing = _found(report, "required column", "person")
    assert missing.field == "ethnicity_concept_id"
