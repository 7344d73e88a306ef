"""`nordfed omop dq|summary` for people and pipelines (footer, --json, --strict) and `nordfed synth` errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.omop import dq
from nordfed.omop.store import open_cdm
from nordfed.omop.summary import summarize
from test_omop_support import CREATININE, build_cdm


def _no_nan(token: str) -> None:
    raise AssertionError(f"{token} in JSON output")


def _said(res) -> str:
    return " ".join(res.output.split())  # rich wraps long lines


@pytest.fixture(scope="module")
def sites(tmp_path_factory) -> dict[str, str]:
    """A clean site and two with planted defects: some checks fail at both dirty sites."""
    d = tmp_path_factory.mktemp("dq")
    urls = {}
    for name, seed, defects in (("clean", 30, False), ("dirty1", 31, True), ("dirty2", 32, True)):
        urls[name] = f"duckdb:///{d / f'{name}.duckdb'}"
        build_cdm(open_cdm(urls[name], create=True), n=120, seed=seed, defects=defects)
    return urls


def test_dq_footer_tells_checks_from_check_site_results(sites, monkeypatch):
    results = {n: dq.run_checks(open_cdm(u)) for n, u in sites.items()}
    per_check = {n: {dq.check_key(row) for row in r[r["status"] == "fail"].to_dict("records")}
                 for n, r in results.items()}
    n_checks = len(set().union(*per_check.values()))
    n_results = sum(len(k) for k in per_check.values())
    assert n_checks < n_results  # the case the old footer mixed up
    monkeypatch.setenv("COLUMNS", "250")
    res = CliRunner().invoke(app, ["omop", "dq", *sites.values(), "--failed"])
    assert res.exit_code == 0, res.output
    assert (f"{n_checks} check(s) fail at some site ({n_results} failing check × site result(s), 3 site(s))"
            in _said(res))


def test_dq_json_has_the_table_numbers_per_site(sites):
    res = CliRunner().invoke(app, ["omop", "dq", *sites.values(), "--all", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout, parse_constant=_no_nan)
    assert list(doc["sites"]) == list(sites)
    for name, url in sites.items():
        want = dq.run_checks(open_cdm(url))
        got = doc["sites"][name]
        assert got["url"] == url and len(got["checks"]) == len(want)
        row = next(c for c in got["checks"] if c["check"] == "plausible value" and c["concept_id"] == CREATININE)
        w = want[(want["check"] == "plausible value") & (want["concept_id"] == CREATININE)].iloc[0]
        assert (row["n_rows"], row["n_fail"], row["status"]) == (w.n_rows, w.n_fail, w.status)
        assert row["pct_fail"] == pytest.approx(w.pct_fail) and row["threshold"] == w.threshold
    na = [c for c in doc["sites"]["clean"]["checks"] if c["status"] == "n/a"]
    assert na and all(c["pct_fail"] is None for c in na)  # NaN → null
    assert doc["failing_results"] > doc["failing_checks"] > 0
    only = json.loads(CliRunner().invoke(app, ["omop", "dq", *sites.values(), "--failed", "--json"]).stdout)
    assert all(len(s["checks"]) == only["failing_checks"] for s in only["sites"].values())


def test_dq_strict_exit_code(sites):
    runner = CliRunner()
    assert runner.invoke(app, ["omop", "dq", sites["dirty1"]]).exit_code == 0
    assert runner.invoke(app, ["omop", "dq", sites["dirty1"], "--strict"]).exit_code == 1
    assert runner.invoke(app, ["omop", "dq", sites["clean"], "--strict"]).exit_code == 0
    res = runner.invoke(app, ["omop", "dq", sites["clean"], sites["dirty2"], "--strict", "--json"])
    assert res.exit_code == 1 and json.loads(res.stdout)["failing_checks"] > 0
    assert "--strict" in runner.invoke(app, ["omop", "dq", "--help"]).output


def test_summary_json(sites):
    urls = [sites["clean"], sites["dirty1"]]
    res = CliRunner().invoke(app, ["omop", "summary", *urls, "--top", "2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout, parse_constant=_no_nan)
    assert list(doc["sites"]) == ["clean", "dirty1"]
    for url, got in zip(urls, doc["sites"].values(), strict=True):
        s = summarize(open_cdm(url), top_n=2)
        assert got["url"] == url and got["persons"] == s.persons and got["row_counts"] == s.row_counts
        assert got["sex"] == {"female": 0, "male": 0, "unknown": 0} | s.sex
        assert got["observation"]["median_days"] == s.observation.median_days
        assert got["observation"]["median_years"] == pytest.approx(s.observation.median_days / 365.25)
        assert got["top"]["drug"] == s.top["drug"].to_dict("records")
        assert "procedure" not in got["top"]


def test_synth_names_the_truth_option(tmp_path):
    res = CliRunner().invoke(app, ["synth", "--site", "NO", "--persons", "10", "--out", "postgresql://h/db?schema=s"])
    assert res.exit_code == 2
    assert "--truth" in _said(res) and "truth_path" not in _said(res)
