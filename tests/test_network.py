"""The real network: a hub (uvicorn subprocess, SQLite) and three node processes on loopback.

Done-when checks: identical results in process and through the hub, pinned code hashes, collaboration
membership, tamper detection at the client, no plaintext at the hub, and crash recovery of a SIGKILLed node.
"""

from __future__ import annotations

import secrets
import shutil
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

from nordfed.client import Client, HubError, HubFederation
from nordfed.fed.characterization import characterize
from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from nordfed.node.localnet import LocalNetwork, tiny_cdm
from nordfed.omop.store import open_cdm
from nordfed.privacy.crypto import VerificationError

SITES = {"DK": 60, "NO": 45, "SE": 33}


def _mispin_dq(site: str, policy: dict) -> dict:
    # every node pins nordfed.dq with a hash that is not the real code's
    for a in policy["algorithms"]:
        if a["name"] == "nordfed.dq":
            a["code_hash"] = "0" * 64
    return policy


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    wd = tmp_path_factory.mktemp("net")
    sites = {}
    for i, (s, n) in enumerate(SITES.items()):
        sites[s] = tiny_cdm(f"duckdb:///{wd / f'{s}.duckdb'}", n, seed=i)
        shutil.copy(wd / f"{s}.duckdb", wd / f"{s}-copy.duckdb")  # nodes hold their file open
    with LocalNetwork(wd, sites, policy_hook=_mispin_dq, poll_timeout_s=10) as network:
        yield network


@pytest.fixture(scope="module")
def fed(net) -> HubFederation:
    return HubFederation(net.client, net.collaboration_id, timeout=60)


def test_same_results_in_process_and_through_the_hub(net, fed):
    cdms = {s: open_cdm(f"duckdb:///{net.workdir / f'{s}-copy.duckdb'}") for s in SITES}
    local = InProcessFederation.from_cdms(cdms)
    assert sorted(fed.sites) == sorted(SITES)
    remote = fed.run("nordfed.count", {})
    assert remote == local.run("nordfed.count", {})
    assert {s: r["persons"] for s, r in remote.items()} == SITES
    a, b = characterize(local, top_n=5), characterize(fed, top_n=5)
    for name in a.pooled:
        pd.testing.assert_frame_equal(a.pooled[name], b.pooled[name])
        pd.testing.assert_frame_equal(a.per_site[name], b.per_site[name])
    for c in cdms.values():
        c.close()


def test_node_refuses_algorithm_whose_hash_is_not_pinned(net, fed):
    with pytest.raises(AlgorithmError) as exc:
        fed.run("nordfed.dq", {})
    assert exc.value.refused and "code hash" in exc.value.message and "not pinned" in exc.value.message
    task = net.client.task(fed.last_task_id)
    assert {r["status"] for r in task["runs"]} == {"refused"} and task["status"] == "failed"


def test_outsider_can_neither_create_tasks_nor_read_results(net, fed):
    fed.run("nordfed.ping", {"echo": "x"})
    task_id = fed.last_task_id
    root = net.root()
    org = root.request("POST", "/api/organizations", json={"name": "Outside lab", "country": "FI"})
    pw = secrets.token_urlsafe(12)
    root.request("POST", "/api/users", json={"username": "eve", "password": pw, "organization_id": org["id"],
                                             "roles": ["researcher"]})
    eve = Client(net.hub_url, home=net.workdir / "eve-home").login("eve", pw)
    eve.ensure_keys()
    with pytest.raises(HubError) as exc:
        eve.request("POST", "/api/tasks", json={
            "collaboration_id": net.collaboration_id, "algorithm": "nordfed.ping", "version": "1",
            "code_hash": "0" * 64, "runs": [{"node_id": net.nodes["DK"].id, "input": "AAAA"}]})
    assert exc.value.status == 403
    with pytest.raises(HubError) as exc:
        eve.request("GET", f"/api/tasks/{task_id}/results")
    assert exc.value.status in (403, 404)
    with pytest.raises(HubError) as exc:
        eve.request("GET", f"/api/tasks/{task_id}")
    assert exc.value.status in (403, 404)


