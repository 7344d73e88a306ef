"""`nordfed study run` on a subset of a study's sites (`--sites`, in process and through a hub) and its progress
when stderr is not a terminal.

Sites: DK and SE with 3000 synthetic persons each (about 230 colorectal cancer resections, enough for the survival
study at a minimum cell count of 5) and FI with 100 persons (4 resections: FI refuses the study's attrition).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from nordfed.cli import app
from nordfed.studies.sites import SiteChoiceError, duckdb_url, open_sites, synthesise
from nordfed.studies.spec import Synthetic, parse_spec

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SYN = {"sites": ["DK", "SE"], "persons": 3000, "seed": 5}
STEP_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] (.+)$", re.M)


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nordfed.synth import write_site

    folder = tmp_path_factory.mktemp("sites")
    synthesise(Synthetic(**SYN, dir=str(folder)), folder)
    write_site("FI", 100, 1, duckdb_url(folder / "fi.duckdb"), notes=False)
    return folder


def _doc(**where: object) -> dict:
    """The survival study, small enough for these sites: two stage groups, minimum cell count 5."""
    doc = yaml.safe_load((STUDIES / "crc_survival_by_stage.yaml").read_text())
    doc["target"] = str(STUDIES / doc["target"])
    doc.pop("synthetic")
    doc["covariates"]["categorical"]["stage"]["levels"] = {"I-II": [2000000321, 2000000322],
                                                           "III-IV": [2000000323, 2000000324]}
    doc["disclosure"]["min_cell_count"] = 5
    return {**doc, **where}


def _write(tmp: Path, doc: dict) -> Path:
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _local_sites(site_dir: Path) -> dict[str, str]:
    return {s: duckdb_url(site_dir / f"{s.lower()}.duckdb") for s in ("DK", "FI", "SE")}


def _run(spec: Path, out: Path, *extra: str) -> Result:
    # CliRunner's stderr is no terminal: the run reports its steps as plain lines
    return CliRunner().invoke(app, ["study", "run", str(spec), "--out", str(out), *extra])


def _flat(text: str) -> str:
    return " ".join(text.split())  # error messages are wrapped at the console width


@pytest.fixture(scope="module")
def subset_run(site_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, Path]:
    tmp = tmp_path_factory.mktemp("subset")
    res = _run(_write(tmp, _doc(sites=_local_sites(site_dir))), tmp / "report.html", "--sites", "dk,SE")
    assert res.exit_code == 0, res.output
    return res, tmp / "report.html"


def test_a_refusing_site_is_named_with_the_rerun_without_it(site_dir: Path, tmp_path: Path) -> None:
    res = _run(_write(tmp_path, _doc(sites=_local_sites(site_dir))), tmp_path / "report.html")
    assert res.exit_code == 1
    assert "site FI refused: fewer target cohort entries than this node's minimum cell count (5)" in _flat(
        res.output)
    assert "to run the study without FI: --sites DK,SE" in _flat(res.output)
    assert STEP_LINE.findall(res.stderr) == ["cohort (1/5)", "attrition (2/5)"]
    assert not (tmp_path / "report.html").exists()


def test_sites_runs_the_study_on_those_sites_only_and_says_so(subset_run: tuple[Result, Path]) -> None:
    _, html = subset_run
    results = json.loads(html.with_suffix(".json").read_text())
    assert results["sites"] == ["DK", "SE"]  # the YAML's order, whatever the case typed
    assert results["transport"] == "in-process; only DK, SE (--sites), left out FI"
    assert results["sites_left_out"] == ["FI"]
    text = html.read_text()
    assert "2 sites: DK, SE" in text and "left out FI" in text
    assert '<div class="left-out"><dt>Left out</dt><dd>FI</dd></div>' in text  # in the header, not only the footer
    from nordfed.studies.report import survival_html

    figures = [b.payload.figure for sec in survival_html(results).sections for b in sec.blocks if b.kind == "figure"]
    assert "Kaplan-Meier: survival by stage" in [ax.get_title() for f in figures for ax in f.axes]  # not "group"
    # Cox rows as a reader names them; the JSON keeps the column names
    rows = {t.get_text() for f in figures for ax in f.axes if ax.get_title().startswith("Hazard")
            for t in ax.get_yticklabels()}
    assert {"age (per year)", "male vs female", "stage III-IV vs I-II"} <= rows
    assert "stage_III-IV" in results["cox"]["coefficients"]


def test_steps_are_plain_lines_when_stderr_is_not_a_terminal(subset_run: tuple[Result, Path]) -> None:
    res, _ = subset_run
    lines = STEP_LINE.findall(res.stderr)
    assert lines[:5] == ["cohort (1/5)", "attrition (2/5)", "kaplan-meier (3/5)", "cox (4/5)", "report (5/5)"]
    assert re.fullmatch(r"done in \d+ s", lines[5]) and len(lines) == 6


def test_a_terminal_keeps_the_progress_bar(site_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich then treats stderr as a terminal
    monkeypatch.setenv("TERM", "xterm")
    res = _run(_write(tmp_path, _doc(sites=_local_sites(site_dir))), tmp_path / "report.html")
    assert res.exit_code == 1 and "site FI refused" in _flat(res.output)
    assert STEP_LINE.findall(res.stderr) == []


def test_unknown_sites_are_an_error_naming_the_known_ones(site_dir: Path, tmp_path: Path) -> None:
    spec = _write(tmp_path, _doc(sites=_local_sites(site_dir)))
    for given, unknown in (("DK,NO,XX", "NO, XX"), (",", None)):
        res = _run(spec, tmp_path / "report.html", "--sites", given)
        assert res.exit_code == 2, res.output
        what = f"unknown site(s) {unknown}" if unknown else "no site named"
        assert f"--sites: {what}; the study's sites (sites: of {spec}): DK, FI, SE" in _flat(res.output)
    assert STEP_LINE.findall(res.stderr) == []  # refused before the first step


def test_synthetic_sites_left_out_are_not_made(site_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "synthetic"
    folder.mkdir()
    for f in site_dir.glob("[ds][ke].*"):  # DK and SE as made: reused
        shutil.copy(f, folder / f.name)
    spec = parse_spec(_doc(synthetic={**SYN, "sites": ["DK", "NO", "SE"], "dir": str(folder)}), tmp_path / "s.yaml")
    made: list[str] = []
    with open_sites(spec, progress=made.append, only=["SE", "DK"]) as sites:
        assert sites.federation.sites == ["DK", "SE"]
        assert sites.transport == "in-process; only DK, SE (--sites), left out NO"
    assert made == [] and not list(folder.glob("no.*"))
    with pytest.raises(SiteChoiceError, match=r"unknown site\(s\) FI; the study's sites \(synthetic\.sites of "
                                              r".*s\.yaml\): DK, NO, SE"):
        open_sites(spec, only=["DK", "FI"])


@pytest.mark.network
def test_sites_through_a_hub_leaves_a_node_that_never_started_out(
        site_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nordfed.node.localnet import LocalNetwork

    urls: dict[str, str | None] = {}
    for s in ("DK", "SE", "FI"):  # a node holds its DuckDB file open: the nodes get copies
        shutil.copy(site_dir / f"{s.lower()}.duckdb", tmp_path / f"{s.lower()}.duckdb")
        urls[s] = duckdb_url(tmp_path / f"{s.lower()}.duckdb")

    def policy(site: str, pol: dict) -> dict:
        return {**pol, "exact_event_times": True, "min_cell_count": 5, "allow_min_cell_count_below_default": True}

    net = LocalNetwork(tmp_path / "net", urls, policy_hook=policy, poll_timeout_s=5)
    try:
        net.spawn_hub()
        net.wait_hub()
        net.provision()
        for s in ("DK", "SE"):  # FI is registered but never starts: it publishes no keys
            net.start_node(s)
        net.wait_nodes_online(names=["DK", "SE"])
        net.client.save_state()
        monkeypatch.setenv("NORDFED_HOME", str(net.client.home))
        spec = _write(tmp_path, _doc())
        hub = ["--hub", net.hub_url, "--collaboration", str(net.collaboration_id)]

        res = _run(spec, tmp_path / "all.html", *hub)
        assert res.exit_code == 1
        assert ("node FI has not published keys yet (has it ever started?); to run the study without FI: "
                "--sites DK,SE") in _flat(res.output)
        res = _run(spec, tmp_path / "all.html", *hub, "--sites", "DK,NO")
        assert res.exit_code == 2 and "unknown site(s) NO;" in res.output
        assert f"the nodes of collaboration {net.collaboration_id}: DK, SE, FI" in _flat(res.output)

        res = _run(spec, tmp_path / "report.html", *hub, "--sites", "DK,SE")
        assert res.exit_code == 0, res.output
        results = json.loads((tmp_path / "report.json").read_text())
        assert results["sites"] == ["DK", "SE"] and results["transport"].endswith("left out FI")
        tasks = net.client.tasks(net.collaboration_id)
        assert tasks and all({r["node_name"] for r in t["runs"]} <= {"DK", "SE"} for t in tasks)
    finally:
        net.stop()
