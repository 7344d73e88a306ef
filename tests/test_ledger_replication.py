"""The hub copy of a node's ledger (DESIGN invariant 3), with a real hub and a real node process: the node pushes
its entries over its channel, the hub keeps exactly what the node signed, refuses forged, broken and forked pushes
without changing its copy, shows it only to those who may see the node, and `nordfed ledger pull` + `verify
--against` catch a node whose local ledger was truncated or rewritten after replication."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time

import httpx
import pytest
from typer.testing import CliRunner
from websockets.sync.client import connect

from nordfed.cli import app
from nordfed.client import Client, HubError, HubFederation
from nordfed.ledger import Ledger, make_entry, verify_rows
from nordfed.node.localnet import LocalNetwork, tiny_cdm
from nordfed.policy.node import load_node_config
from nordfed.privacy.crypto import Identity

runner = CliRunner()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    wd = tmp_path_factory.mktemp("replnet")
    sites = {"DK": tiny_cdm(f"duckdb:///{wd / 'DK.duckdb'}", 30, seed=5)}
    with LocalNetwork(wd, sites, pinned=["nordfed.count", "nordfed.ping"], poll_timeout_s=10) as network:
        network.client.save_state()  # for the CLI (NORDFED_HOME)
        yield network


@pytest.fixture(scope="module")
def cfg(net):
    return load_node_config(net.nodes["DK"].config_path)


def _local(cfg) -> list[dict]:
    with Ledger.open(cfg.ledger_path, create=False) as led:
        return [e.to_dict() for e in led.entries()]


def _hub(net) -> list[dict]:
    return net.client.node_ledger(net.nodes["DK"].id, page=3)  # small pages: paging is exercised too


def _wait_replicated(net, cfg, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while (hub := _hub(net)) != (local := _local(cfg)):
        assert time.monotonic() < deadline, (len(hub), len(local))
        time.sleep(0.1)
    return hub


def _cli(net, *args: str):
    env = {"NORDFED_HOME": str(net.workdir / "client-home"), "COLUMNS": "200"}
    return runner.invoke(app, list(map(str, args)), env=env)


def _channel(net, cfg):
    token = httpx.post(f"{net.hub_url}/api/token/node", json={"api_key": cfg.api_key}).json()["access_token"]
    url = net.hub_url.replace("http://", "ws://") + "/api/runs/channel"
    return connect(url, additional_headers={"Authorization": f"Bearer {token}"})


def _ask(ws, message) -> dict:
    ws.send(message if isinstance(message, str) else json.dumps(message))
    return json.loads(ws.recv(timeout=10))


def test_the_hub_copy_equals_the_node_ledger_after_runs(net, cfg):
    fed = HubFederation(net.client, net.collaboration_id, timeout=60)
    for i in range(3):
        assert fed.run("nordfed.ping", {"echo": i})["DK"]["echo"] == i
    assert fed.run("nordfed.count", {})["DK"]["persons"] == 30
    hub = _wait_replicated(net, cfg)  # pushed once the node is idle, without waiting for its long poll
    assert [e["kind"] for e in hub] == ["policy_loaded"] + ["task_received", "run_completed"] * 4
    key = Identity.load(cfg.key_dir).signing_public
    rep = verify_rows([(e["seq"], e["ts"], e["kind"], e["actor"], json.dumps(e["payload"]), e["prev_hash"],
                        e["entry_hash"], e["signer"], e["signature"]) for e in hub], [key])
    assert rep.ok and rep.count == 9, rep.summary()


def test_forged_broken_forked_and_hostile_pushes_are_refused_and_change_nothing(net, cfg):
    before = _wait_replicated(net, cfg)
    node_key, stranger = Identity.load(cfg.key_dir), Identity.generate()
    n, head = len(before), before[-1]["entry_hash"]

    def entry(seq: int, prev: str, key=node_key, **payload) -> dict:
        return make_entry(seq, "run_completed", "DK", {"task_id": 10**6, **payload}, prev, key).to_dict()

    good = entry(n + 1, head)
    bad_sig = {**good, "signature": entry(n + 1, head, note=1)["signature"]}
    changed = {**good, "payload": {"task_id": 7}}
    old2 = before[1]
    rewritten = make_entry(2, old2["kind"], "DK", {**old2["payload"], "username": "nobody"}, old2["prev_hash"],
                           node_key).to_dict()
    cases = [
        ([entry(n + 1, head, key=stranger)], 422, "not one of this node's registered signing keys"),
        ([bad_sig], 422, "signature does not verify"),
        ([changed], 422, "does not hash"),
        ([entry(n + 1, "ab" * 32)], 409, "fork"),  # does not continue the hub's chain
        ([good, entry(n + 2, "cd" * 32)], 422, "broken chain"),  # all or nothing: good is not kept either
        ([*before[:1], rewritten], 409, "fork at entry 2"),  # a rewritten node ledger cannot overwrite the copy
        ([entry(n + 3, head)], 409, f"push from entry {n + 1}"),
        ([good, entry(n + 3, good["entry_hash"])], 422, "does not follow"),
        ("everything", 422, "entries"),
        ([], 422, "entries"),
        ([good] * 501, 422, "entries"),
        ([1], 422, "entries.0"),
        ([{k: v for k, v in good.items() if k != "signature"}], 422, "signature"),
        ([{**good, "seq": "7"}], 422, "seq"),
        ([{**good, "seq": True}], 422, "seq"),
        ([{**good, "seq": 2**40}], 422, "seq"),
        ([{**good, "payload": {"blob": "x" * 20_000}}], 422, "payload"),
        ([{**good, "prev_hash": "DROP TABLE"}], 422, "prev_hash"),
    ]
    with _channel(net, cfg) as ws:
        for entries, status, words in cases:
            reply = _ask(ws, {"op": "ledger", "entries": entries} if entries != "everything" else {"op": "ledger"})
            assert reply["op"] == "error" and reply["status"] == status and words in reply["detail"], (words, reply)
        for message, words in [({"op": "ledger", "entries": [good], "drop": 1}, "drop"),
                               ({"op": "ledger_head", "seq": 1}, "seq")]:
            reply = _ask(ws, message)
            assert reply["op"] == "error" and reply["status"] == 422 and words in reply["detail"], reply
        # re-pushing what the hub holds is harmless; the head is there to ask for
        assert _ask(ws, {"op": "ledger", "entries": before, "id": 3}) == {
            "op": "ledger_ok", "head": n, "added": 0, "present": n, "id": 3}
        assert _ask(ws, {"op": "ledger_head"}) == {"op": "ledger_ok", "head": n, "hash": head}
    assert _hub(net) == before


def test_who_may_read_the_hub_copy(net):
    node_id, root = net.nodes["DK"].id, net.root()
    outside = root.request("POST", "/api/organizations", json={"name": "Outside lab", "country": "FI"})["id"]
    users = {"eve": (outside, ["researcher"]), "olaf": (outside, ["organization_admin"]),
             "dkadmin": (net.nodes["DK"].organization_id, ["organization_admin"])}
    for name, (org, roles) in users.items():
        root.request("POST", "/api/users", json={"username": name, "password": net.password,
                                                 "organization_id": org, "roles": roles})

    def as_user(name: str) -> Client:
        return Client(net.hub_url, home=net.workdir / f"{name}-home").login(name, net.password)

    expected = net.client.node_ledger(node_id)
    for reader in (root, as_user("dkadmin")):
        assert reader.node_ledger(node_id) == expected
    for name in ("eve", "olaf"):
        with pytest.raises(HubError) as err:
            as_user(name).node_ledger(node_id)
        assert err.value.status == 403
    with pytest.raises(HubError) as err:
        root.node_ledger(10**6)
    assert err.value.status == 404
    for params in ({"after": -1}, {"limit": 0}, {"limit": 10**6}, {"after": "x"}):
        with pytest.raises(HubError) as err:
            root.request("GET", f"/api/nodes/{node_id}/ledger", params=params)
        assert err.value.status == 422
    page = root.request("GET", f"/api/nodes/{node_id}/ledger", params={"after": 2, "limit": 2})
    assert [e["seq"] for e in page["entries"]] == [3, 4] and (page["epoch"], page["epochs"]) == (1, 1)


def test_pull_and_verify_against_catch_a_ledger_truncated_after_replication(net, cfg, tmp_path):
    _wait_replicated(net, cfg)
    net.kill_node("DK", sig=15)
    pulled = tmp_path / "hub-copy.jsonl"
    r = _cli(net, "ledger", "pull", "--node", "DK", "--out", pulled)
    assert r.exit_code == 0 and "intact" in r.output, r.output
    n = len(pulled.read_text().splitlines())
    r = _cli(net, "ledger", "pull", "--node", net.nodes["DK"].id)  # by id, to stdout
    assert r.exit_code == 0 and r.stdout == pulled.read_text()
    r = _cli(net, "ledger", "verify", cfg.ledger_path, "--against", pulled)
    assert r.exit_code == 0 and f"agrees with all {n} entries" in r.output, r.output

    shutil.copytree(cfg.state_path, tmp_path / "before")
    with sqlite3.connect(cfg.ledger_path) as con:  # an insider drops the last runs
        con.execute("DROP TRIGGER entries_no_delete")
        con.execute("DELETE FROM entries WHERE seq > 5")
    key = Identity.load(cfg.key_dir).signing_public
    r = _cli(net, "ledger", "verify", cfg.ledger_path, "--key", key)
    assert r.exit_code == 0, r.output  # on its own the shortened chain looks intact
    r = _cli(net, "ledger", "verify", cfg.ledger_path, "--key", key, "--against", pulled)
    assert r.exit_code == 1 and f"entry 6: truncated (entries 6..{n} of {pulled} missing here)" in r.output, r.output
    r = _cli(net, "ledger", "verify", cfg.ledger_path, "--against", pulled, "--json")
    assert json.loads(r.stdout)["problems"][0]["seq"] == 6

    for p in cfg.state_path.glob("node.ledger*"):
        p.unlink()
    for p in (tmp_path / "before").glob("node.ledger*"):
        shutil.copy(p, cfg.state_path / p.name)
    net.start_node("DK")
    deadline = time.monotonic() + 30
    while len(_local(cfg)) <= n:  # its policy_loaded entry: the node is up again
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert len(_wait_replicated(net, cfg)) == n + 1  # pushed at start-up, after a check of entry n


def test_a_rewritten_node_ledger_cannot_overwrite_the_hub_copy(net, cfg, tmp_path):
    before = _wait_replicated(net, cfg)
    net.kill_node("DK", sig=15)
    ident = Identity.load(cfg.key_dir)
    # the insider holds the node's key: entry 3 is rewritten and everything after it re-signed
    fake = tmp_path / "node.ledger"
    with Ledger.open(cfg.ledger_path, create=False) as led:
        original = list(led.entries())
    with Ledger.open(fake, ident) as led:
        led.merge(original[:2])
        led.append("run_completed", "DK", {**original[2].payload, "result_sha256": "0" * 64})
    for p in cfg.state_path.glob("node.ledger*"):
        p.unlink()
    shutil.copy(fake, cfg.ledger_path)
    r = _cli(net, "ledger", "verify", cfg.ledger_path, "--key", ident.signing_public)
    assert r.exit_code == 0, r.output  # validly signed: only the hub copy tells
    pulled = tmp_path / "hub.jsonl"
    assert _cli(net, "ledger", "pull", "--node", "DK", "--out", pulled).exit_code == 0
    r = _cli(net, "ledger", "verify", cfg.ledger_path, "--against", pulled)
    assert r.exit_code == 1 and "BROKEN at entry 3: fork (differs from entry 3" in r.output, r.output

    log = net.nodes["DK"].log_path
    net.start_node("DK")  # it pushes at start-up; the hub refuses, the node keeps serving
    net.wait_nodes_online()
    deadline = time.monotonic() + 20
    while "refused this node's ledger entries" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.1)
    assert "409 fork at entry" in log.read_text()
    fed = HubFederation(net.client, net.collaboration_id, timeout=60)
    assert fed.run("nordfed.ping", {"echo": "still"})["DK"]["echo"] == "still"
    assert _hub(net) == before

