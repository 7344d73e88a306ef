"""Signing-key history and epochs of the hub copy of node ledgers, on a real hub (SQLite and PostgreSQL).

A node whose key pair is replaced keeps its ledger: the hub accepts entries by any key the node has registered and
`nordfed ledger pull` verifies each entry with the right one. A node reinstalled with a fresh ledger is refused as a
fork until root or an admin of its organization restarts its copy; the closed epoch stays intact and readable. A
hub database at revision 0001 holding ledger entries is upgraded with its entries in epoch 1, still verifying.
Pushes are driven over the node channel directly, as the node runtime sends them (tests/test_ledger_replication.py
does it with real node processes).
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import MetaData, func, select, text
from typer.testing import CliRunner
from websockets.sync.client import connect

from nordfed.cli import app
from nordfed.client import Client
from nordfed.hub import migrations
from nordfed.hub.auth import hash_secret, new_api_key
from nordfed.hub.db import open_hub_db
from nordfed.hub.models import LedgerEntry, LedgerRestart, NodeSigningKey
from nordfed.ledger import make_entry, verify_rows
from nordfed.ledger.entry import FIELDS, GENESIS
from nordfed.privacy.crypto import Identity
from test_hub_support import PASSWORD, ROOT_PASSWORD, Api, Network, hub_database, served_network

runner = CliRunner()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def net(request, tmp_path_factory) -> Network:
    with served_network(request.param, tmp_path_factory.mktemp(request.param)) as network:
        network.root.call("POST", "/users", 201, json={"username": "admin_b", "password": PASSWORD,
                                                       "organization_id": network.org["B"],
                                                       "roles": ["organization_admin"]})
        yield network


def chain(ident: Identity, n: int, start: int = 1, prev: str = GENESIS, actor: str = "n") -> list[dict[str, Any]]:
    out = []
    for seq in range(start, start + n):
        e = make_entry(seq, "run_completed", actor, {"task_id": seq, "run_id": seq}, prev, ident)
        out.append(e.to_dict())
        prev = e.entry_hash
    return out


def register(node: Api, ident: Identity) -> None:
    node.call("PUT", "/nodes/me/keys", json={"encryption_key": ident.encryption_public,
                                             "signing_key": ident.signing_public})


def ask(node: Api, message: dict[str, Any]) -> dict[str, Any]:
    url = node.base_url.replace("http://", "ws://") + "/api/runs/channel"
    with connect(url, additional_headers={"Authorization": f"Bearer {node.info['access_token']}"}) as ws:
        ws.send(json.dumps(message))
        return json.loads(ws.recv(timeout=10))


def rows_of(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Entries as JSON → stored rows for verify_rows (payload as JSON text)."""
    return [tuple(json.dumps(d[f], sort_keys=True, separators=(",", ":")) if f == "payload" else d[f]
                  for f in FIELDS) for d in entries]


