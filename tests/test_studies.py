"""The ready-made studies end to end on small synthetic sites (in process).

Sites: 3 x 6000 synthetic persons (about 1,300 CRC resections, 110 one-year deaths). The full acceptance check
(AUROC within 0.02 of the generating model, main risk factors recovered) needs more rows: bench/crc_study.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from lifelines import CoxPHFitter, KaplanMeierFitter
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.fed.km import fit_km
from nordfed.studies import run_study
from nordfed.studies.report import PLP_SECTION_TITLES
from nordfed.studies.sites import open_sites, synthesise
from nordfed.studies.spec import Synthetic, load_spec
from nordfed.studies.survival import cox_columns, survival_dataset_spec

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SYN = {"sites": ["DK", "NO", "SE"], "persons": 6000, "seed": 5}


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("crc_sites")
    synthesise(Synthetic(**SYN, dir=str(folder)), folder)
    return folder


def _study_yaml(tmp: Path, name: str, site_dir: Path, **changes: object) -> Path:
    doc = yaml.safe_load((STUDIES / name).read_text())
    doc["target"] = str(STUDIES / doc["target"])
    doc["synthetic"] = {**SYN, "dir": str(site_dir)}
    for key, value in changes.items():
        doc[key] = value
    path = tmp / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def plp_run(site_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, Path]:
    tmp = tmp_path_factory.mktemp("plp")
    path = _study_yaml(tmp, "crc_1y_mortality.yaml", site_dir)
    steps: list[str] = []
    results, html, js = run_study(path, tmp / "out" / "crc.html", step=steps.append)
    assert steps[:2] == ["cohort", "attrition"] and steps[-1] == "report"
    return results, html, js


@pytest.fixture(scope="module")
def plp_apparent(site_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The study without a test part: at this scale the test part has ~30 events, too few to compare AUROCs
    (bench/crc_study.py checks the held-out persons at scale)."""
    tmp = tmp_path_factory.mktemp("plp-apparent")
    doc = yaml.safe_load((STUDIES / "crc_1y_mortality.yaml").read_text())
    path = _study_yaml(tmp, "crc_1y_mortality.yaml", site_dir, evaluation={**doc["evaluation"], "test_fraction": 0})
    return run_study(path, tmp / "out" / "crc.html")[0]


def test_synthetic_sites_are_reused_when_settings_match(site_dir: Path) -> None:
    dbs = sorted(site_dir.glob("*.duckdb"))
    assert [p.name for p in dbs] == ["dk.duckdb", "no.duckdb", "se.duckdb"]
    before = {p: p.stat().st_mtime_ns for p in dbs}
    msgs: list[str] = []
    synthesise(Synthetic(**SYN, dir=str(site_dir)), site_dir, msgs.append)
    assert msgs == [] and {p: p.stat().st_mtime_ns for p in dbs} == before
    assert not [p for p in site_dir.iterdir() if p.name.startswith(".")]  # no scratch left behind


def test_plp_study_runs_end_to_end_and_writes_the_report(plp_run: tuple[dict, Path, Path]) -> None:
    results, html, js = plp_run
    text = html.read_text()
    for title in PLP_SECTION_TITLES:
        assert f">{title}<" in text.replace("&amp;", "&"), title
    assert json.loads(js.read_text())["internal"]["auroc"] == pytest.approx(results["internal"]["auroc"])
    pooled = results["attrition"]["pooled"]
    # PatientLevelPrediction's split: the model learns on 75 %, internal validation is on the other 25 %
    assert pooled[-1]["persons"] == results["model"]["n"] + results["internal"]["n"]
    assert results["internal"]["on"] == "test part"
    assert abs(results["internal"]["n"] - 0.25 * pooled[-1]["persons"]) <= 6  # rounded per site and class
    assert "On the test part: 25% of each site&#39;s persons" in text
    from nordfed.reports.layouts import NORMALISED_NOTE

    assert results["settings"]["preprocessing"]["normalize"] and NORMALISED_NOTE[:60] in text  # odds ratios' scale
    assert pooled[0]["persons"] >= pooled[-1]["persons"] > 600
    assert set(results["external"]) == {"DK", "NO", "SE"}
    assert results["model"]["non_zero"] >= 3
    groups = results["risk_groups"]["pooled"]
    assert [g["bundle"] for g in groups][-1] == "multimodal prehabilitation + MDT review"
    assert sum(g["n"] or 0 for g in groups) <= results["internal"]["n"]  # the test part's persons


