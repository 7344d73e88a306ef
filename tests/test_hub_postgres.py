"""The hub on a real PostgreSQL server (own schema via ``?schema=``): the core flow, atomic claims under
concurrency, crash recovery and driver-hostile strings. Skipped when NORDFED_TEST_POSTGRES_URL is unset.
Governance and studies run on PostgreSQL too: test_hub_admin.py and test_hub_studies.py are parametrized."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from nordfed.hub.app import create_app
from nordfed.hub.server import HubServer
from test_hub_support import PASSWORD, ROOT_PASSWORD, Api, b64, build_network

pytestmark = [pytest.mark.postgres, pytest.mark.network]


def test_hub_on_postgres_end_to_end(pg_url):
    with HubServer(create_app(pg_url, root_password=ROOT_PASSWORD)) as server:
        net = build_network(server.url)
        node_a, node_b = net.nodes["node_a"], net.nodes["node_b"]
        task = net.task(net.researcher_a, [node_a, node_b])
        results = {}
        for node in (node_a, node_b):
            run = node.call("GET", "/runs/next", params={"timeout": 5})
            results[node.id] = b64()
            node.call("PATCH", f"/runs/{run['run_id']}", json={"status": "completed", "result": results[node.id]})
        assert net.researcher_a.call("GET", f"/tasks/{task['id']}/wait", params={"timeout": 5})["status"] == "completed"
        got = net.researcher_a.call("GET", f"/tasks/{task['id']}/results")
        assert {r["node_id"]: r["result"] for r in got} == results
        assert net.researcher_b.request("GET", f"/tasks/{task['id']}/results").status_code == 403

        # Many polls of one node race for six runs: each run is claimed exactly once.
        racer = net.new_node("racer")
        for _ in range(6):
            net.task(net.researcher_a, [racer])
        polls = [Api(net.url).node_login(net.api_keys["racer"]) for _ in range(10)]
        with ThreadPoolExecutor(10) as pool:
            responses = list(pool.map(lambda n: n.request("GET", "/runs/next", params={"timeout": 1}), polls))
        claimed = [r.json()["run_id"] for r in responses if r.status_code == 200]
        assert len(claimed) == len(set(claimed)) == 6

        # Crash recovery: the six active runs go back to pending.
        assert racer.call("POST", "/nodes/me/session") == {"requeued": 6, "failed": 0}

        # Strings PostgreSQL would refuse are stopped by validation, not by the driver.
        template = '{"username": %s, "password": "%s", "organization_id": %d, "roles": ["viewer"]}'
        for name in ('"nul\\u0000byte"', '"\\ud800"'):
            raw = (template % (name, PASSWORD, net.org["A"])).encode()
            response = net.root.request("POST", "/users", content=raw, headers={"content-type": "application/json"})
            assert response.status_code == 422, response.text
        assert net.root.request("GET", "/tasks/2147483648").status_code == 422

        # Every validated maximum fits its column (PostgreSQL enforces VARCHAR lengths; SQLite does not).
        org = net.root.call("POST", "/organizations", 201, json={"name": "o" * 200, "country": "c" * 64})
        assert net.root.request("POST", "/organizations", json={"name": "p", "country": "c" * 65}).status_code == 422
        user = {"username": "u" * 200, "password": "p" * 1024, "organization_id": org["id"], "roles": ["viewer"]}
        net.root.call("POST", "/users", 201, json=user)
        node = {"name": "n" * 200, "organization_id": net.org["A"], "collaboration_id": net.collab}
        long_node = net.root.call("POST", "/nodes", 201, json=node)
        body = {
            "collaboration_id": net.collab,
            "algorithm": "a" * 200,
            "version": "v" * 100,
            "code_hash": "h" * 200,
            "description": "d" * 10_000,
            "runs": [{"node_id": long_node["id"], "input": b64()}],
        }
        net.researcher_a.call("POST", "/tasks", 201, json=body)
        study = {"collaboration_id": net.collab, "name": "s" * 200, "description": "d" * 10_000}
        study_id = net.researcher_a.call("POST", "/studies", 201, json=study)["id"]
        net.researcher_a.call("POST", "/tasks", 201, json={**body, "study_id": study_id})
        renamed = {"name": "n" * 200, "country": "c" * 64}
        net.root.call("PATCH", f"/organizations/{org['id']}", json=renamed)


def test_hub_tables_live_in_their_own_schema(pg_url):
    create_app(pg_url, root_password=ROOT_PASSWORD)
    schema = pg_url.rsplit("schema=", 1)[1]
    base = pg_url.split("?", 1)[0]
    with psycopg.connect(base) as con:
        tables = {
            r[0]
            for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
        }
    assert {"hub_user", "hub_task", "hub_run", "hub_node", "hub_token", "hub_study", "hub_study_organization"} <= tables


def test_concurrent_finishes_and_cancel_stay_consistent_on_postgres(pg_url):
    """Runs of one task finishing at the same instant (and racing a cancel) leave a correct task status and never
    a 5xx: the task row is locked before its runs everywhere, so there is no deadlock and no lost update."""
    with HubServer(create_app(pg_url, root_password=ROOT_PASSWORD)) as server:
        net = build_network(server.url)
        nodes = [net.nodes["node_a"], net.nodes["node_b"], *(net.new_node(f"extra{i}") for i in range(4))]

        def claim_all(task):
            return [node.call("GET", "/runs/next", params={"timeout": 5})["run_id"] for node in nodes]

        def finish(args):
            node, run_id = args
            return node.request("PATCH", f"/runs/{run_id}", json={"status": "completed", "result": b64()}).status_code

        task = net.task(net.researcher_a, nodes)
        runs = claim_all(task)
        with ThreadPoolExecutor(len(nodes)) as pool:
            assert list(pool.map(finish, zip(nodes, runs, strict=True))) == [200] * len(nodes)
        assert net.researcher_a.call("GET", f"/tasks/{task['id']}")["status"] == "completed"

        task = net.task(net.researcher_a, nodes)
        runs = claim_all(task)
        with ThreadPoolExecutor(len(nodes) + 1) as pool:
            cancel = pool.submit(lambda: net.researcher_a.request("POST", f"/tasks/{task['id']}/cancel").status_code)
            codes = list(pool.map(finish, zip(nodes, runs, strict=True)))
        assert set(codes) <= {200, 409} and cancel.result() in (200, 409)
        final = net.researcher_a.call("GET", f"/tasks/{task['id']}")
        statuses = {r["status"] for r in final["runs"]}
        if cancel.result() == 200:
            assert final["status"] == "cancelled" and statuses <= {"completed", "cancelled"}
        else:  # every run finished before the cancel got the task lock
            assert final["status"] == "completed" and statuses == {"completed"}
        assert codes.count(200) == sum(r["status"] == "completed" for r in final["runs"])
