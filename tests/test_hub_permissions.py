"""Who may do what on the hub: roles (root, collaboration/organization admin, researcher, viewer, node) and scopes
(own, organization, collaboration), checked on a real server."""

from __future__ import annotations

import pytest

from nordfed.hub.app import create_app
from nordfed.hub.server import HubServer
from test_hub_support import PASSWORD, ROOT_PASSWORD, Api, Network, b64, build_network

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Network:
    db = tmp_path_factory.mktemp("hub") / "hub.sqlite"
    with HubServer(create_app(f"sqlite:///{db}", root_password=ROOT_PASSWORD)) as server:
        yield build_network(server.url)


@pytest.fixture(scope="module")
def finished(net) -> dict:
    """A completed task of researcher_a with results from both nodes."""
    task = net.task(net.researcher_a, [net.nodes["node_a"], net.nodes["node_b"]])
    for name in ("node_a", "node_b"):
        run = net.nodes[name].call("GET", "/runs/next", params={"timeout": 5})
        net.nodes[name].call("PATCH", f"/runs/{run['run_id']}", json={"status": "completed", "result": b64()})
    return task


def detail(response) -> str:
    assert response.headers["content-type"].startswith("application/json")
    return response.json()["detail"]


def test_outsider_researcher_can_neither_create_tasks_nor_read_results(net, finished):
    response = net.task(net.researcher_c, [net.nodes["node_a"]], expect=403)
    assert "not a member" in response["detail"]
    assert net.researcher_c.request("GET", f"/tasks/{finished['id']}/results").status_code == 403
    assert net.researcher_c.request("GET", f"/tasks/{finished['id']}").status_code == 403
    assert net.researcher_c.request("GET", f"/collaborations/{net.collab}/nodes").status_code == 403
    assert finished["id"] not in [t["id"] for t in net.researcher_c.call("GET", "/tasks")]


def test_viewer_reads_tasks_but_cannot_create_them(net, finished):
    assert net.task(net.viewer_a, [net.nodes["node_a"]], expect=403)["detail"] == "only researchers may create tasks"
    assert net.viewer_a.call("GET", f"/tasks/{finished['id']}")["status"] == "completed"
    assert net.viewer_a.request("GET", f"/tasks/{finished['id']}/results").status_code == 403
    assert net.viewer_a.request("POST", f"/tasks/{finished['id']}/cancel").status_code == 403


def test_researcher_cannot_read_another_users_results(net, finished):
    # researcher_b is in the collaboration and may see the task, but the results are researcher_a's.
    assert net.researcher_b.call("GET", f"/tasks/{finished['id']}")["owner_id"] == net.researcher_a.id
    response = net.researcher_b.request("GET", f"/tasks/{finished['id']}/results")
    assert response.status_code == 403 and "owner" in detail(response)
    assert net.root.request("GET", f"/tasks/{finished['id']}/results").status_code == 403
    assert len(net.researcher_a.call("GET", f"/tasks/{finished['id']}/results")) == 2


def test_node_cannot_touch_another_nodes_run(net):
    task = net.task(net.researcher_a, [net.nodes["node_a"]])
    run_id = task["runs"][0]["id"]
    for method, body in (("PATCH", {"status": "completed", "result": b64()}), ("GET", None)):
        response = net.nodes["node_b"].request(method, f"/runs/{run_id}", json=body)
        assert response.status_code == 403 and "another node" in detail(response)
    # node_b's poll does not see node_a's run.
    assert net.nodes["node_b"].request("GET", "/runs/next", params={"timeout": 0}).status_code == 204
    run = net.nodes["node_a"].call("GET", "/runs/next", params={"timeout": 5})
    assert run["run_id"] == run_id
    net.nodes["node_a"].call("PATCH", f"/runs/{run_id}", json={"status": "completed", "result": b64()})