def _db_bytes(net) -> bytes:
    path = Path(str(net.hub_db).removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))  # db, -wal, -shm


def test_hub_holds_no_plaintext_and_tampering_is_detected(net, fed):
    marker = f"MARKER-{secrets.token_hex(8)}"
    out = fed.run("nordfed.ping", {"echo": marker}, sites=["DK", "NO"])
    assert out == {"DK": {"site": "DK", "echo": marker}, "NO": {"site": "NO", "echo": marker}}
    task_id = fed.last_task_id
    assert marker.encode() not in _db_bytes(net)
    path = str(net.hub_db).removeprefix("sqlite:///")
    with sqlite3.connect(path, timeout=10) as con:
        run_id, blob = con.execute("SELECT id, result FROM hub_run WHERE task_id = ? ORDER BY id LIMIT 1",
                                   (task_id,)).fetchone()
        i = len(blob) // 2
        forged = blob[:i] + ("A" if blob[i] != "A" else "B") + blob[i + 1:]
        con.execute("UPDATE hub_run SET result = ? WHERE id = ?", (forged, run_id))
    with pytest.raises(VerificationError, match=r"decrypt|signature"):
        net.client.results(task_id)


def test_node_killed_mid_task_loses_nothing(net):
    c = net.client
    task = c.create_task(net.collaboration_id, "nordfed.ping", {"sleep": 1.0, "echo": "survivor"},
                         node_ids=[net.nodes["SE"].id])
    deadline = time.monotonic() + 30
    while c.task(task["id"])["runs"][0]["status"] != "active":
        assert time.monotonic() < deadline, "node never claimed the run"
        time.sleep(0.05)
    net.kill_node("SE")
    assert c.task(task["id"])["runs"][0]["status"] == "active"
    net.start_node("SE")
    done = c.wait(task["id"], timeout=60)
    run = done["runs"][0]
    assert run["status"] == "completed" and run["attempts"] >= 1 and done["status"] == "completed"
    [res] = c.results(task["id"])
    assert res.value == {"site": "SE", "echo": "survivor"}


def test_cli_task_flow(net):
    from typer.testing import CliRunner

    from nordfed.cli import app

    home = net.workdir / "cli-home"
    env = {"NORDFED_HOME": str(home), "COLUMNS": "200"}
    key_dir = net.workdir / "client-home" / "keys" / net.researcher  # reuse the keys the nodes pinned
    runner = CliRunner()
    r = runner.invoke(app, ["login", "--hub", net.hub_url, "-u", net.researcher, "-p", net.password,
                            "--key-dir", str(key_dir)], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["task", "create", "-c", str(net.collaboration_id), "-a", "nordfed.count"], env=env)
    assert r.exit_code == 0 and "completed" in r.output, r.output
    task_id = int(r.output.split("task ")[1].split()[0])
    r = runner.invoke(app, ["task", "result", str(task_id), "--json"], env=env)
    assert r.exit_code == 0 and '"persons": 60' in r.output, r.output
    r = runner.invoke(app, ["task", "status", str(task_id)], env=env)
    assert r.exit_code == 0 and "DK" in r.output
    r = runner.invoke(app, ["task", "cancel", str(task_id)], env=env)
    assert r.exit_code == 1 and "409" in r.output  # already finished


