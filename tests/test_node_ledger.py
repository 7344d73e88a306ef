"""DESIGN invariant 3 at the node: a real node process against a real hub writes every run it sees, and the
policy it starts with, to its own ledger; `nordfed node ledger verify` / `nordfed ledger verify` check it and
detect tampering; a node refuses to extend a tampered chain."""

from __future__ import annotations

import hashlib
import secrets
import shutil
import sqlite3
import time

import pytest
import yaml
from nacl.signing import SigningKey
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.cli.ledger import _row_of
from nordfed.client import HubFederation
from nordfed.fed.protocol import AlgorithmError, get_algorithm
from nordfed.ledger import Ledger, LedgerError
from nordfed.ledger.verify import verify_rows
from nordfed.node.audit import PUSH_PROBE_S
from nordfed.node.localnet import LocalNetwork, tiny_cdm
from nordfed.node.runtime import NodeRuntime
from nordfed.policy.node import load_node_config
from nordfed.privacy.crypto import ENC_PRIVATE, SIGN_PRIVATE, SIGN_PUBLIC, Identity, VerificationError

runner = CliRunner()
ENV = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    wd = tmp_path_factory.mktemp("ledgernet")
    sites = {"DK": tiny_cdm(f"duckdb:///{wd / 'DK.duckdb'}", 40, seed=3)}
    # nordfed.characterization is registered but not pinned: the node refuses it by policy
    with LocalNetwork(wd, sites, pinned=["nordfed.count", "nordfed.ping"], poll_timeout_s=10) as network:
        yield network


def _entries(net) -> list:
    cfg = load_node_config(net.nodes["DK"].config_path)
    with Ledger.open(cfg.ledger_path, create=False) as led:
        return list(led.entries())


def _wait_for(net, n: int, timeout: float = 20.0) -> list:
    # the node appends before it patches the hub, so the entries are there once the task finished
    deadline = time.monotonic() + timeout
    while len(es := _entries(net)) < n:
        assert time.monotonic() < deadline, [e.kind for e in es]
        time.sleep(0.05)
    return es


def _raw_results(net, task_id: int) -> list[dict]:
    return net.client.request("GET", f"/api/tasks/{task_id}/results")


def test_runs_are_recorded_in_order_and_verify_on_the_running_node(net):
    fed = HubFederation(net.client, net.collaboration_id, timeout=60)
    cfg = load_node_config(net.nodes["DK"].config_path)
    assert fed.run("nordfed.count", {})["DK"]["persons"] == 40
    t_ok = fed.last_task_id
    with pytest.raises(AlgorithmError) as exc:
        fed.run("nordfed.characterization", {})
    assert exc.value.refused
    t_refused = fed.last_task_id
    marker = f"MARKER-{secrets.token_hex(6)}"
    with pytest.raises(AlgorithmError):
        fed.run("nordfed.ping", {"sleep": 99, "echo": marker})  # the algorithm raises ValueError
    t_failed = fed.last_task_id

    es = _wait_for(net, 7)
    assert [e.kind for e in es] == ["policy_loaded", "task_received", "run_completed", "task_received",
                                    "run_refused", "task_received", "run_failed"]
    assert [e.seq for e in es] == list(range(1, 8)) and {e.actor for e in es} == {"DK"}
    assert es[0].payload["policy_sha256"] == cfg.policy.sha256()
    assert es[0].payload["file_sha256"] == hashlib.sha256(net.nodes["DK"].config_path.read_bytes()).hexdigest()

    algo, [res] = get_algorithm("nordfed.count"), _raw_results(net, t_ok)
    params_sha = es[1].payload.pop("params_sha256")
    assert es[1].payload == {"task_id": t_ok, "run_id": res["run_id"], "algorithm": f"nordfed.count@{algo.version}",
                             "code_hash": algo.code_hash, "username": net.researcher}
    # which request it was: the signed parameters' hash (an empty request and the ping's marker differ)
    assert len(params_sha) == 64 and params_sha != es[5].payload["params_sha256"]
    # the ledger pins exactly the ciphertext the hub holds for the researcher
    assert es[2].payload == {"task_id": t_ok, "run_id": res["run_id"],
                             "result_sha256": hashlib.sha256(res["result"].encode()).hexdigest()}
    assert es[3].payload["task_id"] == t_refused and es[3].payload["algorithm"].startswith("nordfed.characterization@")
    assert es[4].payload["task_id"] == t_refused and "allowlist" in es[4].payload["reason"]
    # a failure is recorded in the node's words; the algorithm's own message only as a hash of the run log line
    [res] = _raw_results(net, t_failed)
    message = res["log"].splitlines()[-1].split("failed: ", 1)[1]
    assert message.startswith("ValueError: sleep must be")
    assert es[6].payload == {"task_id": t_failed, "run_id": res["run_id"], "reason": "algorithm raised ValueError",
                             "detail_sha256": hashlib.sha256(message.encode()).hexdigest()}
    raw = b"".join(p.read_bytes() for p in cfg.ledger_path.parent.glob("node.ledger*"))  # db, -wal
    assert marker.encode() not in raw and b"sleep must be" not in raw

    r = runner.invoke(app, ["node", "ledger", "verify", "--config", str(net.nodes["DK"].config_path)], env=ENV)
    assert r.exit_code == 0 and "intact: 7 entries" in r.output, r.output
    r = runner.invoke(app, ["node", "ledger", "show", "--config", str(net.nodes["DK"].config_path)], env=ENV)
    assert r.exit_code == 0 and "run_refused" in r.output and "BROKEN" not in r.output, r.output


