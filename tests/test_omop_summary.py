"""`nordfed omop summary`: figures equal pandas on the inserted rows; several sites print side by side."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.omop.store import open_cdm
from nordfed.omop.summary import side_by_side, summarize
from test_omop_support import build_cdm


def test_summary_figures(cdm_url):
    cdm = open_cdm(cdm_url, create=True)
    f = build_cdm(cdm, n=80, seed=51)
    steps = []
    s = summarize(cdm, top_n=2, progress=steps.append)
    assert s.persons == 80
    assert s.sex == f["person"]["gender_concept_id"].map({8507: "male", 8532: "female"}).value_counts().to_dict()
    assert s.row_counts == {t: len(df) for t, df in f.items()}
    op = f["observation_period"]
    days = (pd.to_datetime(op["observation_period_end_date"]) - pd.to_datetime(op["observation_period_start_date"]))
    assert s.observation.median_days == days.dt.days.median()
    top = f["drug_exposure"].groupby("drug_concept_id")["person_id"].nunique().sort_values(ascending=False)
    assert s.top["drug"]["persons"].tolist() == top.head(2).tolist()
    assert set(s.top) == {"condition", "drug", "measurement"}  # no procedures at this site
    assert steps[0] == "row counts" and len(steps) == 7


def test_side_by_side_and_cli(tmp_path, monkeypatch):
    urls = []
    for i, n in enumerate([60, 45]):
        urls.append(f"duckdb:///{tmp_path / f'site{i}.duckdb'}")
        build_cdm(open_cdm(urls[-1], create=True), n=n, seed=60 + i)
    table = side_by_side({"A": summarize(open_cdm(urls[0])), "B": summarize(open_cdm(urls[1]))})
    persons = table[(table["section"] == "persons") & (table["metric"] == "persons")].iloc[0]
    assert (persons["A"], persons["B"]) == ("60", "45")
    monkeypatch.setenv("COLUMNS", "200")
    out = CliRunner().invoke(app, ["omop", "summary", *urls, "--top", "2"])
    assert out.exit_code == 0, out.output
    assert "site0" in out.output and "site1" in out.output and "median years per person" in out.output
    bad = CliRunner().invoke(app, ["omop", "summary", "mysql://nowhere/x"])
    assert bad.exit_code == 2 and "unsupported CDM URL" in bad.output