def test_cli_session_messages_and_readable_results(net):
    """Login with the URL the hub banner prints and the password from the environment, results as JSON, a trust
    that changes nothing says so, and a missing or revoked login names the command that fixes it."""
    from typer.testing import CliRunner

    from nordfed.cli import app

    home = net.workdir / "cli-session-home"
    env = {"NORDFED_HOME": str(home), "COLUMNS": "200", "NORDFED_PASSWORD": net.password}
    key_dir = net.workdir / "client-home" / "keys" / net.researcher
    runner = CliRunner()
    r = runner.invoke(app, ["login", "--hub", f"{net.hub_url}/api/", "-u", net.researcher, "--key-dir", str(key_dir)],
                      env=env)
    assert r.exit_code == 0 and f"logged in to {net.hub_url} as" in r.output, r.output
    r = runner.invoke(app, ["task", "create", "-c", str(net.collaboration_id), "-a", "nordfed.count", "-n",
                            str(net.nodes["DK"].id)], env=env)
    assert r.exit_code == 0, r.output
    task_id = r.output.split("task ")[1].split()[0]
    r = runner.invoke(app, ["task", "result", task_id], env=env)
    assert r.exit_code == 0 and '"persons": 60' in r.output and "'" not in r.output, r.output
    dk_key = (net.workdir / "nodes" / "DK" / "keys" / "signing.pub").read_text().strip()
    r = runner.invoke(app, ["node", "trust", "DK", "-c", str(net.collaboration_id), "--signing-key", dk_key], env=env)
    assert r.exit_code == 0 and "already pinned" in r.output and "nothing changed" in r.output, r.output
    login_again = f"run `nordfed login --hub {net.hub_url} -u {net.researcher}`"
    Client.from_state(home).request("POST", "/api/token/revoke")  # the saved token stops working
    r = runner.invoke(app, ["task", "status", task_id], env=env)
    assert r.exit_code == 1 and f"expired or was revoked: {login_again}" in r.output, r.output
    assert runner.invoke(app, ["logout"], env=env).exit_code == 0
    r = runner.invoke(app, ["task", "status", task_id], env=env)
    assert r.exit_code == 1 and r.output.strip() == f"error: not logged in: {login_again}", r.output


def test_a_disclosure_refusal_says_refused_once(net, fed):
    with pytest.raises(AlgorithmError) as exc:
        fed.run("nordfed.characterization", {"age_width": 10}, sites=["DK"])
    # as in process: the site is named once by the error, "refused" once by the node's message
    assert exc.value.refused and exc.value.message == "refused: age groups are 5 years wide at this node"
    [run] = net.client.task(fed.last_task_id)["runs"]
    assert run["log"].splitlines()[-1] == "[DK] refused: age groups are 5 years wide at this node"


def test_cancel_mid_run_leaves_node_serving(net, fed):
    c = net.client
    task = c.create_task(net.collaboration_id, "nordfed.ping", {"sleep": 0.8}, node_ids=[net.nodes["NO"].id])
    deadline = time.monotonic() + 30
    while c.task(task["id"])["runs"][0]["status"] != "active":
        assert time.monotonic() < deadline, "node never claimed the run"
        time.sleep(0.05)
    assert c.cancel(task["id"])["status"] == "cancelled"
    time.sleep(1.0)  # the node finishes, its result is turned away by the hub
    assert c.task(task["id"])["runs"][0]["status"] == "cancelled"
    assert fed.run("nordfed.ping", {"echo": "after"}, sites=["NO"]) == {"NO": {"site": "NO", "echo": "after"}}


def test_an_idle_node_leaves_its_duckdb_file_to_the_sites_own_tools(net, fed):
    import duckdb

    from nordfed.node.worker import CDM_IDLE_S

    assert fed.run("nordfed.count", {}, sites=["DK"])["DK"]["persons"] == SITES["DK"]
    path = str(net.workdir / "DK.duckdb")
    deadline = time.monotonic() + CDM_IDLE_S + 15
    while True:  # read-write, as `nordfed omop summary` or a local study opens it (this process holds none)
        try:
            con = duckdb.connect(path)
            break
        except duckdb.IOException as exc:
            assert time.monotonic() < deadline, f"the node still holds its CDM: {exc}"
            time.sleep(0.2)
    try:
        assert con.execute("SELECT count(*) FROM person").fetchall() == [(SITES["DK"],)]
    finally:
        con.close()
    assert fed.run("nordfed.count", {}, sites=["DK"])["DK"]["persons"] == SITES["DK"]