def test_policy_change_is_recorded_at_restart(net):
    h = net.nodes["DK"]
    n0 = len(_entries(net))
    net.kill_node("DK", sig=15)
    raw = yaml.safe_load(h.config_path.read_text())
    raw["policy"]["exact_event_times"] = True
    h.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    net.start_node("DK")
    es = _wait_for(net, n0 + 2)
    assert [e.kind for e in es[n0:]] == ["policy_loaded", "policy_changed"]
    loaded, changed = es[n0].payload, es[n0 + 1].payload
    assert loaded["exact_event_times"] is True
    assert changed["previous_policy_sha256"] == es[0].payload["policy_sha256"] != loaded["policy_sha256"]
    assert changed["changed"] == {"exact_event_times": {"from": False, "to": True}}
    net.kill_node("DK", sig=15)
    net.start_node("DK")  # same policy again: loaded, not changed
    es = _wait_for(net, n0 + 3)
    time.sleep(0.3)
    assert [e.kind for e in _entries(net)[n0 + 2:]] == ["policy_loaded"]
    net.wait_nodes_online()


def test_a_site_can_keep_error_details_to_itself(net):
    # run logs reach the hub in plain text, and a library's message may quote a row's value
    h = net.nodes["DK"]
    raw = yaml.safe_load(h.config_path.read_text())
    net.kill_node("DK", sig=15)
    h.config_path.write_text(yaml.safe_dump({**raw, "policy": {**raw["policy"], "share_error_details": False}},
                                            sort_keys=False))
    try:
        net.start_node("DK")
        net.wait_nodes_online()
        fed = HubFederation(net.client, net.collaboration_id, timeout=60)
        marker = f"MARKER-{secrets.token_hex(6)}"
        with pytest.raises(AlgorithmError) as exc:
            fed.run("nordfed.ping", {"sleep": 99, "echo": marker})
        [res] = _raw_results(net, fed.last_task_id)
        assert "ValueError" in exc.value.message and "details withheld" in exc.value.message
        assert "sleep must be" not in exc.value.message and "sleep must be" not in res["log"]
    finally:
        net.kill_node("DK", sig=15)
        h.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        net.start_node("DK")
        net.wait_nodes_online()


def test_a_replaced_key_pair_needs_its_predecessor_named_and_the_hub_copy_verifies_under_both(net):
    h = net.nodes["DK"]
    cfg = load_node_config(h.config_path)
    old_key = (cfg.key_dir / SIGN_PUBLIC).read_text().strip()
    net.kill_node("DK", sig=15)
    # the signing key is replaced on purpose (the encryption key stays: researchers' clients pin it); the ledger
    # file stays
    kept = Identity.load(cfg.key_dir)
    for private in (ENC_PRIVATE, SIGN_PRIVATE):
        (cfg.key_dir / private).unlink()
    Identity(kept.encryption_key, SigningKey.generate()).save(cfg.key_dir)
    with pytest.raises(LedgerError, match="previous_signing_keys"):
        NodeRuntime(cfg)  # entries by a key the node does not know: refused until the operator names it
    raw = yaml.safe_load(h.config_path.read_text())
    raw["previous_signing_keys"] = [old_key]
    h.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    n0 = len(_entries(net))
    net.start_node("DK")
    new_key = (cfg.key_dir / SIGN_PUBLIC).read_text().strip()
    deadline = time.monotonic() + 20
    while net.client.request("GET", f"/api/nodes/{h.id}")["signing_key"] != new_key:  # published at its login
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # researchers pin node keys on first use: the changed key is refused until they pin the one the site gives them
    with pytest.raises(VerificationError, match="nordfed node trust"):
        net.client.nodes(net.collaboration_id)
    with pytest.raises(VerificationError, match="nothing was pinned"):
        net.client.trust_node(net.collaboration_id, "DK", old_key)  # not what the hub publishes now
    assert net.client.trust_node(net.collaboration_id, "DK", new_key)["id"] == h.id
    assert len(net.client.nodes(net.collaboration_id)) == 1
    fed = HubFederation(net.client, net.collaboration_id, timeout=60)
    assert fed.run("nordfed.count", {})["DK"]["persons"] == 40
    es = _wait_for(net, n0 + 3)  # policy_loaded, task_received, run_completed: signed by the new key
    assert {e.signer for e in es[:n0]} == {old_key} and {e.signer for e in es[n0:]} == {new_key}
    r = runner.invoke(app, ["node", "ledger", "verify", "--config", str(h.config_path)], env=ENV)
    assert r.exit_code == 0 and f"intact: {len(es)} entries" in r.output, r.output
    # the hub took the entries under the newly registered key and verifies its copy under the node's key history
    deadline = time.monotonic() + 20
    while len((copy := net.client.node_ledger_copy(h.id))["entries"]) < len(es):
        assert time.monotonic() < deadline, len(copy["entries"])
        time.sleep(0.1)
    keys = [k["signing_key"] for k in copy["signing_keys"]]
    assert set(keys) == {old_key, new_key}
    assert verify_rows([_row_of(d) for d in copy["entries"]], keys).ok
    assert not verify_rows([_row_of(d) for d in copy["entries"]], [new_key]).ok


