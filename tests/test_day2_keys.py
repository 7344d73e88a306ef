"""Day 2 on a real network (hub and node processes on loopback): keys and pins change.

- A researcher logs in from a new machine: `nordfed login` warns that her keys replaced those the hub published,
  and a site that still pins her earlier key refuses her task naming that key and where the site pins the new one.
- A site upgraded nordfed without re-pinning (or the researcher runs another version): the refusal names the pinned
  hash, which side is older and what to run; the node says so at start, naming the algorithm.
- A node's key folder was wiped: the node logs its new keys and the exact `nordfed node trust` command; the
  researcher's `task create` refuses in one line naming that command (not a traceback), and following it works.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.client import Client
from nordfed.node.localnet import LocalNetwork, tiny_cdm
from test_network import _mispin_dq  # the site pins an older nordfed.dq than the code it runs

pytestmark = pytest.mark.network
runner = CliRunner()


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    wd = tmp_path_factory.mktemp("day2")
    sites = {"DK": tiny_cdm(f"duckdb:///{wd / 'DK.duckdb'}", 40)}
    with LocalNetwork(wd, sites, policy_hook=_mispin_dq, poll_timeout_s=5) as network:
        network.client.save_state()  # as `nordfed login` leaves it, for the CLI
        yield network


def _run_log(client: Client, collaboration_id: int, algorithm: str, params: dict) -> tuple[str, str]:
    task = client.create_task(collaboration_id, algorithm, params)
    done = client.wait(task["id"], timeout=60)
    run = done["runs"][0]
    return run["status"], run["log"]


def _cli(net: LocalNetwork, home, *args: str, **env: str):
    return runner.invoke(app, list(args), env={"NORDFED_HOME": str(home), "COLUMNS": "400", **env})


def test_a_new_login_warns_and_the_site_refuses_her_new_key_naming_the_pinned_one(net):
    laptop = net.workdir / "alice-laptop"
    r = _cli(net, laptop, "login", "--hub", net.hub_url, "-u", net.researcher, NORDFED_PASSWORD=net.password)
    assert r.exit_code == 0, r.output
    assert "replace those the hub published" in r.output and "policy.researchers" in r.output
    pinned = net.client.identity.signing_public
    assert pinned in r.output  # the earlier key, so she can tell the sites which one to replace
    try:
        status, log = _run_log(Client.from_state(laptop), net.collaboration_id, "nordfed.ping", {"echo": "x"})
        assert status == "refused"
        assert "signature does not verify" in log
        assert f"pins for researcher {net.researcher!r} ({pinned[:12]}…)" in log
        assert "node.yaml (policy.researchers)" in log
    finally:
        net.client.ensure_keys()  # her original keys again, for the other tests
    # her original machine still works: the site pins that key
    assert _run_log(net.client, net.collaboration_id, "nordfed.ping", {"echo": "x"})[0] == "completed"


def test_a_stale_pin_names_the_pinned_hash_which_side_is_older_and_what_to_run(net):
    status, log = _run_log(net.client, net.collaboration_id, "nordfed.dq", {})
    assert status == "refused"
    assert "code hash" in log and "not pinned (pinned: 000000000000…)" in log
    assert "node.yaml pin is older" in log and "nordfed algorithms --json" in log
    # said once at start too, naming the algorithm
    node_log = net.nodes["DK"].log_path.read_text()
    assert "do not match the code of this nordfed" in node_log and "nordfed.dq: pinned 1 000000000000…" in node_log


def _wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_a_node_with_new_keys_is_announced_and_refused_in_one_line_naming_the_trust_command(net):
    home = net.workdir / "client-home"
    assert _cli(net, home, "task", "create", "-c", str(net.collaboration_id), "-a", "nordfed.ping",
                "--params", '{"echo": "x"}').exit_code == 0  # pins DK's keys on first use
    node = net.nodes["DK"]
    net.kill_node("DK")
    keys = node.config_path.parent / "keys"
    shutil.move(keys, keys.with_name("keys.lost"))  # the site's key folder is gone
    net.start_node("DK")
    _wait_for(lambda: "keys differ from those it registered before" in node.log_path.read_text())
    new_signing = (keys / "signing.pub").read_text().strip()
    new_encryption = (keys / "encryption.pub").read_text().strip()
    trust = f"nordfed node trust DK -c {net.collaboration_id} --signing-key {new_signing}"
    assert f"{trust} --encryption-key {new_encryption}" in node.log_path.read_text()
    net.wait_nodes_online()

    r = _cli(net, home, "task", "create", "-c", str(net.collaboration_id), "-a", "nordfed.ping")
    assert r.exit_code == 1
    assert "Traceback" not in r.output and r.output.startswith("error: node DK (id")
    assert f"nordfed node trust DK -c {net.collaboration_id} --signing-key KEY_FROM_THE_SITE" in r.output
    study = Path(__file__).parents[1] / "studies" / "crc_survival_by_stage.yaml"
    r = _cli(net, home, "study", "run", str(study), "--hub", net.hub_url, "--collaboration",
             str(net.collaboration_id), "--out", str(net.workdir / "never.html"))
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output  # a study stops the same way
    assert "KEY_FROM_THE_SITE" in r.output and not (net.workdir / "never.html").exists()
    # the site hands over its new keys; the researcher pins them and goes on
    r = _cli(net, home, *trust.split()[1:], "--encryption-key", new_encryption)
    assert r.exit_code == 0, r.output
    r = _cli(net, home, "task", "create", "-c", str(net.collaboration_id), "-a", "nordfed.ping",
             "--params", '{"echo": "x"}')
    assert r.exit_code == 0 and "completed" in r.output, r.output
