"""The hub's core flow on a real uvicorn server (SQLite): tokens, organizations, users, collaborations, nodes,
tasks, long-polled dispatch, run updates, results, waiting, cancelling and crash recovery."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from nordfed.hub.app import create_app
from nordfed.hub.lifecycle import task_status
from nordfed.hub.server import HubServer
from test_hub_support import PASSWORD, ROOT_PASSWORD, Api, Network, b64, build_network

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def net(tmp_path_factory) -> Network:
    db = tmp_path_factory.mktemp("hub") / "hub.sqlite"
    with HubServer(create_app(f"sqlite:///{db}", root_password=ROOT_PASSWORD)) as server:
        yield build_network(server.url)


def test_health_and_openapi(net):
    assert net.anon.call("GET", "/health")["status"] == "ok"
    spec = net.anon.http.get(f"{net.url}/openapi.json").json()
    assert "/api/runs/next" in spec["paths"] and "/api/tasks/{task_id}/results" in spec["paths"]


def test_tokens_identify_users_and_nodes(net):
    me = net.researcher_a.call("GET", "/users/me")
    assert me["username"] == "researcher_a" and me["roles"] == ["researcher"] and me["organization_id"] == net.org["A"]
    assert net.researcher_a.info["roles"] == ["researcher"]
    node = net.nodes["node_a"]
    assert node.info["collaboration_id"] == net.collab and node.info["organization_id"] == net.org["A"]
    assert (
        net.anon.request("POST", "/token", json={"username": "researcher_a", "password": "wrong!!!!"}).status_code
        == 401
    )
    assert net.anon.request("POST", "/token", json={"username": "nobody", "password": PASSWORD}).status_code == 401
    bad_key = net.api_keys["node_a"][:-4] + "AAAA"
    assert net.anon.request("POST", "/token/node", json={"api_key": bad_key}).status_code == 401


def test_listing_and_reading_resources(net):
    names = {o["name"] for o in net.viewer_a.call("GET", "/organizations")}
    assert {"Hospital A", "Hospital B", "Hospital C"} <= names
    assert net.viewer_a.call("GET", f"/organizations/{net.org['B']}")["country"] == "SE"
    assert [c["id"] for c in net.researcher_a.call("GET", "/collaborations")] == [net.collab]
    assert net.researcher_c.call("GET", "/collaborations") == []
    collab = net.nodes["node_b"].call("GET", f"/collaborations/{net.collab}")
    assert collab["organization_ids"] == sorted([net.org["A"], net.org["B"]])
    nodes = net.researcher_b.call("GET", f"/collaborations/{net.collab}/nodes")
    assert {"node_a", "node_b"} <= {n["name"] for n in nodes}
    assert all(n["status"] in ("online", "offline") for n in nodes)


def test_public_keys_round_trip(net):
    enc, sig = b64(n=32), b64(n=32)
    net.researcher_a.call("PUT", "/users/me/keys", json={"encryption_key": enc, "signing_key": sig})
    keys = net.nodes["node_b"].call("GET", f"/users/{net.researcher_a.id}/keys")
    assert (keys["encryption_key"], keys["signing_key"]) == (enc, sig)
    node_enc, node_sig = b64(n=32), b64(n=32)
    net.nodes["node_a"].call("PUT", "/nodes/me/keys", json={"encryption_key": node_enc, "signing_key": node_sig})
    listed = {n["name"]: n for n in net.researcher_a.call("GET", f"/collaborations/{net.collab}/nodes")}
    assert (listed["node_a"]["encryption_key"], listed["node_a"]["signing_key"]) == (node_enc, node_sig)


def test_duplicates_are_409(net):
    assert net.root.request("POST", "/organizations", json={"name": "Hospital A", "country": "NO"}).status_code == 409
    dup = {"username": "researcher_a", "password": PASSWORD, "organization_id": net.org["A"], "roles": ["viewer"]}
    response = net.root.request("POST", "/users", json=dup)
    assert response.status_code == 409 and "researcher_a" in response.json()["detail"]
    body = {"name": "node_a", "organization_id": net.org["A"], "collaboration_id": net.collab}
    assert net.root.request("POST", "/nodes", json=body).status_code == 409
    assert (
        net.root.request("POST", "/collaborations", json={"name": "crc-study", "organization_ids": [1]}).status_code
        == 409
    )


def test_full_task_round_trip(net):
    node_a, node_b = net.new_node("rt_a", "A"), net.new_node("rt_b", "B")
    inputs = {node_a.id: b64(), node_b.id: b64()}
    task = net.researcher_a.call(
        "POST",
        "/tasks",
        201,
        json={
            "collaboration_id": net.collab,
            "algorithm": "stats.mean",
            "version": "2.1",
            "code_hash": "sha256:00ff",
            "description": "mean age",
            "runs": [{"node_id": k, "input": v} for k, v in inputs.items()],
        },
    )
    assert task["status"] == "pending" and task["owner_id"] == net.researcher_a.id
    assert [r["status"] for r in task["runs"]] == ["pending", "pending"]
    assert {r["node_name"] for r in task["runs"]} == {"rt_a", "rt_b"}

    results = {}
    for node in (node_a, node_b):
        run = node.call("GET", "/runs/next", params={"timeout": 5})
        assert run["task_id"] == task["id"] and run["input"] == inputs[node.id]
        assert (run["algorithm"], run["version"], run["code_hash"]) == ("stats.mean", "2.1", "sha256:00ff")
        assert run["owner_id"] == net.researcher_a.id and run["collaboration_id"] == net.collab
        assert net.researcher_a.call("GET", f"/tasks/{task['id']}")["status"] == "active"
        node.call("PATCH", f"/runs/{run['run_id']}", json={"progress": 0.5, "log": "half way"})
        results[node.id] = b64()
        state = node.call(
            "PATCH", f"/runs/{run['run_id']}", json={"status": "completed", "result": results[node.id], "log": "done"}
        )
        assert state["status"] == "completed" and state["progress"] == 1.0
    done = net.researcher_a.call("GET", f"/tasks/{task['id']}/wait", params={"timeout": 5})
    assert done["status"] == "completed"
    assert all(r["has_result"] and r["log"] == "half way\ndone" and r["finished_at"] for r in done["runs"])
    got = net.researcher_a.call("GET", f"/tasks/{task['id']}/results")
    assert {r["node_id"]: r["result"] for r in got} == results
    # Finished runs cannot be changed any more.
    assert node_a.request("PATCH", f"/runs/{got[0]['run_id']}", json={"progress": 0.1}).status_code == 409
    listed = net.viewer_a.call("GET", "/tasks", params={"collaboration_id": net.collab, "status": "completed"})
    assert task["id"] in [t["id"] for t in listed]
    assert task["id"] not in [t["id"] for t in net.viewer_a.call("GET", "/tasks", params={"status": "pending"})]


def test_long_poll_wakes_on_task_creation_and_times_out(net):
    node = net.new_node("poller")
    t0 = time.monotonic()
    assert node.request("GET", "/runs/next", params={"timeout": 0.3}).status_code == 204
    assert 0.25 < time.monotonic() - t0 < 5

    got: dict = {}

    def poll():
        started = time.monotonic()
        response = node.request("GET", "/runs/next", params={"timeout": 30})
        got.update(
            status=response.status_code, body=response.json(), waited=time.monotonic() - started, at=time.monotonic()
        )

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)  # the poll is parked on the hub before the task exists
    created_at = time.monotonic()
    task = net.task(net.researcher_a, [node])
    thread.join(30)
    assert got["status"] == 200 and got["body"]["task_id"] == task["id"]
    # Woken by the creation, not by a timer: well inside the 30 s timeout.
    assert got["waited"] < 10 and got["at"] - created_at < 5
    node.call("PATCH", f"/runs/{got['body']['run_id']}", json={"status": "refused", "log": "not allowed"})
    assert net.researcher_a.call("GET", f"/tasks/{task['id']}")["status"] == "failed"


def test_concurrent_polls_never_claim_the_same_run(net):
    node = net.new_node("racer")
    tasks = [net.task(net.researcher_a, [node])["id"] for _ in range(6)]
    # Ten connections of one node poll at once (one token: the race is in the claim, not in authentication).
    polls = [Api(net.url, node.http.headers["Authorization"].split()[1], node_id=node.id) for _ in range(10)]
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda n: n.request("GET", "/runs/next", params={"timeout": 1}), polls))
    claimed = [r.json()["run_id"] for r in responses if r.status_code == 200]
    assert sorted(r.status_code for r in responses) == [200] * 6 + [204] * 4
    assert len(set(claimed)) == 6
    assert sorted(r.json()["task_id"] for r in responses if r.status_code == 200) == tasks
    for run_id in claimed:
        node.call("PATCH", f"/runs/{run_id}", json={"status": "completed", "result": b64()})


def test_wait_returns_when_the_last_run_finishes(net):
    node = net.new_node("waited")
    task = net.task(net.researcher_a, [node])
    run = node.call("GET", "/runs/next", params={"timeout": 5})
    t0 = time.monotonic()
    assert net.researcher_a.call("GET", f"/tasks/{task['id']}/wait", params={"timeout": 0.3})["status"] == "active"
    assert time.monotonic() - t0 >= 0.25
    got: dict = {}
    thread = threading.Thread(
        target=lambda: got.update(
            task=net.researcher_a.call("GET", f"/tasks/{task['id']}/wait", params={"timeout": 30}), at=time.monotonic()
        )
    )
    thread.start()
    time.sleep(0.3)
    finished_at = time.monotonic()
    node.call("PATCH", f"/runs/{run['run_id']}", json={"status": "failed", "log": "disclosure: too few rows"})
    thread.join(30)
    assert got["task"]["status"] == "failed" and got["at"] - finished_at < 5
    assert "too few rows" in got["task"]["runs"][0]["log"]


def test_cancel_stops_runs(net):
    node = net.new_node("cancelled")
    task = net.task(net.researcher_a, [node])
    run = node.call("GET", "/runs/next", params={"timeout": 5})
    cancelled = net.researcher_a.call("POST", f"/tasks/{task['id']}/cancel")
    assert cancelled["status"] == "cancelled" and cancelled["runs"][0]["status"] == "cancelled"
    assert node.call("GET", f"/runs/{run['run_id']}")["status"] == "cancelled"
    response = node.request("PATCH", f"/runs/{run['run_id']}", json={"status": "completed", "result": b64()})
    assert response.status_code == 409 and "cancelled" in response.json()["detail"]
    assert net.researcher_a.request("POST", f"/tasks/{task['id']}/cancel").status_code == 409
    assert node.request("GET", "/runs/next", params={"timeout": 0}).status_code == 204


def test_node_session_requeues_crashed_runs_then_fails_them(net):
    node = net.new_node("crashy")
    task = net.task(net.researcher_a, [node])
    assert node.call("POST", "/nodes/me/session") == {"requeued": 0, "failed": 0}
    for attempt in (1, 2):
        run = node.call("GET", "/runs/next", params={"timeout": 5})
        assert run["task_id"] == task["id"]
        # The node "crashes" (never patches) and restarts with a fresh token.
        restarted = Api(net.url).node_login(net.api_keys["crashy"])
        assert restarted.call("POST", "/nodes/me/session") == {"requeued": 1, "failed": 0}
        state = net.researcher_a.call("GET", f"/tasks/{task['id']}")
        assert state["runs"][0]["status"] == "pending" and state["runs"][0]["attempts"] == attempt
    node.call("GET", "/runs/next", params={"timeout": 5})
    assert node.call("POST", "/nodes/me/session") == {"requeued": 0, "failed": 1}
    state = net.researcher_a.call("GET", f"/tasks/{task['id']}")
    assert state["status"] == "failed" and state["runs"][0]["attempts"] == 3
    assert "node crashed 3 times" in state["runs"][0]["log"]


def test_a_node_found_idle_is_asked_again_once_a_run_is_requeued_for_it(net):
    """The hub skips the database for a node whose last claim found nothing until it is notified; a crash recovery
    that requeues its run must notify it, or the run would never be handed out again."""
    node = net.new_node("idle_then_requeued")
    task = net.task(net.researcher_a, [node])
    assert node.call("GET", "/runs/next", params={"timeout": 5})["task_id"] == task["id"]
    assert node.request("GET", "/runs/next", params={"timeout": 0}).status_code == 204  # now marked idle
    assert node.call("POST", "/nodes/me/session") == {"requeued": 1, "failed": 0}
    again = node.call("GET", "/runs/next", params={"timeout": 0})
    assert again["task_id"] == task["id"]


@pytest.mark.parametrize(
    ("statuses", "cancelled", "expected"),
    [
        (["pending", "pending"], False, "pending"),
        (["active", "pending"], False, "active"),
        (["completed", "pending"], False, "active"),
        (["completed", "completed"], False, "completed"),
        (["completed", "refused"], False, "failed"),
        (["failed", "active"], False, "active"),
        (["active", "pending"], True, "cancelled"),
    ],
)
def test_task_status_rule(statuses, cancelled, expected):
    assert task_status(statuses, cancelled) == expected


def test_shutdown_answers_parked_polls_at_once(tmp_path):
    server = HubServer(create_app(f"sqlite:///{tmp_path / 'hub.sqlite'}", root_password=ROOT_PASSWORD)).start()
    root = Api(server.url).login("root", ROOT_PASSWORD)
    org = root.call("POST", "/organizations", 201, json={"name": "A", "country": "NO"})["id"]
    collab = root.call("POST", "/collaborations", 201, json={"name": "c", "organization_ids": [org]})["id"]
    created = root.call("POST", "/nodes", 201, json={"name": "n", "organization_id": org, "collaboration_id": collab})
    node = Api(server.url).node_login(created["api_key"])
    got: dict = {}
    thread = threading.Thread(
        target=lambda: got.update(status=node.request("GET", "/runs/next", params={"timeout": 60}))
    )
    thread.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    server.stop()
    thread.join(30)
    assert got["status"].status_code == 204 and time.monotonic() - t0 < 10


def test_hub_imports_no_algorithm_or_data_code():
    code = (
        "import sys, nordfed.hub.app, nordfed.hub.server\n"
        "heavy = ('nordfed.fed', 'nordfed.node', 'nordfed.client', 'nordfed.omop', 'numpy', 'pandas', 'duckdb')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_expired_tokens_are_refused(tmp_path):
    app = create_app(
        f"sqlite:///{tmp_path / 'hub.sqlite'}", root_password=ROOT_PASSWORD, user_token_ttl=timedelta(seconds=1)
    )
    with HubServer(app) as server:
        root = Api(server.url).login("root", ROOT_PASSWORD)
        assert root.call("GET", "/users/me")["username"] == "root"
        time.sleep(1.2)
        response = root.request("GET", "/users/me")
        assert response.status_code == 401 and response.json()["detail"] == "invalid or expired token"


def test_batcher_groups_concurrent_requests_one_per_key_with_errors_per_key():
    import asyncio

    from nordfed.hub.batch import KeyedBatcher

    batches: list[dict] = []

    def process(batch: dict) -> dict:
        batches.append(dict(batch))
        return {k: ValueError(f"bad {v}") if v == "bad" else f"{k}:{v}" for k, v in batch.items()}

    async def main():
        b = KeyedBatcher(process)
        calls = [b.submit("x", 1), b.submit("y", 1), b.submit("x", 2), b.submit("z", "bad")]
        return await asyncio.gather(*calls, return_exceptions=True)

    out = asyncio.run(main())
    # the first three keys go together; the second request for "x" waits for the next batch, in arrival order
    assert batches == [{"x": 1, "y": 1, "z": "bad"}, {"x": 2}]
    assert out[:3] == ["x:1", "y:1", "x:2"]
    assert isinstance(out[3], ValueError) and str(out[3]) == "bad bad"


def test_run_updates_arriving_together_each_get_their_own_answer(net):
    nodes = [net.new_node(f"burst{i}") for i in range(6)]
    task = net.task(net.researcher_a, nodes)
    runs = {n.id: n.call("GET", "/runs/next", params={"timeout": 5})["run_id"] for n in nodes}
    first, second = nodes[0], nodes[1]
    calls = [(n, runs[n.id], {"status": "completed", "result": b64(), "log": f"done {n.id}"}) for n in nodes]
    calls += [
        (first, runs[second.id], {"progress": 0.5}),  # another node's run
        (first, 2_000_000_000, {"progress": 0.5}),  # no such run
    ]
    with ThreadPoolExecutor(len(calls)) as pool:
        codes = list(pool.map(lambda c: c[0].request("PATCH", f"/runs/{c[1]}", json=c[2]).status_code, calls))
    assert codes == [200] * len(nodes) + [403, 404]
    done = net.researcher_a.call("GET", f"/tasks/{task['id']}/wait", params={"timeout": 5})
    assert done["status"] == "completed"
    assert all(r["status"] == "completed" and r["progress"] == 1.0 and r["has_result"] for r in done["runs"])
    assert {r["log"] for r in done["runs"]} == {f"done {n.id}" for n in nodes}
    assert first.request("PATCH", f"/runs/{runs[first.id]}", json={"progress": 0.9}).status_code == 409