def test_tampering_is_detected_and_the_node_will_not_extend_it(net, tmp_path):
    h = net.nodes["DK"]
    cfg = load_node_config(h.config_path)
    net.kill_node("DK", sig=15)
    shutil.copytree(cfg.state_path, tmp_path / "before")
    # the node's writers: its key, and the one it had before the rotation above
    keys = [arg for k in [(cfg.key_dir / SIGN_PUBLIC).read_text().strip(), *cfg.previous_signing_keys]
            for arg in ("--key", k)]
    r = runner.invoke(app, ["ledger", "verify", str(cfg.ledger_path), *keys], env=ENV)
    assert r.exit_code == 0, r.output

    # an insider rewrites a refusal into something innocuous (the append-only triggers are no obstacle to them)
    with sqlite3.connect(cfg.ledger_path) as con:
        con.execute("DROP TRIGGER entries_no_update")
        con.execute("UPDATE entries SET payload = replace(payload, 'allowlist', 'whatever') WHERE seq = 5")
    r = runner.invoke(app, ["ledger", "verify", str(cfg.ledger_path), *keys], env=ENV)
    assert r.exit_code == 1 and "BROKEN at entry 5" in r.output and "hash_mismatch" in r.output, r.output
    r = runner.invoke(app, ["node", "ledger", "verify", "--config", str(h.config_path)], env=ENV)
    assert r.exit_code == 1 and "BROKEN at entry 5" in r.output, r.output
    with pytest.raises(LedgerError, match="BROKEN at entry 5"):
        NodeRuntime(cfg)  # refuses before it contacts the hub

    # removing the last entry is caught by a published checkpoint
    for p in cfg.state_path.glob("node.ledger*"):
        p.unlink()
    for p in (tmp_path / "before").glob("node.ledger*"):
        shutil.copy(p, cfg.state_path / p.name)
    with Ledger.open(cfg.ledger_path, create=False) as led:
        head = led.checkpoint()
    with sqlite3.connect(cfg.ledger_path) as con:
        con.execute("DROP TRIGGER entries_no_delete")
        con.execute("DELETE FROM entries WHERE seq = ?", (head.seq,))
    r = runner.invoke(app, ["ledger", "verify", str(cfg.ledger_path), *keys, "--checkpoint", str(head)],
                      env=ENV)
    assert r.exit_code == 1 and "truncated" in r.output, r.output


def test_a_rebuilt_node_is_refused_as_a_fork_until_an_admin_restarts_its_hub_copy(net):
    # runs last: the node is rebuilt with new keys and an empty ledger (the one above was tampered with anyway)
    h = net.nodes["DK"]
    cfg = load_node_config(h.config_path)
    net.kill_node("DK", sig=15)
    before = net.client.node_ledger_copy(h.id)
    assert before["entries"]  # pushed while the tests above ran: the fresh chain will collide with it
    for p in [*cfg.state_path.glob("node.ledger*"), *(cfg.key_dir / n for n in (ENC_PRIVATE, SIGN_PRIVATE))]:
        p.unlink(missing_ok=True)
    Identity.generate().save(cfg.key_dir)
    raw = yaml.safe_load(h.config_path.read_text())
    raw.pop("previous_signing_keys", None)
    h.config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    log_start = h.log_path.stat().st_size
    net.start_node("DK")
    deadline = time.monotonic() + 30
    while "refused this node's ledger entries" not in h.log_path.read_text(errors="replace")[log_start:]:
        assert time.monotonic() < deadline, "the hub never refused the fresh chain"
        time.sleep(0.2)
    assert net.client.node_ledger_copy(h.id)["entries"] == before["entries"]  # the old copy is untouched
    restarted_at = time.monotonic()
    net.root().restart_node_ledger(h.id)
    # the node notices the new epoch at its next probe (PUSH_PROBE_S), not after the 5-minute retry
    new_key = (cfg.key_dir / SIGN_PUBLIC).read_text().strip()
    while not (copy := net.client.node_ledger_copy(h.id))["entries"]:
        assert time.monotonic() - restarted_at < PUSH_PROBE_S + cfg.poll_timeout_s + 10
        time.sleep(0.2)
    assert copy["epoch"] == before["epoch"] + 1 and {e["signer"] for e in copy["entries"]} == {new_key}
    assert copy["entries"][0]["seq"] == 1 and copy["entries"][0]["kind"] == "policy_loaded"
    assert net.client.node_ledger_copy(h.id, epoch=before["epoch"])["entries"] == before["entries"]
