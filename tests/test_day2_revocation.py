"""Day 2: a researcher leaves. Disabling her cancels her queued tasks, so no site runs them afterwards (the nodes
pin her signing key, not her account: only the hub can stop them), and a long poll of hers parked on
``/tasks/{id}/wait`` or ``/tasks/{id}/results?wait=`` answers 401 once her tokens are revoked, never her task or
its sealed results. Real hub on loopback, SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from nordfed.hub.lifecycle import OWNER_DISABLED_LOG, OWNER_ORG_REMOVED_LOG
from nordfed.hub.routers.runs import RECHECK
from test_hub_support import PASSWORD, Api, Network, b64, park, served_network

pytestmark = pytest.mark.network


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def net(request, tmp_path_factory) -> Network:
    with served_network(request.param, tmp_path_factory.mktemp("hub")) as network:
        yield network


def _researcher(net: Network, name: str) -> Api:
    """A fresh researcher of organization A (each test disables its own)."""
    net.admin_a.call("POST", "/users", 201, json={"username": name, "password": PASSWORD,
                                                  "organization_id": net.org["A"], "roles": ["researcher"]})
    return net.anon.login(name)


def test_disabling_a_researcher_cancels_her_queued_tasks_so_no_node_runs_them(net):
    leaver = _researcher(net, "leaver_queued")
    node = net.new_node("day2_queued")
    queued = net.task(leaver, [node])
    other = net.task(net.researcher_a, [node])  # a colleague's task on the same node stays
    user = net.admin_a.call("PATCH", f"/users/{leaver.id}", json={"disabled": True})
    assert user["disabled"] is True
    task = net.admin_a.call("GET", f"/tasks/{queued['id']}")
    assert task["status"] == "cancelled"
    assert [r["status"] for r in task["runs"]] == ["cancelled"]
    assert OWNER_DISABLED_LOG in task["runs"][0]["log"]
    # the node is handed the colleague's run, never hers
    assert node.call("GET", "/runs/next", params={"timeout": 1})["task_id"] == other["id"]
    assert node.request("GET", "/runs/next", params={"timeout": 1}).status_code == 204
    # enabling her again does not bring the cancelled task back
    net.admin_a.call("PATCH", f"/users/{leaver.id}", json={"disabled": False})
    assert net.admin_a.call("GET", f"/tasks/{queued['id']}")["status"] == "cancelled"


def test_a_run_a_node_is_executing_when_she_is_disabled_cannot_post_its_result(net):
    leaver = _researcher(net, "leaver_active")
    node = net.new_node("day2_active")
    task = net.task(leaver, [node])
    run = node.call("GET", "/runs/next", params={"timeout": 5})
    assert run["task_id"] == task["id"]
    net.root.call("PATCH", f"/users/{leaver.id}", json={"disabled": True})
    refused = node.request("PATCH", f"/runs/{run['run_id']}", json={"status": "completed", "result": b64()})
    assert refused.status_code == 409, refused.text  # the node stops; no result is stored for her
    assert net.root.call("GET", f"/tasks/{task['id']}")["runs"][0]["has_result"] is False


@pytest.mark.parametrize("path", ["/tasks/{id}/results", "/tasks/{id}/wait"])
def test_a_parked_wait_answers_401_and_never_the_results_after_her_tokens_are_revoked(net, path):
    leaver = _researcher(net, f"leaver_{path.rsplit('/', 1)[1]}")
    node = net.new_node(f"day2_{path.rsplit('/', 1)[1]}")
    task = net.task(leaver, [node])
    params = {"wait": 60} if path.endswith("results") else {"timeout": 60}
    thread, got = park(leaver, path.format(id=task["id"]), params)
    # logged out everywhere by her organization's admin (not disabled: her task stays and completes)
    assert net.admin_a.call("DELETE", f"/users/{leaver.id}/tokens")["revoked"] >= 1
    revoked_at = time.monotonic()
    run = node.call("GET", "/runs/next", params={"timeout": 5})
    node.call("PATCH", f"/runs/{run['run_id']}", json={"status": "completed", "result": b64()})
    thread.join(RECHECK + 10)
    assert got["status"] == 401, got  # the old code answered 200 with the sealed result (or the finished task)
    assert got["at"] - revoked_at < RECHECK + 2


def test_the_cli_disables_and_enables_a_user_by_name(net):
    from typer.testing import CliRunner

    from nordfed.cli import app
    from test_hub_support import ROOT_PASSWORD

    leaver = _researcher(net, "leaver_cli")
    node = net.new_node("day2_cli")
    task = net.task(leaver, [node])
    admin = ["--url", net.url, "--username", "admin_a", "--password", PASSWORD]
    r = CliRunner().invoke(app, ["hub", "disable-user", "leaver_cli", *admin])
    assert r.exit_code == 0, r.output
    assert f"user 'leaver_cli' (id {leaver.id}) disabled" in r.output
    assert leaver.request("GET", "/users/me").status_code == 401
    assert net.anon.request("POST", "/token", json={"username": "leaver_cli", "password": PASSWORD}).status_code == 403
    assert net.root.call("GET", f"/tasks/{task['id']}")["status"] == "cancelled"
    r = CliRunner().invoke(app, ["hub", "enable-user", str(leaver.id), "--url", net.url, "--password", ROOT_PASSWORD])
    assert r.exit_code == 0, r.output
    net.anon.login("leaver_cli")
    r = CliRunner().invoke(app, ["hub", "disable-user", "nobody", *admin])
    assert r.exit_code == 1 and "no user named 'nobody'" in r.output


def test_an_organization_leaving_the_collaboration_takes_its_researchers_queued_tasks_with_it(net):
    node = net.new_node("day2_org_left")  # organization A's
    theirs = net.task(net.researcher_b, [node])  # B's researcher, on A's node
    ours = net.task(net.researcher_a, [node])
    try:
        net.root.call("PATCH", f"/collaborations/{net.collab}", json={"remove_organization_ids": [net.org["B"]]})
        task = net.root.call("GET", f"/tasks/{theirs['id']}")
        assert task["status"] == "cancelled" and OWNER_ORG_REMOVED_LOG in task["runs"][0]["log"]
        assert net.root.call("GET", f"/tasks/{ours['id']}")["status"] != "cancelled"
        assert node.call("GET", "/runs/next", params={"timeout": 1})["task_id"] == ours["id"]  # never B's
    finally:
        net.root.call("PATCH", f"/collaborations/{net.collab}", json={"add_organization_ids": [net.org["B"]]})
