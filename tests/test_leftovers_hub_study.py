"""`nordfed study run --hub --sites`: the hub study covers the organizations of the chosen nodes only.

A real hub (SQLite) with collaboration A, B, C, D: nodes node_a, node_b, node_c (one per organization A, B, C, keys
published) and organization D without a node. No task runs: the hub study is made when the sites are opened,
before the study's first step.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.client.api import Client
from nordfed.studies.sites import open_sites
from nordfed.studies.spec import PlpStudy, SurvivalStudy, parse_spec
from test_hub_support import PASSWORD, Network, b64, served_network

pytestmark = pytest.mark.network
STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with served_network("sqlite", tmp_path_factory.mktemp("hub")) as network:
        d = network.root.call("POST", "/organizations", 201, json={"name": "Registry D", "country": "DK"})["id"]
        network.org["D"] = d
        network.root.call("PATCH", f"/collaborations/{network.collab}",
                          json={"add_organization_ids": [network.org["C"], d]})
        network.new_node("node_c", "C")
        for node in network.nodes.values():
            node.call("PUT", "/nodes/me/keys", json={"encryption_key": b64(n=32), "signing_key": b64(n=32)})
        yield network


@pytest.fixture
def client(net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Client:
    """researcher_a (organization A) logged in as `nordfed login` leaves it."""
    c = Client(net.url, home=tmp_path / "home").login("researcher_a", PASSWORD)
    c.save_state()
    monkeypatch.setenv("NORDFED_HOME", str(c.home))
    return c


def _spec(tmp_path: Path, name: str) -> tuple[Path, PlpStudy | SurvivalStudy]:
    doc = yaml.safe_load((STUDIES / "crc_survival_by_stage.yaml").read_text())
    doc["target"] = str(STUDIES / doc["target"])
    doc["name"] = name
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path, parse_spec(doc, path)


def _study(client: Client, net: Network, name: str) -> dict:
    [found] = [s for s in client.studies(net.collab) if s["name"] == name]
    return found


def test_sites_make_a_study_of_their_organizations_only(net: Network, client: Client, tmp_path: Path) -> None:
    _, spec = _spec(tmp_path, "subset")
    with open_sites(spec, net.url, net.collab, only=["node_b", "node_a"]) as sites:
        assert sites.federation.sites == ["node_a", "node_b"]
        assert sites.transport.endswith("study subset on node_a,node_b (id "
                                        f"{_study(client, net, 'subset on node_a,node_b')['id']}); only node_a, "
                                        "node_b (--sites), left out node_c")
    made = _study(client, net, "subset on node_a,node_b")
    assert made["organization_ids"] == sorted([net.org["A"], net.org["B"]])  # not C's, not D's
    assert "subset" not in [s["name"] for s in client.studies(net.collab)]  # the full run's name stays free

    with open_sites(spec, net.url, net.collab, only=["node_a", "node_b"]):  # reused
        pass
    with open_sites(spec, net.url, net.collab) as sites:  # all nodes: a study of its own, under the YAML's name
        assert sites.federation.sites == ["node_a", "node_b", "node_c"]
    assert _study(client, net, "subset")["organization_ids"] == sorted(net.org[o] for o in "ABC")
    assert [s["name"] for s in client.studies(net.collab)].count("subset on node_a,node_b") == 1


def test_a_study_of_that_name_for_other_organizations_is_refused(
        net: Network, client: Client, tmp_path: Path) -> None:
    path, spec = _spec(tmp_path, "other")
    made = client.create_study(net.collab, "other on node_a", organization_ids=[net.org["A"], net.org["B"]])
    res = CliRunner().invoke(app, ["study", "run", str(path), "--hub", net.url, "--collaboration", str(net.collab),
                                   "--sites", "node_a", "--out", str(tmp_path / "report.html")],
                             env={"COLUMNS": "400"})
    assert res.exit_code == 1, res.output
    assert (f"error: hub study 'other on node_a' (id {made['id']}) of collaboration {net.collab} is for other "
            f"organizations than this run's sites: it has node_b's (organization {net.org['B']}), which the run "
            "leaves out; a hub study is not reused for other organizations: rename the study (name: in its YAML), "
            "or have the study's creator or a collaboration admin change its organizations") in res.output
    assert client.tasks(study_id=made["id"]) == [] and client.tasks(net.collab) == []
    assert client.study(made["id"])["organization_ids"] == sorted([net.org["A"], net.org["B"]])  # unchanged

    client.create_study(net.collab, "other on node_b,node_c", organization_ids=[net.org["A"], net.org["B"]])
    with pytest.raises(ValueError, match=rf"it lacks node_c's \(organization {net.org['C']}\) and it has node_a's "
                                         rf"\(organization {net.org['A']}\), which the run leaves out;"):
        open_sites(spec, net.url, net.collab, only=["node_b", "node_c"])


def test_organizations_without_a_node_do_not_make_a_study_differ(
        net: Network, client: Client, tmp_path: Path) -> None:
    _, spec = _spec(tmp_path, "everyone")
    made = client.create_study(net.collab, "everyone")  # all of the collaboration's organizations, D's too
    assert net.org["D"] in made["organization_ids"]
    with open_sites(spec, net.url, net.collab) as sites:
        assert f"study everyone (id {made['id']})" in sites.transport


def test_a_node_without_keys_fails_the_run_before_a_study_is_made(
        net: Network, client: Client, tmp_path: Path) -> None:
    _, spec = _spec(tmp_path, "keyless")
    net.new_node("node_d", "D")  # registered, never started: no keys (the last test: D has a node from now on)
    with pytest.raises(ValueError, match="node node_d has not published keys yet"):
        open_sites(spec, net.url, net.collab, only=["node_a", "node_d"])
    assert not [s for s in client.studies(net.collab) if s["name"].startswith("keyless")]


def test_a_subset_of_many_sites_gets_a_hub_study_name_the_hub_takes():
    from nordfed.studies.sites import HUB_NAME_MAX, hub_study_name

    known = [f"hospital_{i:03d}" for i in range(40)]
    chosen = known[:30]
    name = hub_study_name("crc_1y_mortality", chosen, known)
    assert len(name) <= HUB_NAME_MAX and name.startswith("crc_1y_mortality on 30 sites ")
    assert hub_study_name("crc_1y_mortality", chosen, known) == name  # the same sites, the same study
    assert hub_study_name("crc_1y_mortality", known[:29], known) != name
    assert hub_study_name("crc", ["DK", "SE"], ["DK", "SE", "FI"]) == "crc on DK,SE"
