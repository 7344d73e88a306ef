"""`nordfed text annotate` that finds nothing still counts as annotated: the other text commands answer 0 (DuckDB
and PostgreSQL), and only a CDM with neither annotations nor a record of the run is refused."""

from __future__ import annotations

import datetime as dt

import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.fed.protocol import InProcessFederation
from nordfed.omop.store import open_cdm
from nordfed.text.pipeline import NLP_SYSTEM
from nordfed.text.store import RUN_RECORD, NotAnnotatedError, annotate_cdm, check_annotated, implant_counts
from test_text_cdm import _hand_note, _load

NOTHING = "Kontroll. Mår bra, inga besvär."  # Swedish, no implant, drug or reaction


def _site_without_findings(url: str, persons: int = 4) -> str:
    _load(url, site="SE", n=persons)
    with open_cdm(url) as cdm:
        cdm.execute("DELETE FROM note")
        for k in range(persons):
            _hand_note(cdm, 7000 + k, k + 1, dt.date(2021, 2, 1), NOTHING)
    return url


def _said(res) -> str:
    return " ".join(res.output.split())  # rich wraps long lines


def test_annotate_without_findings_lets_the_text_commands_answer_zero(cdm_url, monkeypatch):
    url = _site_without_findings(cdm_url)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()
    res = runner.invoke(app, ["text", "annotate", "--cdm", url])
    assert res.exit_code == 0, res.output
    assert f"wrote 0 note_nlp rows ({NLP_SYSTEM}) from 4 notes" in _said(res)
    assert "no findings in the notes; the run is recorded in the CDM's metadata table" in _said(res)

    res = runner.invoke(app, ["text", "implants", "--person", "1", "--cdm", url])
    assert res.exit_code == 0, res.output
    assert "no current implants recorded in the notes of person 1" in _said(res)
    res = runner.invoke(app, ["text", "implants", "--person", "1", "--cdm", url, "--json"])
    assert res.exit_code == 0 and res.output.strip() == "[]", res.output
    res = runner.invoke(app, ["text", "count", "pacemaker", "--cdm", f"SE={url}"])
    assert res.exit_code == 0, res.output
    rows = [line.split("│")[1:3] for line in res.output.splitlines() if line.count("│") == 3]
    assert [(s.strip(), n.strip()) for s, n in rows] == [("SE", "0")]
    with open_cdm(url) as cdm:
        assert implant_counts(InProcessFederation.from_cdms({"SE": cdm}), "pacemaker")["persons"].tolist() == [0]
        # one record per run, replaced by the next; annotations elsewhere do not count
        annotate_cdm(cdm)
        assert cdm.scalar("SELECT count(*) FROM metadata WHERE name = :n", {"n": RUN_RECORD}) == 1
        assert cdm.scalar("SELECT value_as_string FROM metadata WHERE name = :n", {"n": RUN_RECORD}) == (
            "4 notes annotated")
        cdm.execute("DELETE FROM metadata")
        with pytest.raises(NotAnnotatedError):
            check_annotated(cdm)


def test_a_cdm_without_a_metadata_table_warns_that_the_run_is_not_recorded(duckdb_url, monkeypatch):
    url = _site_without_findings(duckdb_url)
    with open_cdm(url) as cdm:
        cdm.execute("DROP TABLE metadata")
    monkeypatch.setenv("COLUMNS", "200")
    res = CliRunner().invoke(app, ["text", "annotate", "--cdm", url])
    assert res.exit_code == 0, res.output
    assert "warning: no findings in the notes, and this CDM has no metadata table to record the run in" in _said(res)
    res = CliRunner().invoke(app, ["text", "implants", "--person", "1", "--cdm", url])
    assert res.exit_code == 1 and "no annotations in this CDM" in _said(res)
    with open_cdm(url) as cdm:
        assert "metadata" not in cdm.table_names()  # none made in the site's CDM
