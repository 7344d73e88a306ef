"""Hub studies (a subset of a collaboration's organizations that tasks belong to) on SQLite and PostgreSQL: who may
create, read, change and delete them, tasks tagged with a study, the client SDK and the `nordfed study` commands,
`nordfed logout`, and a federated run whose every task is tagged (HubFederation and `nordfed study run --hub`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.client.api import Client, HubError
from test_hub_support import PASSWORD, Api, Network, b64, served_network

pytestmark = pytest.mark.network
STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def net(request, tmp_path_factory) -> Network:
    with served_network(request.param, tmp_path_factory.mktemp("hub")) as network:
        yield network


def study(net: Network, api: Api, name: str, expect: int = 201, **extra) -> dict:
    return api.call("POST", "/studies", expect, json={"collaboration_id": net.collab, "name": name, **extra})


def test_who_may_create_studies(net):
    everyone = study(net, net.researcher_a, "everyone", description="all of crc-study")
    assert everyone["organization_ids"] == sorted([net.org["A"], net.org["B"]])
    assert everyone["created_by"] == net.researcher_a.id and everyone["description"] == "all of crc-study"
    only_b = study(net, net.researcher_b, "only-b", organization_ids=[net.org["B"]])
    assert only_b["organization_ids"] == [net.org["B"]]
    assert "already has a study" in study(net, net.researcher_b, "everyone", expect=409)["detail"]
    outside = study(net, net.researcher_a, "outside", expect=400, organization_ids=[net.org["A"], net.org["C"]])
    assert "not members" in outside["detail"]
    study(net, net.researcher_a, "unknown", expect=400, organization_ids=[999_999])
    for api in (net.viewer_a, net.researcher_c, net.admin_a):
        study(net, api, "refused", expect=403)
    assert (
        net.nodes["node_a"].request("POST", "/studies", json={"collaboration_id": net.collab, "name": "x"}).status_code
        == 403
    )
    net.root.call(
        "POST",
        "/users",
        201,
        json={
            "username": "coord_s",
            "password": PASSWORD,
            "organization_id": net.org["C"],
            "roles": ["collaboration_admin"],
        },
    )
    study(net, net.anon.login("coord_s"), "by-a-coordinator")
    other = net.root.call("POST", "/collaborations", 201, json={"name": "other-s", "organization_ids": [net.org["C"]]})
    response = net.researcher_a.request("POST", "/studies", json={"collaboration_id": other["id"], "name": "x"})
    assert response.status_code == 403
    assert (
        net.researcher_a.request("POST", "/studies", json={"collaboration_id": 999_999, "name": "x"}).status_code == 404
    )


def test_tasks_of_a_study(net):
    only_b = study(net, net.researcher_b, "tasks-b", organization_ids=[net.org["B"]])
    node_a, node_b = net.nodes["node_a"], net.nodes["node_b"]
    tagged = net.task(net.researcher_b, [node_b], study_id=only_b["id"])
    assert tagged["study_id"] == only_b["id"]
    assert net.researcher_a.call("GET", f"/tasks/{tagged['id']}")["study_id"] == only_b["id"]
    response = net.task(net.researcher_b, [node_a, node_b], expect=400, study_id=only_b["id"])
    assert f"nodes [{node_a.id}]" in response["detail"] and "outside study" in response["detail"]
    assert "not found" in net.task(net.researcher_b, [node_b], expect=404, study_id=999_999)["detail"]
    other = net.root.call(
        "POST", "/collaborations", 201, json={"name": "elsewhere-s", "organization_ids": [net.org["B"]]}
    )
    foreign = net.root.call("POST", "/studies", 201, json={"collaboration_id": other["id"], "name": "foreign"})
    assert (
        "belongs to collaboration" in net.task(net.researcher_b, [node_b], expect=400, study_id=foreign["id"])["detail"]
    )
    untagged = net.task(net.researcher_b, [node_b])
    assert untagged["study_id"] is None

    listed = net.viewer_a.call("GET", "/tasks", params={"study_id": only_b["id"]})
    assert [t["id"] for t in listed] == [tagged["id"]]
    run = node_b.call("GET", "/runs/next", params={"timeout": 5})
    while run["task_id"] != tagged["id"]:  # earlier tests' tasks for node_b come first
        node_b.call("PATCH", f"/runs/{run['run_id']}", json={"status": "completed", "result": b64()})
        run = node_b.call("GET", "/runs/next", params={"timeout": 5})
    node_b.call("PATCH", f"/runs/{run['run_id']}", json={"status": "completed", "result": b64()})
    net.task(net.researcher_b, [node_b], study_id=only_b["id"])
    detail = net.viewer_a.call("GET", f"/studies/{only_b['id']}")
    assert detail["task_count"] == 2 and detail["tasks_by_status"] == {"completed": 1, "pending": 1}
    response = net.researcher_b.request("DELETE", f"/studies/{only_b['id']}")
    assert response.status_code == 409 and "has tasks" in response.json()["detail"]


def test_reading_studies_follows_the_collaboration(net):
    mine = study(net, net.researcher_a, "readable")
    for api in (net.viewer_a, net.researcher_b, net.nodes["node_a"], net.root):
        assert mine["id"] in [s["id"] for s in api.call("GET", "/studies")]
        assert api.call("GET", f"/studies/{mine['id']}")["name"] == "readable"
    assert net.researcher_c.call("GET", "/studies") == []
    assert net.researcher_c.request("GET", f"/studies/{mine['id']}").status_code == 403
    assert net.root.request("GET", "/studies/999999").status_code == 404
    filtered = net.researcher_a.call("GET", "/studies", params={"collaboration_id": net.collab})
    assert {s["collaboration_id"] for s in filtered} == {net.collab}


def test_changing_and_deleting_studies(net):
    mine = study(net, net.researcher_a, "editable")
    path = f"/studies/{mine['id']}"
    assert net.researcher_b.request("PATCH", path, json={"name": "hijacked"}).status_code == 403
    assert net.viewer_a.request("DELETE", path).status_code == 403
    changed = net.researcher_a.call(
        "PATCH", path, json={"name": "edited", "description": "only A", "organization_ids": [net.org["A"]]}
    )
    assert (changed["name"], changed["description"], changed["organization_ids"]) == (
        "edited",
        "only A",
        [net.org["A"]],
    )
    assert net.researcher_a.request("PATCH", path, json={"organization_ids": [net.org["C"]]}).status_code == 400
    study(net, net.researcher_a, "taken")
    assert net.researcher_a.request("PATCH", path, json={"name": "taken"}).status_code == 409
    assert net.researcher_a.request("PATCH", path, json={"nmae": "typo"}).status_code == 422
    assert net.root.call("PATCH", path, json={"description": "by root"})["description"] == "by root"
    assert net.researcher_a.call("DELETE", path)["id"] == mine["id"]
    assert net.researcher_a.request("GET", path).status_code == 404


def test_client_sdk_and_study_commands(net, tmp_path, monkeypatch):
    home = tmp_path / "home"
    client = Client(net.url, home=home).login("researcher_a", PASSWORD)
    client.save_state()
    made = client.ensure_study(net.collab, "sdk-study", "made by the SDK")
    assert client.ensure_study(net.collab, "sdk-study")["id"] == made["id"]  # reused by name
    assert made["id"] in [s["id"] for s in client.studies(net.collab)]
    assert client.update_study(made["id"], description="changed")["description"] == "changed"
    assert client.study(made["id"])["task_count"] == 0
    assert client.tasks(study_id=made["id"]) == []

    monkeypatch.setenv("NORDFED_HOME", str(home))
    runner = CliRunner()
    created = runner.invoke(
        app, ["study", "create", "-c", str(net.collab), "--name", "cli-study", "--organization", str(net.org["A"])]
    )
    assert created.exit_code == 0, created.output
    assert "cli-study" in created.output and "created" in created.output
    listed = runner.invoke(app, ["study", "list", "-c", str(net.collab), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = {s["name"]: s for s in json.loads(listed.output)}
    assert rows["cli-study"]["organization_ids"] == [net.org["A"]] and "sdk-study" in rows
    shown = runner.invoke(app, ["study", "show", str(rows["cli-study"]["id"])])
    assert shown.exit_code == 0 and "tasks: 0" in shown.output, shown.output
    missing = runner.invoke(app, ["study", "show", "999999"])
    assert missing.exit_code == 1 and "not found" in missing.output
    duplicate = runner.invoke(app, ["study", "create", "-c", str(net.collab), "--name", "cli-study"])
    assert duplicate.exit_code == 1 and "already has a study" in duplicate.output

    token = client.token
    out = runner.invoke(app, ["logout"])
    assert out.exit_code == 0 and "logged out" in out.output, out.output
    assert Api(net.url, token).request("GET", "/users/me").status_code == 401
    assert json.loads((home / "config.json").read_text())["token"] is None
    assert runner.invoke(app, ["logout"]).output.startswith("not logged in")
    with pytest.raises(HubError) as exc:
        client.studies()
    assert exc.value.status == 401


@pytest.fixture(scope="module")
def localnet(tmp_path_factory):
    from nordfed.node.localnet import LocalNetwork, tiny_cdm

    wd = tmp_path_factory.mktemp("net")
    sites = {
        s: tiny_cdm(f"duckdb:///{wd / f'{s}.duckdb'}", n, seed=i)
        for i, (s, n) in enumerate({"DK": 40, "NO": 30}.items())
    }
    with LocalNetwork(wd, sites, poll_timeout_s=10) as network:
        yield network


def test_federated_runs_are_tagged_with_their_study(localnet):
    from nordfed.client import HubFederation

    client = localnet.client
    dk = localnet.nodes["DK"].organization_id
    only_dk = client.create_study(localnet.collaboration_id, "dk-only", organization_ids=[dk, localnet.research_org_id])
    fed = HubFederation(client, localnet.collaboration_id, timeout=60, study_id=only_dk["id"])
    assert fed.sites == ["DK"]
    counts = fed.run("nordfed.count", {})
    assert list(counts) == ["DK"] and counts["DK"]["persons"] == 40
    tasks = client.tasks(study_id=only_dk["id"])
    assert tasks and all(t["study_id"] == only_dk["id"] for t in tasks)
    assert client.study(only_dk["id"])["tasks_by_status"] == {"completed": len(tasks)}


def test_study_run_through_the_hub_tags_every_task(localnet, tmp_path, monkeypatch):
    """`nordfed study run --hub` makes (then reuses) the hub study named after the YAML. The tiny sites hold no
    colorectal cancer data, so the run stops at its first step: what matters here is that step's task."""
    doc = yaml.safe_load((STUDIES / "crc_survival_by_stage.yaml").read_text())
    doc["target"] = str(STUDIES / doc["target"])
    doc.pop("synthetic")
    spec = tmp_path / "crc_survival_by_stage.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    localnet.client.save_state()
    monkeypatch.setenv("NORDFED_HOME", str(localnet.client.home))
    args = ["study", "run", str(spec), "--hub", localnet.hub_url, "--collaboration", str(localnet.collaboration_id)]
    args += ["--out", str(tmp_path / "report.html")]
    for _ in range(2):
        CliRunner().invoke(app, args)
    found = [s for s in localnet.client.studies(localnet.collaboration_id) if s["name"] == "crc_survival_by_stage"]
    assert len(found) == 1
    tagged = localnet.client.tasks(study_id=found[0]["id"])
    assert len(tagged) >= 2 and all(t["study_id"] == found[0]["id"] for t in tagged)
