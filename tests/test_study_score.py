"""`nordfed study score`: a PLP study's model applied to a site's patients (PLP's predictPlp / applyModel).

The study is the one-year mortality study on the small synthetic sites of tests/test_study_cli.py and
tests/test_report_demographics.py (DK and SE, 3000 persons each, about 450 resections; two CV folds, five lambdas,
no leave-one-site-out validation: a run of a few seconds).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.special import expit
from typer.testing import CliRunner, Result

from nordfed.cli import app
from nordfed.features.design import plp_dataset
from nordfed.fed.lasso_site import linear_predictor
from nordfed.omop.store import open_cdm
from nordfed.studies import run_study
from nordfed.studies.partials import study_dataset
from nordfed.studies.plp import OUTCOME, study_params
from nordfed.studies.score import (
    MIN_CONTRIBUTION,
    check_results,
    load_results,
    risk_groups_of,
    score_patients,
    scoring_params,
)
from nordfed.studies.sites import duckdb_url, open_sites
from nordfed.studies.spec import PlpStudy, load_spec

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SYN = {"sites": ["DK", "SE"], "persons": 3000, "seed": 5}


def _yaml(tmp: Path, site_dir: Path, **changes: Any) -> Path:
    doc = yaml.safe_load((STUDIES / "crc_1y_mortality.yaml").read_text())
    doc["target"] = str(STUDIES / doc["target"])
    doc["synthetic"] = {**SYN, "dir": str(site_dir)}
    doc["evaluation"] = {"leave_one_site_out": False}
    doc["model"] = {**doc["model"], "n_lambda": 5, "cv_folds": 2}
    doc["disclosure"]["min_cell_count"] = 5
    doc.update(changes)
    path = tmp / f"{doc['name']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[PlpStudy, dict[str, Any], Path, Path]:
    """(spec, results, YAML, results JSON) of one run."""
    tmp = tmp_path_factory.mktemp("score")
    path = _yaml(tmp, tmp / "sites")
    _, _, js = run_study(path, tmp / "out" / "report.html")
    spec = load_spec(path)
    assert isinstance(spec, PlpStudy)
    return spec, load_results(js, spec), path, js


def _site_url(spec: PlpStudy, site: str) -> str:
    return duckdb_url(spec.resolve(spec.synthetic.dir) / f"{site.lower()}.duckdb")  # type: ignore[union-attr]


def _study_dataset(spec: PlpStudy, results: dict[str, Any]) -> dict[str, Any]:
    """The ``study`` dataset the study fitted and evaluated on, as run_plp builds it."""
    plan = results["preprocessing"]["plan"]
    return {**study_params(spec), "builder": "study", "covariate_ids": plan["covariate_ids"],
            "max_values": plan["max_values"]}


def _key(frame: pd.DataFrame, person: str, date: str) -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays([frame[person].astype(int).to_numpy(),
                                      pd.to_datetime(frame[date]).dt.date.to_numpy()])


@pytest.mark.parametrize("site", ["DK", "SE"])
def test_risks_equal_the_studys_predictions_on_its_own_rows(
        study: tuple[PlpStudy, dict[str, Any], Path, Path], site: str) -> None:
    spec, results, _, _ = study
    ds = _study_dataset(spec, results)
    model = results["model"]
    with open_cdm(_site_url(spec, site)) as cdm:
        scores = score_patients(spec, results, cdm)
        own = study_dataset(cdm, ds)
    assert len(own) > 150 and not scores.empty
    study_risk = pd.Series(expit(linear_predictor(own, model)), index=_key(own, "subject_id", "index_date"))
    scored = pd.Series(scores["risk"].to_numpy(), index=_key(scores, "person_id", "cohort_start_date"))
    assert study_risk.index.isin(scored.index).all()  # every person of the study population is scored
    assert np.max(np.abs(scored.reindex(study_risk.index).to_numpy() - study_risk.to_numpy())) < 1e-12
    # and the sum of the risks the study's own evaluation partial computed at the site
    with open_sites(spec, only=[site]) as opened:
        agg = opened.federation.run("nordfed.eval.scores", {"dataset": ds, "model": model, "outcome": OUTCOME,
                                                            "where": None})[site]
    assert agg["n"] == len(own)
    assert agg["sum_p"] == pytest.approx(float(scored.reindex(study_risk.index).sum()), rel=1e-12)


def test_risk_groups_and_bundles_follow_the_cut_offs(study: tuple[PlpStudy, dict[str, Any], Path, Path]) -> None:
    spec, results, _, _ = study
    cuts, bundles = results["risk_groups"]["cutoffs"], results["risk_groups"]["bundles"]
    with open_cdm(_site_url(spec, "DK")) as cdm:
        scores = score_patients(spec, results, cdm)
    bounds = [0.0, *cuts, 1.0]
    for r in scores.itertuples():
        assert bounds[r.risk_group - 1] <= r.risk < bounds[r.risk_group]
        assert r.bundle == bundles[r.risk_group - 1]
    assert set(scores["risk_group"]) == {1, 2, 3, 4}  # the study's quartiles: every group at a site
    assert list(scores["risk"]) == sorted(scores["risk"], reverse=True)  # highest risk first
    # a risk on a cut-off goes up, as the study's own groups count it
    assert risk_groups_of(np.array([cuts[0], np.nextafter(cuts[0], 0), 0.0, 1.0]), cuts).tolist() == [2, 1, 1, 4]


def test_reasons_are_the_largest_positive_contributions(study: tuple[PlpStudy, dict[str, Any], Path, Path]) -> None:
    spec, results, _, _ = study
    model = results["model"]
    ids = [int(c) for c in model["covariates"]]
    coef = np.asarray(model["coef"])
    name_of_coef = {v: k for k, v in model["named"].items()}
    maxima = {int(k): v for k, v in results["preprocessing"]["plan"]["max_values"].items()}
    with open_cdm(_site_url(spec, "SE")) as cdm:
        scores = score_patients(spec, results, cdm, top=3)
        own = study_dataset(cdm, _study_dataset(spec, results))
        # the reference: the average of every entry scored at the site (new patients included)
        mean = plp_dataset(cdm, scoring_params(spec, results))[[str(c) for c in ids]].to_numpy(dtype=float).mean(0)
    own = own.set_index(_key(own, "subject_id", "index_date"))
    checked = 0
    for r in scores.itertuples():
        x = own.loc[(r.person_id, r.cohort_start_date), [str(c) for c in ids]].to_numpy(dtype=float)
        contrib = np.where(x != 0, coef * (x - mean), 0.0)
        expected = sorted((j for j in range(len(ids)) if contrib[j] >= MIN_CONTRIBUTION), key=lambda j: -contrib[j])[:3]
        got = r.reason_details
        assert [d["covariate_id"] for d in got] == [ids[j] for j in expected]
        for d, j in zip(got, expected, strict=True):
            assert d["contribution"] == pytest.approx(contrib[j], abs=1e-12)
            assert d["name"] == name_of_coef[coef[j]]  # the report's name of the covariate
            if ids[j] % 1000 == 706:  # a measurement value: the patient's own value, not the normalised one
                assert d["value"] == pytest.approx(x[j] * maxima[ids[j]], rel=1e-9)
            elif ids[j] % 1000 in (102, 104, 702, 704, 802, 804):
                assert d["value"] is None
        assert r.reasons.count("(+") == len(got)
        checked += bool(got)
    assert checked > 100
    # age and sex as the study's demographic tables count them (index year minus year of birth)
    with open_cdm(_site_url(spec, "SE")) as cdm:
        people = cdm.query("SELECT person_id, year_of_birth, gender_concept_id FROM person").set_index("person_id")
    assert (scores["age"].to_numpy() == np.array([d.year for d in scores["cohort_start_date"]])
            - people["year_of_birth"].reindex(scores["person_id"]).to_numpy()).all()
    sexes = people["gender_concept_id"].reindex(scores["person_id"]).map({8507: "male", 8532: "female"})
    assert (scores["sex"].to_numpy() == sexes.fillna("unknown").to_numpy()).all()
    # measured against the average patient: what every patient has alike is nobody's reason (from 0, sodium
    # at about 138 would be everybody's)
    everyone = [c for c, m in zip(ids, mean, strict=True) if m and (own[str(c)].to_numpy() == m).all()]
    assert not {d["covariate_id"] for r in scores.itertuples() for d in r.reason_details} & set(everyone)
    assert any(d["value"] is not None for ds in scores["reason_details"] for d in ds)


def test_since_and_person_filter_the_list(study: tuple[PlpStudy, dict[str, Any], Path, Path]) -> None:
    spec, results, _, _ = study
    with open_cdm(_site_url(spec, "DK")) as cdm:
        every = score_patients(spec, results, cdm)
        recent = score_patients(spec, results, cdm, since=dt.date(2022, 1, 1))
        two = every["person_id"].iloc[[3, 10]].tolist()
        chosen = score_patients(spec, results, cdm, persons=[*two, 999_999_999])
        none = score_patients(spec, results, cdm, since=dt.date(2030, 1, 1))
    assert 0 < len(recent) < len(every)
    assert (recent["cohort_start_date"] >= dt.date(2022, 1, 1)).all()
    assert len(recent) == int((every["cohort_start_date"] >= dt.date(2022, 1, 1)).sum())
    merged = recent.merge(every, on=["person_id", "cohort_start_date"])
    assert np.array_equal(merged["risk_x"], merged["risk_y"])  # a filter changes nobody's risk
    assert sorted(chosen["person_id"]) == sorted(two)
    assert "person(s) 999999999 not scored" in chosen.attrs["message"]
    assert none.empty and "no cohort entry on or after 2030-01-01" in none.attrs["message"]


def test_new_patients_without_follow_up_are_scored(study: tuple[PlpStudy, dict[str, Any], Path, Path],
                                                   tmp_path: Path) -> None:
    """Three recently operated patients: their observation ends 30 days after surgery, so the study (which needs
    364 days at risk) leaves them out, but the MDT list has them."""
    spec, results, _, _ = study
    ds = _study_dataset(spec, results)
    with open_cdm(_site_url(spec, "DK")) as cdm:
        before = study_dataset(cdm, ds)
    alive = before[before["outcome"] == 0].iloc[:3]
    db = tmp_path / "dk.duckdb"  # a copy: the study's caches know the site's own file
    shutil.copy(spec.resolve(spec.synthetic.dir) / "dk.duckdb", db)  # type: ignore[union-attr]
    with open_cdm(duckdb_url(db)) as cdm:
        for person, start in zip(alive["subject_id"], pd.to_datetime(alive["index_date"]), strict=True):
            cdm.execute("UPDATE observation_period SET observation_period_end_date = :end WHERE person_id = :p "
                        "AND observation_period_start_date <= :start AND observation_period_end_date >= :start",
                        {"p": int(person), "start": start.date(), "end": (start + pd.Timedelta(days=30)).date()})
    new = set(alive["subject_id"].astype(int))
    with open_cdm(duckdb_url(db)) as cdm:
        after = study_dataset(cdm, ds)
        scores = score_patients(spec, results, cdm)
    assert len(after) == len(before) - 3 and not new & set(after["subject_id"].astype(int))
    assert new <= set(scores["person_id"]) and len(scores) == len(before)


def test_a_cdm_without_the_cohort_gives_an_empty_list_with_a_message(
        study: tuple[PlpStudy, dict[str, Any], Path, Path], tmp_path: Path) -> None:
    spec, results, _, _ = study
    with open_cdm(duckdb_url(tmp_path / "empty.duckdb"), create=True) as cdm:
        scores = score_patients(spec, results, cdm)
    assert scores.empty and list(scores.columns)[:7] == ["person_id", "cohort_start_date", "age", "sex", "risk",
                                                         "risk_group", "bundle"]
    assert "no entries of the study's target cohort" in scores.attrs["message"]


def test_results_of_another_kind_or_without_a_model_are_refused(
        study: tuple[PlpStudy, dict[str, Any], Path, Path]) -> None:
    spec, results, _, js = study
    with pytest.raises(ValueError, match=r"lacks risk_groups\.cutoffs"):
        check_results({**results, "risk_groups": {"bundles": ["a"]}}, spec, js)
    with pytest.raises(ValueError, match=r"lacks model\.coef"):
        check_results({**results, "model": {k: v for k, v in results["model"].items() if k != "coef"}}, spec, js)
    with pytest.raises(ValueError, match="kind is 'survival'"):
        check_results({**results, "kind": "survival"}, spec, js)
    with pytest.raises(ValueError, match=r"settings\.population differ"):
        changed = {**results["settings"], "population": {**results["settings"]["population"], "washout_period": 0}}
        check_results({**results, "settings": changed}, spec, js)


# ------------------------------------------------------------------------------------------ command line
def _score(*args: str) -> Result:
    return CliRunner().invoke(app, ["study", "score", *args], terminal_width=200)


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_cli_prints_the_list_and_writes_csv_and_html(study: tuple[PlpStudy, dict[str, Any], Path, Path],
                                                     tmp_path: Path) -> None:
    spec, results, path, js = study
    out, html = tmp_path / "scores.csv", tmp_path / "mdt.html"
    res = _score(str(path), "--results", str(js), "--site", "dk", "--since", "2022-01-01", "--out", str(out),
                 "--html", str(html))
    assert res.exit_code == 0, res.output
    with open_cdm(_site_url(spec, "DK")) as cdm:
        expected = score_patients(spec, results, cdm, since=dt.date(2022, 1, 1))
    rows = list(csv.DictReader(out.open()))
    assert [int(r["person_id"]) for r in rows] == expected["person_id"].tolist()
    assert [float(r["risk"]) for r in rows] == pytest.approx(expected["risk"].tolist(), rel=1e-12)
    assert json.loads(rows[0]["reason_details"]) == expected["reason_details"].iloc[0]
    top = expected.iloc[0]
    assert f"{100 * top['risk']:.1f} %" in res.stdout and str(top["person_id"]) in res.stdout
    counts = expected["risk_group"].value_counts()
    assert _flat(f"{len(expected)} patients: group 1 (standard pathway) {counts.get(1, 0)}") in _flat(res.stdout)
    text = html.read_text()
    assert "MDT list: crc_1y_mortality" in text and f">{top['person_id']}</td>" in text
    assert "Synthetic data" in text  # the demo's sites are synthetic: the page says so


@pytest.mark.parametrize("case", ["other study", "missing results", "bad date", "at without person", "no site",
                                  "unknown site", "not a CDM"])
def test_cli_bad_input_exits_2_with_a_clear_message(study: tuple[PlpStudy, dict[str, Any], Path, Path],
                                                    tmp_path: Path, case: str) -> None:
    spec, _, path, js = study
    args = [str(path), "--results", str(js), "--site", "DK"]
    if case == "other study":
        other = _yaml(tmp_path, spec.resolve(spec.synthetic.dir), name="other_study")  # type: ignore[union-attr]
        args[0] = str(other)
        expected = f"study is 'crc_1y_mortality', but {other} is study 'other_study'"
    elif case == "missing results":
        args[2] = str(tmp_path / "nope.json")
        expected = f"{tmp_path / 'nope.json'}: cannot read"
    elif case == "bad date":
        args += ["--since", "2022-13-01"]
        expected = "--since: '2022-13-01' is not a date"
    elif case == "at without person":
        args += ["--at", "2023-01-01"]
        expected = "--at scores the persons given with --person as of that date"
    elif case == "no site":
        args = args[:3]
        expected = "give --cdm URL (the site's CDM) or --site (one of the study's sites: DK, SE)"
    elif case == "unknown site":
        args[-1] = "FI"
        expected = "--site: unknown site(s) FI"
    else:
        import duckdb

        duckdb.connect(str(tmp_path / "other.duckdb")).execute("CREATE TABLE t (a INTEGER)").close()
        args[-2:] = ["--cdm", duckdb_url(tmp_path / "other.duckdb")]
        expected = f"{duckdb_url(tmp_path / 'other.duckdb')}: "
    res = _score(*args)
    assert res.exit_code == 2, res.output
    # long paths wrap anywhere at the console width: compared without white space
    assert "".join(expected.split()) in "".join(res.output.split())
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)


def test_scoring_as_of_a_date_equals_the_cohort_entry_on_that_date(
        study: tuple[PlpStudy, dict[str, Any], Path, Path]) -> None:
    """--at scores persons as if they entered the cohort that day (a planned operation): on the day of their
    recorded entry it gives exactly the list's risk and reasons."""
    from nordfed.studies.score import score_at

    spec, results, _, _ = study
    with open_cdm(_site_url(spec, "DK")) as cdm:
        listed = score_patients(spec, results, cdm)
        sample = listed.iloc[[0, len(listed) // 2, len(listed) - 1]]
        for r in sample.itertuples():
            [got] = score_at(spec, results, cdm, [r.person_id], r.cohort_start_date).itertuples()
            assert got.risk == pytest.approx(r.risk, rel=1e-12) and got.risk_group == r.risk_group
            assert [d["covariate_id"] for d in got.reason_details] == [d["covariate_id"] for d in r.reason_details]
        # a day earlier the same person may have less recorded, never another person's numbers
        first = sample.iloc[0]
        before = score_at(spec, results, cdm, [first.person_id, 10**9], first.cohort_start_date - dt.timedelta(1))
    assert list(before["person_id"]) == [first.person_id] and before["age"].iat[0] == first.age
    assert "person(s) 1000000000 not in this CDM's person table" in before.attrs["message"]