def test_the_report_states_the_minimum_cell_count_the_sites_applied(plp_run: tuple[dict, Path, Path]) -> None:
    from nordfed.studies.report import plp_html

    results = plp_run[0]
    m = results["settings"]["disclosure"]["min_cell_count"]
    assert results["min_cell_count"] == {"DK": m, "NO": m, "SE": m}  # each site says what it applied
    # through a hub SE's node.yaml raised it: the report says so, not the YAML's value
    raised = {**results, "min_cell_count": {"DK": m, "NO": m, "SE": m + 10}}
    text = plp_html(raised).render()
    assert f"&lt;{m + 10}" in text and "minimum cell count by site" in text and f"SE {m + 10}" in text


def test_risk_groups_order_the_observed_mortality(plp_apparent: dict) -> None:
    # on every person: the test part alone leaves too few deaths per group and site at this scale
    groups = plp_apparent["risk_groups"]["pooled"]
    overall = plp_apparent["internal"]["n_events"] / plp_apparent["internal"]["n"]
    assert groups[-1]["observed_rate"] > 2 * overall  # the top risk quartile has the highest mortality
    assert all(g["observed_rate"] is None or g["observed_rate"] < overall for g in groups[:2])


def test_plp_recovers_the_ground_truth_at_small_scale(plp_apparent: dict) -> None:
    """Smaller version of the acceptance check (the full one: bench/crc_study.py)."""
    gt = plp_apparent["ground_truth"]
    fitted, truth = gt["auroc_fitted"]["pooled"], gt["auroc_truth"]["pooled"]
    assert fitted["n"] == truth["n"] == plp_apparent["internal"]["n"]  # the same persons
    assert plp_apparent["internal"]["on"] == "training rows"
    # ~110 events: SE of an AUROC difference between two correlated scores ~0.02; allow 0.05
    assert abs(gt["auroc_difference"]) < 0.05
    by_name = {f["name"]: f for f in gt["factors"]}
    # the index visit's type through the visit concept counts, the smoking status through the observations
    assert 262 * 1000 + 923 in by_name["emergency_surgery"]["covariates"]
    assert 2000000400 * 1000 + 802 in by_name["current_smoker"]["covariates"]
    assert by_name["emergency_surgery"]["status"] != "not represented"
    main = [by_name[n] for n in gt["main_factors"]]
    assert len(main) >= 3
    assert not [f["name"] for f in main if f["status"] == "wrong sign"]
    assert len(gt["main_recovered"]) >= len(main) / 2


def test_survival_study_km_equals_fit_km_and_lifelines(site_dir: Path, tmp_path: Path) -> None:
    path = _study_yaml(tmp_path, "crc_survival_by_stage.yaml", site_dir)
    doc = yaml.safe_load(path.read_text())
    doc["covariates"]["categorical"]["stage"]["levels"] = {"I-II": [2000000321, 2000000322],
                                                           "III-IV": [2000000323, 2000000324]}
    doc["covariates"]["categorical"]["stage"]["reference"] = "I-II"
    doc["disclosure"]["min_cell_count"] = 5
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    results, html, _ = run_study(path, tmp_path / "surv.html")
    assert "Survival by group" in html.read_text() and "Cox model" in html.read_text()
    spec = load_spec(path)
    with open_sites(spec) as sites:
        fed = sites.federation
        ds = survival_dataset_spec(spec)
        direct = fit_km(fed, duration="duration", event="event", group="stage", dataset=ds)
        frames = [fed._sites[s].frame(ds) for s in fed.sites]
    for g, curve in direct.by_group.items():
        assert results["km"]["by_group"][g]["survival"] == curve.survival
        assert results["km"]["by_group"][g]["times"] == curve.times
    pooled = pd.concat(frames, ignore_index=True)
    for g, curve in direct.by_group.items():
        rows = pooled[pooled["stage"] == g]
        kmf = KaplanMeierFitter().fit(rows["duration"], rows["event"])
        ref = kmf.survival_function_.iloc[:, 0]
        np.testing.assert_allclose(curve.survival, ref.loc[curve.times].to_numpy(), atol=1e-12)
    assert results["km"]["logrank"]["p_value"] < 0.05  # stage III-IV dies sooner in the generating model
    # the pooled Cox model equals lifelines on the pooled complete cases
    cols = cox_columns(spec)
    cc = pooled[["duration", "event", *cols]].dropna()
    ref_cox = CoxPHFitter().fit(cc, "duration", "event")
    assert results["cox"]["n"] == len(cc)
    for c in cols:
        assert results["cox"]["coefficients"][c] == pytest.approx(ref_cox.params_[c], abs=1e-5)
    assert results["cox"]["coefficients"]["stage_III-IV"] > 0


