"""`nordfed text` before and after annotation, unknown persons, and `text count --cdm` in both forms."""

from __future__ import annotations

import datetime as dt

import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.fed.protocol import InProcessFederation
from nordfed.omop.store import open_cdm
from nordfed.text.store import NotAnnotatedError, UnknownPersonError, current_implants, implant_counts
from test_text_cdm import _hand_note, _load

NOT_ANNOTATED = "no annotations in this CDM: run `nordfed text annotate --cdm"


def _said(res) -> str:
    return " ".join(res.output.split())  # rich wraps long lines


def _site(url: str, persons: int = 12) -> str:
    _load(url, site="SE", n=persons)
    with open_cdm(url) as cdm:
        cdm.execute("DELETE FROM note")
        for k in range(persons):
            _hand_note(cdm, 5000 + k, k + 1, dt.date(2020, 1, 1), "Har pacemaker sedan 2018.")
    return url


def test_text_commands_refuse_before_annotate(duckdb_url, monkeypatch):
    url = _site(duckdb_url)
    monkeypatch.setenv("COLUMNS", "400")  # the URL in the message stays on one line
    runner = CliRunner()
    for cmd in (["count", "pacemaker", "--cdm", f"SE={url}"], ["count", "pacemaker", "--cdm", url],
                ["implants", "--person", "1", "--cdm", url], ["implants", "--person", "1", "--cdm", url, "--json"]):
        res = runner.invoke(app, ["text", *cmd])
        assert res.exit_code == 1, (cmd, res.output)
        assert f"{NOT_ANNOTATED} {url}` first" in _said(res), cmd
    with open_cdm(url) as cdm:
        with pytest.raises(NotAnnotatedError, match="no annotations in this CDM"):
            current_implants(cdm, 1)
        with pytest.raises(NotAnnotatedError):  # a node refuses too instead of reporting 0
            implant_counts(InProcessFederation.from_cdms({"SE": cdm}), "pacemaker")
    assert runner.invoke(app, ["text", "annotate", "--cdm", url]).exit_code == 0
    res = runner.invoke(app, ["text", "implants", "--person", "1", "--cdm", url])
    assert res.exit_code == 0 and "pacemaker" in res.output


def test_no_notes_is_not_refused(duckdb_url):
    _load(duckdb_url, n=3)
    with open_cdm(duckdb_url) as cdm:
        cdm.execute("DELETE FROM note")
    res = CliRunner().invoke(app, ["text", "implants", "--person", "1", "--cdm", duckdb_url])
    assert res.exit_code == 0 and "no current implants" in res.output


def test_unknown_person(duckdb_url):
    url = _site(duckdb_url)
    res = CliRunner().invoke(app, ["text", "implants", "--person", "999999", "--cdm", url])
    assert res.exit_code == 1 and "person 999999 is not in this CDM" in _said(res)
    with open_cdm(url) as cdm, pytest.raises(UnknownPersonError):
        current_implants(cdm, 999999)


def test_count_takes_bare_urls_and_site_equals_url(tmp_path, monkeypatch):
    se, fi = (_site(f"duckdb:///{tmp_path / name}.duckdb") for name in ("se", "fi"))
    runner = CliRunner()
    for url in (se, fi):
        assert runner.invoke(app, ["text", "annotate", "--cdm", url]).exit_code == 0
    monkeypatch.setenv("COLUMNS", "200")
    res = runner.invoke(app, ["text", "count", "pacemaker", "--cdm", se, "--cdm", f"FINLAND={fi}"])
    assert res.exit_code == 0, res.output
    rows = [line.split("│")[1:3] for line in res.output.splitlines() if line.count("│") == 3]
    assert [(s.strip(), n.strip()) for s, n in rows] == [("se", "12"), ("FINLAND", "12")]
    res = runner.invoke(app, ["text", "count", "pacemaker", "--cdm", se, "--cdm", f"se={fi}"])
    assert res.exit_code == 2 and "site se given twice" in _said(res)
    res = runner.invoke(app, ["text", "count", "pacemaker", "--cdm", "SE=nowhere"])
    assert res.exit_code == 2 and "--cdm SE=nowhere: expected a CDM URL" in _said(res)


def test_count_bare_postgres_url_is_named_after_its_schema(pg_url, monkeypatch):
    url = _site(pg_url)
    assert CliRunner().invoke(app, ["text", "annotate", "--cdm", url]).exit_code == 0
    monkeypatch.setenv("COLUMNS", "200")
    res = CliRunner().invoke(app, ["text", "count", "pacemaker", "--cdm", url])  # "=" inside: ?schema=
    assert res.exit_code == 0, res.output
    assert url.rsplit("schema=", 1)[1] in res.output and "12" in res.output