def push(node: Api, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return ask(node, {"op": "ledger", "entries": entries})


def cli(home: Path, *args: object):
    return runner.invoke(app, [str(a) for a in args], env={"NORDFED_HOME": str(home), "COLUMNS": "200"})


def logged_in(net: Network, username: str, home: Path) -> Path:
    """A NORDFED_HOME as `nordfed login` leaves it."""
    Client(net.url, home=home).login(username, PASSWORD).save_state()
    return home


def test_a_key_change_keeps_the_chain_and_pull_verifies_every_entry(net, tmp_path):
    node = net.new_node("rekeyed")
    old, new = Identity.generate(), Identity.generate()
    register(node, old)
    first = chain(old, 3)
    assert push(node, first)["head"] == 3
    later = chain(new, 2, start=4, prev=first[-1]["entry_hash"])  # key dir replaced, same ledger file

    refused = push(node, later)  # not registered yet
    assert refused["status"] == 422 and "not one of this node's registered signing keys" in refused["detail"]
    register(node, new)
    register(node, new)  # every login re-registers: the history records a key once
    assert push(node, later) == {"op": "ledger_ok", "head": 5, "added": 2, "present": 0}

    copy = net.admin_a.call("GET", f"/nodes/{node.id}/ledger")
    assert [k["signing_key"] for k in copy["signing_keys"]] == [old.signing_public, new.signing_public]
    assert (copy["epoch"], copy["epochs"], copy["restarts"]) == (1, 1, [])
    assert copy["entries"] == first + later
    assert net.admin_a.call("GET", f"/nodes/{node.id}")["signing_key"] == new.signing_public

    home = logged_in(net, "admin_a", tmp_path / "home")
    pulled = tmp_path / "copy.jsonl"
    r = cli(home, "ledger", "pull", "--node", "rekeyed", "--out", pulled)
    assert r.exit_code == 0 and "5 entries of node rekeyed" in r.output and "intact" in r.output, r.output
    assert "epoch 1 of 1" in r.output
    rows = [json.loads(line) for line in pulled.read_text().splitlines()]
    assert rows == first + later
    # what pull did before the history: the current key alone rejects the entries signed before the change
    current_only = verify_rows(rows_of(rows), [new.signing_public])
    assert not current_only.ok and current_only.first.reason == "unknown_signer"


def test_a_reinstalled_node_is_refused_until_an_admin_of_its_organization_restarts_its_copy(net, tmp_path):
    node = net.new_node("reinstalled")
    old = Identity.generate()
    register(node, old)
    before = chain(old, 4, actor="reinstalled")
    assert push(node, before)["head"] == 4
    head_hash = before[-1]["entry_hash"]

    fresh_key = Identity.generate()  # rebuilt machine: new keys, empty ledger
    register(node, fresh_key)
    fresh = chain(fresh_key, 2, actor="reinstalled")
    refused = push(node, fresh)
    assert refused["status"] == 409 and "fork at entry 1" in refused["detail"], refused
    assert f"POST /api/nodes/{node.id}/ledger/restart" in refused["detail"]
    assert "nordfed ledger restart" in refused["detail"]

    admin_b = net.anon.login("admin_b")
    for who in (net.researcher_a, net.viewer_a, net.researcher_b, admin_b):
        r = who.request("POST", f"/nodes/{node.id}/ledger/restart")
        assert r.status_code == 403, (who.info, r.text)
    assert node.request("POST", f"/nodes/{node.id}/ledger/restart").status_code == 403  # nodes: users only
    assert net.admin_a.request("POST", "/nodes/999999/ledger/restart").status_code == 404
    assert net.admin_a.request("POST", "/nodes/0/ledger/restart").status_code == 422
    assert push(node, fresh)["status"] == 409  # nothing changed
    assert net.root.call("GET", f"/nodes/{node.id}/ledger")["epochs"] == 1

    home = logged_in(net, "admin_a", tmp_path / "home")
    r = cli(home, "ledger", "restart", "--node", "reinstalled", "--yes")
    assert r.exit_code == 0, r.output
    assert f"closed epoch 1 of node reinstalled (id {node.id}) at entry 4 ({head_hash[:12]}" in r.output

    assert ask(node, {"op": "ledger_head"}) == {"op": "ledger_ok", "head": 0, "hash": None}
    assert push(node, fresh) == {"op": "ledger_ok", "head": 2, "added": 2, "present": 0}
    assert push(node, before)["status"] == 409  # the old chain does not continue the new epoch

    current = net.researcher_b.call("GET", f"/nodes/{node.id}/ledger")  # a member of the collaboration
    assert (current["epoch"], current["epochs"], current["entries"]) == (2, 2, fresh)
    [restart] = current["restarts"]
    assert {k: restart[k] for k in ("node_id", "epoch", "head_seq", "head_hash", "restarted_by",
                                    "restarted_by_name")} == {
        "node_id": node.id, "epoch": 1, "head_seq": 4, "head_hash": head_hash,
        "restarted_by": net.admin_a.id, "restarted_by_name": "admin_a"}
    closed = net.researcher_b.call("GET", f"/nodes/{node.id}/ledger", params={"epoch": 1})
    assert (closed["epoch"], closed["epochs"], closed["entries"]) == (1, 2, before)
    paged = net.researcher_b.call("GET", f"/nodes/{node.id}/ledger", params={"epoch": 1, "after": 2, "limit": 1})
    assert [e["seq"] for e in paged["entries"]] == [3]
    assert net.root.request("GET", f"/nodes/{node.id}/ledger", params={"epoch": 3}).status_code == 404
    assert net.root.request("GET", f"/nodes/{node.id}/ledger", params={"epoch": 0}).status_code == 422
    assert net.researcher_c.request("GET", f"/nodes/{node.id}/ledger", params={"epoch": 1}).status_code == 403

    for epoch, n in (("1", 4), (None, 2)):
        out = tmp_path / f"epoch-{epoch}.jsonl"
        r = cli(home, "ledger", "pull", "--node", node.id, "--out", out, *(("--epoch", epoch) if epoch else ()))
        assert r.exit_code == 0 and f"{n} entries" in r.output and "intact" in r.output, r.output
        assert f"epoch {epoch or 2} of 2" in r.output
        assert [json.loads(line) for line in out.read_text().splitlines()] == (before if epoch else fresh)
    r = cli(home, "ledger", "pull", "--node", node.id, "--epoch", 7)
    assert r.exit_code == 2 and "no ledger epoch 7 (epochs 1..2)" in r.output


def test_an_empty_epoch_cannot_be_closed_and_deleting_a_node_takes_its_history(net, tmp_path):
    node = net.new_node("short-lived")
    ident = Identity.generate()
    register(node, ident)
    refused = net.root.request("POST", f"/nodes/{node.id}/ledger/restart")
    assert refused.status_code == 409 and "holds no entries" in refused.json()["detail"]
    assert push(node, chain(ident, 1))["head"] == 1
    done = net.root.call("POST", f"/nodes/{node.id}/ledger/restart", 201)
    assert (done["epoch"], done["head_seq"], done["restarted_by_name"]) == (1, 1, "root")
    again = net.root.request("POST", f"/nodes/{node.id}/ledger/restart")  # a second click: epoch 2 is empty
    assert again.status_code == 409 and "epoch 2 of node" in again.json()["detail"]
    assert push(node, chain(ident, 1))["head"] == 1
    with ThreadPoolExecutor(4) as pool:  # four admins at once: one closes epoch 2, the others find epoch 3 empty
        codes = sorted(pool.map(lambda _: net.root.request("POST", f"/nodes/{node.id}/ledger/restart").status_code,
                                range(4)))
    assert codes == [201, 409, 409, 409]
    assert net.root.call("GET", f"/nodes/{node.id}/ledger")["epochs"] == 3

    home = logged_in(net, "researcher_a", tmp_path / "home")
    r = cli(home, "ledger", "restart", "--node", node.id, "--yes")
    assert r.exit_code == 2 and "403" in r.output and "organization_admin" in r.output, r.output

    net.admin_a.call("DELETE", f"/nodes/{node.id}")  # no runs: allowed; the copy, keys and restarts go with it
    assert net.root.request("GET", f"/nodes/{node.id}/ledger").status_code == 404


def _at_revision_0001(url: str) -> Any:
    engine = open_hub_db(url, create=False).engine
    if engine.dialect.name == "postgresql":
        schema = url.rsplit("schema=", 1)[1]
        with engine.begin() as con:
            con.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    with engine.begin() as con:
        command.upgrade(migrations.alembic_config(con), "0001")
    return engine


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_upgrade_from_revision_0001_keeps_the_entries_which_still_verify(kind, tmp_path):
    from nordfed.hub.app import create_app
    from nordfed.hub.server import HubServer

    old, new = Identity.generate(), Identity.generate()
    entries = chain(old, 3, actor="legacy")  # pushed under the first key ...
    entries += chain(new, 2, start=4, prev=entries[-1]["entry_hash"], actor="legacy")  # ... then under a new one
    key_id, api_key = new_api_key()
    day = [datetime(2026, 11, d, 10, tzinfo=UTC) for d in range(1, 10)]
    with hub_database(kind, tmp_path) as url:
        engine = _at_revision_0001(url)
        with engine.begin() as con:  # as nordfed at revision 0001 wrote them
            tables = MetaData()
            tables.reflect(con)

            def add(table_name: str, /, **values: Any) -> int | None:
                table = tables.tables[table_name]
                query = table.insert().values(**values)
                if "id" not in table.c:
                    con.execute(query)
                    return None
                return con.execute(query.returning(table.c.id)).scalar_one()

            org = add("hub_organization", name="O", country="NO", created_at=day[0])
            collab = add("hub_collaboration", name="c", created_at=day[0])
            add("hub_collaboration_organization", collaboration_id=collab, organization_id=org)
            node = {"organization_id": org, "collaboration_id": collab, "created_at": day[0]}
            legacy = add("hub_node", name="legacy", key_id=key_id, api_key_hash=hash_secret(api_key),
                         encryption_key=new.encryption_public, signing_key=new.signing_public, **node)
            keyless = add("hub_node", name="keyless", key_id="other", api_key_hash="x", **node)
            for i, e in enumerate(entries):
                add("hub_ledger_entry", node_id=legacy, seq=e["seq"], kind=e["kind"], entry_hash=e["entry_hash"],
                    received_at=day[i + 1],
                    entry=json.dumps(e, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
        engine.dispose()

        with HubServer(create_app(url, root_password=ROOT_PASSWORD)) as server:  # every start upgrades to head
            root = Api(server.url).login("root", ROOT_PASSWORD)
            copy = root.call("GET", f"/nodes/{legacy}/ledger")
            assert (copy["epoch"], copy["epochs"], copy["restarts"]) == (1, 1, [])
            assert copy["entries"] == entries
            keys = [k["signing_key"] for k in copy["signing_keys"]]
            assert keys == [old.signing_public, new.signing_public]  # learnt from the entries each one signed
            assert copy["signing_keys"][0]["registered_at"].startswith("2026-11-02T10:00:00")
            rep = verify_rows(rows_of(copy["entries"]), keys)
            assert rep.ok and rep.count == 5, rep.summary()
            assert root.call("GET", f"/nodes/{keyless}/ledger")["signing_keys"] == []

            node = Api(server.url).node_login(api_key)
            register(node, new)  # its next login: nothing new to record
            assert push(node, chain(new, 1, start=6, prev=entries[-1]["entry_hash"], actor="legacy"))["head"] == 6
        engine = open_hub_db(url, create=False).engine
        try:
            assert migrations.status(engine).state == "current"
            with engine.connect() as con:
                assert con.execute(select(func.count()).select_from(NodeSigningKey)).scalar_one() == 2
                assert con.execute(select(func.count()).select_from(LedgerRestart)).scalar_one() == 0
                assert con.execute(select(func.count()).select_from(LedgerEntry).where(
                    LedgerEntry.epoch == 1)).scalar_one() == 6
        finally:
            engine.dispose()