def test_bad_study_yaml_gives_clear_errors(tmp_path: Path) -> None:
    good = yaml.safe_load((STUDIES / "crc_1y_mortality.yaml").read_text())
    good["target"] = str(STUDIES / good["target"])
    cases = {
        "alpha": ({"model": {"type": "lasso", "alpha": 1.5}}, "model.alpha"),
        "typo": ({"modle": {"type": "lasso"}}, "modle: unknown field"),
        "type": ({"model": {"type": "forest"}}, "model.type"),
        "norway": ({"synthetic": {"sites": ["DK", False], "persons": 1000}}, "YAML turns a bare NO"),
        "population": ({"population": {"riskWindowStart": 10, "riskWindowEnd": 5}}, "riskWindowEnd (5)"),
        "bundles": ({"risk_groups": {"quantiles": [0.5], "bundles": ["a"]}}, "2 groups but 1 bundles"),
        "covariates": ({"covariates": {"conditions": True}}, "unknown covariate setting(s) conditions"),
        "cohort": ({"target": "no_such_cohort.json"}, "target: cohort file no_such_cohort.json not found"),
    }
    for name, (change, expected) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**good, **change}))
        with pytest.raises(ValueError) as info:
            load_spec(path)
        assert str(path) in str(info.value) and expected in str(info.value), (name, str(info.value))
    surv = yaml.safe_load((STUDIES / "crc_survival_by_stage.yaml").read_text())
    surv["target"] = str(STUDIES / surv["target"])
    for name, (change, expected) in {
        "km_by": ({"analysis": {**surv["analysis"], "km_by": "asa_class"}}, "km_by 'asa_class' is not a categorical"),
        "exact": ({"disclosure": {"min_cell_count": 10, "exact_event_times": False}},
                  "needs disclosure.exact_event_times: true"),
    }.items():
        path = tmp_path / f"surv_{name}.yaml"
        path.write_text(yaml.safe_dump({**surv, **change}))
        with pytest.raises(ValueError, match=expected):
            load_spec(path)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nmodel: [unclosed\n")
    runner = CliRunner()
    res = runner.invoke(app, ["study", "validate-spec", str(broken), str(tmp_path / "alpha.yaml")])
    assert res.exit_code == 1
    assert "broken.yaml: line" in res.output and "model.alpha" in res.output
    res = runner.invoke(app, ["study", "run", str(tmp_path / "typo.yaml"), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 2 and "modle" in res.output
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.json").exists()
    ok = runner.invoke(app, ["study", "validate-spec", *map(str, sorted(STUDIES.glob("*.yaml")))])
    assert ok.exit_code == 0, ok.output


def test_site_paths_are_relative_to_the_yaml_and_must_exist(site_dir: Path, tmp_path: Path) -> None:
    from nordfed.studies.spec import parse_spec

    doc = yaml.safe_load((STUDIES / "crc_survival_by_stage.yaml").read_text())
    doc.pop("synthetic")
    (tmp_path / "study" / "data").mkdir(parents=True)
    shutil.copy(site_dir / "dk.duckdb", tmp_path / "study" / "data" / "dk.duckdb")
    # run from elsewhere: the study's folder decides, as it does for target: and synthetic.dir
    spec = parse_spec({**doc, "sites": {"DK": "duckdb:///data/dk.duckdb"}}, tmp_path / "study" / "s.yaml")
    with open_sites(spec) as sites:
        assert sites.federation.sites == ["DK"]
    # a mistyped path is an error naming the site, not a new empty CDM
    spec = parse_spec({**doc, "sites": {"DK": "duckdb:///data/dkk.duckdb"}}, tmp_path / "study" / "s.yaml")
    with pytest.raises(ValueError, match=r"sites\.DK: cannot open .*no CDM at .*dkk\.duckdb"):
        open_sites(spec)
    assert not (tmp_path / "study" / "data" / "dkk.duckdb").exists()
    # a folder where the file should be: the CLI says which site and exits 2, as for any bad field of the YAML
    (tmp_path / "study" / "data" / "dir.duckdb").mkdir()
    (tmp_path / "study" / "s.yaml").write_text(yaml.safe_dump(
        {**doc, "target": str(STUDIES / doc["target"]), "sites": {"DK": "duckdb:///data/dir.duckdb"}}))
    bad = CliRunner().invoke(app, ["study", "run", str(tmp_path / "study" / "s.yaml"), "--out",
                                   str(tmp_path / "r.html")])
    assert bad.exit_code == 2, bad.output
    assert "sites.DK: cannot open" in " ".join(bad.output.split()) and "Traceback" not in bad.output
    # a bare path is not a URL: the YAML check says so (it was a CDMError traceback when the study opened it)
    (tmp_path / "study" / "s.yaml").write_text(yaml.safe_dump(
        {**doc, "target": str(STUDIES / doc["target"]), "sites": {"DK": "data/dk.duckdb"}}))
    for args in (["study", "run", str(tmp_path / "study" / "s.yaml"), "--out", str(tmp_path / "r.html")],
                 ["study", "validate-spec", str(tmp_path / "study" / "s.yaml")]):
        bad = CliRunner().invoke(app, args)
        assert bad.exit_code in (1, 2) and "Traceback" not in bad.output, bad.output
        assert "DK: unsupported CDM URL 'data/dk.duckdb'" in " ".join(bad.output.split())


def test_survival_study_through_a_hub_equals_in_process(site_dir: Path, tmp_path: Path) -> None:
    from nordfed.client.federation import HubFederation
    from nordfed.node.localnet import LocalNetwork
    from nordfed.studies.spec import parse_spec
    from nordfed.studies.survival import run_survival

    for f in site_dir.glob("*.duckdb"):  # a node holds its DuckDB file open: the hub's nodes get copies
        shutil.copy(f, tmp_path / f.name)
    doc = yaml.safe_load((STUDIES / "crc_survival_by_stage.yaml").read_text())
    doc.pop("synthetic")
    doc["target"] = str(STUDIES / doc["target"])
    doc["covariates"]["categorical"]["stage"]["levels"] = {"I-II": [2000000321, 2000000322],
                                                           "III-IV": [2000000323, 2000000324]}
    doc["covariates"]["categorical"]["stage"]["reference"] = "I-II"
    doc["disclosure"]["min_cell_count"] = 5
    local_doc = {**doc, "sites": {s: f"duckdb:///{site_dir / f'{s.lower()}.duckdb'}" for s in ("DK", "NO", "SE")}}
    spec = parse_spec(local_doc, STUDIES / "x.yaml")
    with open_sites(spec) as sites:
        local = run_survival(spec, sites.federation)

    def policy(site: str, pol: dict) -> dict:
        return {**pol, "exact_event_times": True, "min_cell_count": 5, "allow_min_cell_count_below_default": True}

    urls = {s: f"duckdb:///{tmp_path / f'{s.lower()}.duckdb'}" for s in ("DK", "NO", "SE")}
    with LocalNetwork(tmp_path / "net", urls, policy_hook=policy, poll_timeout_s=5) as net:
        remote = run_survival(spec, HubFederation(net.client, net.collaboration_id, timeout=120))
    assert remote["km"]["by_group"] == local["km"]["by_group"]
    assert remote["attrition"] == local["attrition"]
    for c, b in local["cox"]["coefficients"].items():
        assert remote["cox"]["coefficients"][c] == pytest.approx(b, abs=1e-10)