def test_tokens_are_checked(net):
    for headers in (
        {},
        {"Authorization": "Bearer nonsense"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer " + "x" * 5000},
    ):
        response = Api(net.url).request("GET", "/users/me", headers=headers)
        assert response.status_code == 401, headers
        assert detail(response)
    assert net.nodes["node_a"].request("GET", "/users/me").status_code == 403
    assert net.nodes["node_a"].request("POST", "/tasks", json={}).status_code in (403, 422)
    assert net.researcher_a.request("GET", "/runs/next", params={"timeout": 0}).status_code == 403
    assert net.researcher_a.request("POST", "/nodes/me/session").status_code == 403


def test_administration_is_scoped(net):
    user = {"username": "mallory", "password": PASSWORD, "organization_id": net.org["B"], "roles": ["researcher"]}
    assert net.admin_a.request("POST", "/users", json=user).status_code == 403  # another organization
    user["organization_id"] = net.org["A"]
    for roles in (["root"], ["collaboration_admin"]):
        response = net.admin_a.request("POST", "/users", json={**user, "roles": roles})
        assert response.status_code == 403 and "only root" in detail(response)
    assert net.researcher_a.request("POST", "/users", json=user).status_code == 403
    assert net.admin_a.request("POST", "/organizations", json={"name": "X", "country": "DK"}).status_code == 403
    collab = {"name": "rogue", "organization_ids": [net.org["A"]]}
    assert net.researcher_a.request("POST", "/collaborations", json=collab).status_code == 403
    node = {"name": "rogue", "organization_id": net.org["B"], "collaboration_id": net.collab}
    assert net.admin_a.request("POST", "/nodes", json=node).status_code == 403
    node = {"name": "outside", "organization_id": net.org["C"], "collaboration_id": net.collab}
    response = net.root.request("POST", "/nodes", json=node)
    assert response.status_code == 400 and "not a member" in detail(response)
    assert net.researcher_c.request("GET", f"/users/{net.researcher_a.id}").status_code == 403
    assert net.researcher_c.call("GET", f"/users/{net.researcher_a.id}/keys")["id"] == net.researcher_a.id


def test_collaboration_admin_creates_collaborations_and_sees_them_all(net):
    net.root.call(
        "POST",
        "/users",
        201,
        json={
            "username": "coord",
            "password": PASSWORD,
            "organization_id": net.org["C"],
            "roles": ["collaboration_admin"],
        },
    )
    coord = net.anon.login("coord")
    new = coord.call("POST", "/collaborations", 201, json={"name": "cll", "organization_ids": [net.org["B"]]})
    assert {net.collab, new["id"]} <= {c["id"] for c in coord.call("GET", "/collaborations")}
    assert net.task(coord, [net.nodes["node_a"]], expect=403)["detail"] == "only researchers may create tasks"
    assert net.researcher_a.request("GET", f"/collaborations/{new['id']}").status_code == 403


def test_tasks_only_target_nodes_of_their_collaboration(net):
    other = net.root.call("POST", "/collaborations", 201, json={"name": "other", "organization_ids": [net.org["A"]]})
    created = net.root.call(
        "POST",
        "/nodes",
        201,
        json={"name": "elsewhere", "organization_id": net.org["A"], "collaboration_id": other["id"]},
    )
    response = net.task(net.researcher_a, [Api(net.url, node_id=created["id"])], expect=400)
    assert "not in collaboration" in response["detail"]
    response = net.task(net.researcher_a, [Api(net.url, node_id=999_999)], expect=404)
    assert "999999" in response["detail"]
    both = [net.nodes["node_a"], net.nodes["node_a"]]
    assert "only once" in net.task(net.researcher_a, both, expect=400)["detail"]
    elsewhere = net.anon.node_login(created["api_key"])
    assert elsewhere.request("GET", f"/collaborations/{net.collab}").status_code == 403
    assert elsewhere.request("GET", f"/nodes/{net.nodes['node_a'].id}").status_code == 403
