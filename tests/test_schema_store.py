"""The CDM schema comes from OHDSI's spec; the store runs the same SQL on DuckDB and PostgreSQL."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nordfed.omop.schema import ddl, schema
from nordfed.omop.store import CDMError, CDMUrl, open_cdm, translate

SHARED_SPEC = Path(__file__).resolve().parents[2] / "shared" / "omop" / "OMOP_CDMv5.4_Field_Level.csv"


def test_schema_has_every_table_and_field_of_the_spec():
    packaged = Path(__file__).resolve().parents[1] / "src/nordfed/omop/spec/OMOP_CDMv5.4_Field_Level.csv"
    rows = list(csv.DictReader(packaged.open(encoding="utf-8-sig")))
    s = schema()
    assert len(s.tables) == len({r["cdmTableName"] for r in rows}) == 39
    assert sum(len(t.fields) for t in s.tables.values()) == len(rows)
    assert s["PERSON"].primary_key == "person_id"
    assert s["note_nlp"].field("offset").kind == "text"
    assert s["measurement"].field("value_as_number").kind == "float"
    assert {"concept", "concept_ancestor", "concept_relationship", "cohort", "drug_era"} <= set(s.tables)


@pytest.mark.skipif(not SHARED_SPEC.exists(), reason="shared/omop spec not beside the checkout")
def test_packaged_spec_is_the_shared_spec():
    packaged = Path(__file__).resolve().parents[1] / "src/nordfed/omop/spec/OMOP_CDMv5.4_Field_Level.csv"
    assert packaged.read_bytes() == SHARED_SPEC.read_bytes()


def test_ddl_per_dialect():
    duck = ddl("duckdb")
    pg = ddl("postgres")
    person = next(s for s in pg if s.startswith('CREATE TABLE IF NOT EXISTS "person"'))
    assert '"person_id" BIGINT NOT NULL' in person and 'PRIMARY KEY ("person_id")' in person
    assert '"gender_concept_id" INTEGER NOT NULL' in person
    assert any('ON "condition_occurrence" ("person_id")' in s for s in duck)
    assert any('ON "measurement" ("measurement_concept_id")' in s for s in pg)
    with pytest.raises(ValueError, match="no DDL for dialect"):
        ddl("oracle")


def test_url_parsing():
    assert CDMUrl.parse("duckdb:///site.duckdb").target == "site.duckdb"
    assert CDMUrl.parse("duckdb:////tmp/site.duckdb").target == "/tmp/site.duckdb"
    assert CDMUrl.parse("duckdb://").target == ":memory:"
    pg = CDMUrl.parse("postgresql://u@127.0.0.1:5432/test?schema=cdm_dk&sslmode=disable")
    assert (pg.engine, pg.schema, pg.target) == ("postgres", "cdm_dk", "postgresql://u@127.0.0.1:5432/test?sslmode=disable")
    with pytest.raises(CDMError, match="unsupported CDM URL"):
        CDMUrl.parse("mysql://x/y")
    with pytest.raises(CDMError, match="invalid schema name"):
        CDMUrl.parse("postgresql://h/db?schema=x;drop")


def test_translate_binds_parameters_safely():
    hostile = {"v": "x'; DROP TABLE person;--"}
    (sql,) = translate("SELECT * FROM person WHERE person_source_value = :v", "postgres", hostile)
    assert sql == "SELECT * FROM person WHERE person_source_value = 'x''; DROP TABLE person;--'"
    with pytest.raises(CDMError, match=":missing has no value"):
        translate("SELECT * FROM t WHERE a = :missing", "postgres", {})
    for dialect in ("spark", "trino", "snowflake"):
        assert translate("SELECT date_diff('day', a, b) FROM t", dialect)


PEOPLE = pd.DataFrame(
    {
        "person_id": [1, 2, 3],
        "gender_concept_id": [8507, 8532, 8532],
        "year_of_birth": [1950, 1960, 1970],
        "race_concept_id": [0, 0, 0],
        "ethnicity_concept_id": [0, 0, 0],
    }
)


def test_opening_a_cdm_that_does_not_exist_is_an_error_and_makes_nothing(cdm_url, tmp_path):
    # a mistyped path or schema must not become an empty CDM that every command then reports on
    missing = f"duckdb:///{tmp_path / 'typo' / 'site.duckdb'}" if cdm_url.startswith("duckdb") else cdm_url
    with pytest.raises(CDMError, match=r"no CDM (at|schema)"):
        open_cdm(missing)
    if cdm_url.startswith("duckdb"):
        assert not (tmp_path / "typo").exists()
    else:
        with open_cdm(f"{CDMUrl.parse(cdm_url).target}") as server:  # the server's default schema exists
            assert server.scalar("SELECT count(*) FROM information_schema.schemata WHERE schema_name = "
                                 f"'{CDMUrl.parse(cdm_url).schema}'") == 0
    with open_cdm(missing, create=True) as cdm:
        assert "person" in cdm.table_names()
    open_cdm(missing).close()  # now it exists


def test_same_query_on_both_engines(cdm_url):
    with open_cdm(cdm_url, create=True) as cdm:
        assert {"person", "measurement", "cohort"} <= cdm.table_names()
        with cdm.transaction():
            assert cdm.insert("person", PEOPLE) == 3
        df = cdm.query(
            "SELECT gender_concept_id, count(*) AS n FROM person WHERE year_of_birth >= :y "
            "GROUP BY gender_concept_id ORDER BY gender_concept_id",
            {"y": 1955},
        )
        assert df.to_dict("list") == {"gender_concept_id": [8532], "n": [2]}
        assert cdm.row_counts()["person"] == 3
        cdm.create_schema()  # idempotent
        assert cdm.row_counts()["person"] == 3


def test_failed_transaction_leaves_nothing(cdm_url):
    with open_cdm(cdm_url, create=True) as cdm:
        with pytest.raises(CDMError), cdm.transaction():
            cdm.insert("person", PEOPLE)
            cdm.insert("person", PEOPLE.head(1))  # duplicate primary key
        assert cdm.scalar("SELECT count(*) FROM person") == 0
        with pytest.raises(CDMError, match="no column"):
            cdm.insert("person", PEOPLE.assign(shoe_size=1))


def test_integer_columns_with_nulls_read_back_exactly_on_both_engines(cdm_url):
    """PostgreSQL used to give float64 for an integer column with a NULL, rounding ids above 2**53."""
    big = 2**53 + 1
    with open_cdm(cdm_url, create=True) as cdm:
        with cdm.transaction():
            cdm.insert("person", PEOPLE.assign(provider_id=pd.array([big, None, 7], dtype="Int64"),
                                               care_site_id=[1.0, None, 3.0]))  # pandas' float for ints
            with pytest.raises(CDMError, match=r"person\.location_id: an integer column holds a fractional"):
                cdm.insert("person", PEOPLE.assign(person_id=[4, 5, 6], location_id=[1.5, None, 3.0]))
        df = cdm.query("SELECT person_id, provider_id, care_site_id, year_of_birth FROM person ORDER BY person_id")
    assert str(df["provider_id"].dtype) == "Int64"
    assert df["provider_id"].iloc[0] == big and df["provider_id"].isna().tolist() == [False, True, False]
    assert df["care_site_id"].tolist()[::2] == [1, 3]
    assert df["person_id"].dtype == "int64" and df["year_of_birth"].dtype == "int32"


def test_arrow_bulk_read_keeps_nulls_texts_and_special_floats_on_both_engines(cdm_url):
    """PostgreSQL's rows come through COPY as CSV: only a NULL becomes null ('' and 'NULL' are texts, NaN a float)."""
    rows = ["(1, CAST('NaN' AS DOUBLE), '', TRUE, DATE '2020-02-29', CAST(9007199254740993 AS BIGINT))",
            "(2, NULL, 'NULL', NULL, NULL, NULL)", "(3, CAST('Infinity' AS DOUBLE), 'a,\"b\"', FALSE, NULL, -1)"]
    sql = f"SELECT * FROM (VALUES {', '.join(rows)}) AS t(i, x, s, b, d, big)"
    with open_cdm(cdm_url, create=True) as cdm:
        got = cdm.arrow(sql + " ORDER BY i").to_pydict()
        empty = cdm.arrow(sql + " WHERE i > 5")
        twice = cdm.arrow("SELECT 1 AS a, 2 AS a")
    x = got.pop("x")
    assert np.isnan(x[0]) and x[1] is None and x[2] == np.inf
    assert got == {"i": [1, 2, 3], "s": ["", "NULL", 'a,"b"'], "b": [True, None, False],
                   "d": [dt.date(2020, 2, 29), None, None], "big": [2**53 + 1, None, -1]}
    assert empty.num_rows == 0 and empty.column_names == ["i", "x", "s", "b", "d", "big"]
    assert twice.column_names == ["a", "a"] and [c.to_pylist() for c in twice.columns] == [[1], [2]]


def test_postgres_hash_joins_turns_nested_loops_off_and_back(pg_url):
    with open_cdm(pg_url, create=True) as cdm:
        setting = "SELECT current_setting('enable_nestloop') AS v"
        with cdm.hash_joins():
            assert cdm.scalar(setting) == "off"
        assert cdm.scalar(setting) == "on"
        with cdm.transaction():  # inside a longer transaction: back on for its remaining statements
            with cdm.hash_joins():
                assert cdm.scalar(setting) == "off"
            assert cdm.scalar(setting) == "on"


def test_postgres_load_refreshes_planner_statistics(pg_url):
    from nordfed.omop.loader import load_folder

    load_folder(Path(__file__).parent / "data" / "bad_cdm" / "good", pg_url)
    with open_cdm(pg_url) as cdm:
        stats = cdm.query("SELECT relname, last_analyze FROM pg_stat_user_tables WHERE schemaname = current_schema()")
    analysed = dict(zip(stats["relname"], stats["last_analyze"].notna(), strict=True))
    assert analysed["person"] and analysed["condition_occurrence"] and analysed["observation_period"]
