"""Secure aggregation: masked results sum to the clear sum, and no single masked result tells anything.

The network half runs a real hub and three nodes whose policy releases ``nordfed.count`` only as a secure sum
over all three.
"""

from __future__ import annotations

import secrets
import time

import numpy as np
import pandas as pd
import pytest
from nacl.public import PrivateKey

from nordfed.client import HubFederation
from nordfed.client.api import _algorithm_ref
from nordfed.fed import wire
from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from nordfed.ledger import Ledger
from nordfed.node.localnet import LocalNetwork, tiny_sites
from nordfed.policy.node import load_node_config
from nordfed.privacy import secure_sum as S
from nordfed.privacy.crypto import VerificationError, b64, seal_task_input


def _keys(names: str = "ABCD") -> tuple[dict[str, PrivateKey], dict[str, str]]:
    keys = {s: PrivateKey.generate() for s in names}
    return keys, {s: b64(bytes(k.public_key)) for s, k in keys.items()}


def _masked(results: dict[str, object], session: bytes = b"round") -> list[dict]:
    keys, peers = _keys("".join(results))
    # through the wire, as a node sends them
    return [wire.decode(wire.encode(S.mask(r, s, keys[s], peers, session))) for s, r in results.items()]


def test_masked_results_sum_to_the_clear_sum() -> None:
    rng = np.random.default_rng(1)
    results = {s: {"n": int(rng.integers(1, 1000)), "grad": rng.standard_normal(7) * 10.0 ** rng.integers(-3, 9),
                   "hess": rng.standard_normal((3, 3)) * 1e4, "loss": float(rng.random()), "label": "x",
                   "rows": [1.5, None, {"deep": np.int64(3)}]} for s in "ABCD"}
    total = S.unmask_sum(_masked(results))
    assert total["n"] == sum(r["n"] for r in results.values()) and isinstance(total["n"], int)
    for key in ("grad", "hess", "loss"):
        clear = sum(np.asarray(r[key]) for r in results.values())
        # fixed point with 64 fraction bits: 2**-65 per number per site, plus float64 rounding of the terms
        bound = 4 * 2.0**-65 + 4 * np.abs(clear).max() * 2.0**-52
        assert np.abs(np.asarray(total[key]) - clear).max() <= bound
    assert np.shape(total["hess"]) == (3, 3)
    assert total["label"] == "x" and total["rows"] == [6.0, None, {"deep": 12}]


def test_fixed_point_is_exact_to_its_resolution_at_every_scale() -> None:
    rng = np.random.default_rng(2)
    for scale in range(-18, 16):
        v = rng.standard_normal(500) * 10.0**scale
        # zero, the resolution, the limit, and the sign's edges of the two encodings (2**63 in fixed point)
        v[:6] = [0.0, -(2.0**-65), 2.0**55, -(2.0**-2 + 2.0**-54), -0.5 - 2.0**-53, 0.5 + 2.0**-53]
        back = S._float(S._fixed(v))
        assert (np.abs(back - v) <= np.maximum(2.0**-65, np.abs(v) * 2.0**-52)).all(), scale


def test_one_masked_result_looks_random_and_changes_every_round() -> None:
    keys, peers = _keys("AB")
    zeros = {"grad": np.zeros(4000)}
    a1 = S.mask(zeros, "A", keys["A"], peers, b"round 1")
    a2 = S.mask(zeros, "A", keys["A"], peers, b"round 2")
    words = a1["words"]
    assert not (words == 0).any()  # a zero vector does not show through
    bits = np.unpackbits(words.view(np.uint8))
    assert abs(bits.mean() - 0.5) < 0.01  # 256 000 bits, sd 0.001: uniform
    assert not (a1["words"] == a2["words"]).any()  # the same numbers mask differently in another round
    # and the other site's mask cancels it exactly
    b1 = S.mask(zeros, "B", keys["B"], peers, b"round 1")
    assert (S.unmask_sum([a1, b1])["grad"] == 0).all()


def test_sites_in_different_rounds_do_not_cancel() -> None:
    """A researcher who signs other parameters for one site (so the round ids differ) gets noise, not the
    other sites' numbers by difference."""
    keys, peers = _keys("AB")
    a = S.mask({"x": 5.0}, "A", keys["A"], peers, S.round_id("n1", "algo", "params", peers))
    b = S.mask({"x": 7.0}, "B", keys["B"], peers, S.round_id("n1", "algo", "other params", peers))
    assert abs(S.unmask_sum([a, b])["x"] - 12.0) > 1e6


@pytest.mark.parametrize("bad, match", [
    ({"x": float("nan")}, "not finite"),
    ({"x": np.array([1.0, np.inf])}, "not finite"),
    ({"x": 2.0**57}, "magnitude"),
    ({"x": np.array(["a"])}, "cannot sum"),
    ({S.MARK: 1}, "may not use the key"),
])
def test_results_that_cannot_be_masked_are_refused(bad: dict, match: str) -> None:
    keys, peers = _keys("AB")
    with pytest.raises(S.SecureSumError, match=match):
        S.mask(bad, "A", keys["A"], peers, b"r")


def test_sums_that_do_not_add_up_are_refused() -> None:
    parts = _masked({"A": {"x": 1.0, "s": "a"}, "B": {"x": 2.0, "s": "a"}, "C": {"x": 3.0, "s": "a"}})
    with pytest.raises(S.SecureSumError, match="one result from each of A, B, C"):
        S.unmask_sum(parts[:2])
    with pytest.raises(S.SecureSumError, match="without masking"):
        S.unmask_sum([*parts[:2], {"x": 3.0}])
    other = _masked({"A": {"x": 1.0, "s": "a"}, "B": {"x": 2.0, "s": "b"}})
    with pytest.raises(S.SecureSumError, match="different shapes"):
        S.unmask_sum(other)
    keys, peers = _keys("AB")
    with pytest.raises(VerificationError, match="does not give 'A' this site's key"):
        S.mask({"x": 1.0}, "A", keys["A"], {**peers, "A": peers["B"]}, b"r")


def test_in_process_aggregate_is_the_sum_of_the_sites_results() -> None:
    rng = np.random.default_rng(3)
    frames = {s: pd.DataFrame({"y": rng.integers(0, 2, n), "a": rng.standard_normal(n), "b": rng.random(n)})
              for s, n in (("DK", 300), ("NO", 200), ("SE", 150))}
    fed = InProcessFederation.from_frames(frames)
    params = {"covariates": ["a", "b"], "outcome": "y",
              "points": [{"fold": -1, "beta": [0.1, -0.2, 0.3], "center": [0.0, 0.0], "scale": [1.0, 1.0]}]}
    each = fed.run("nordfed.lasso.newton", params)
    total = fed.aggregate("nordfed.lasso.newton", params)["results"][0]
    for key in ("loss", "grad", "hess"):
        clear = sum(np.asarray(r["results"][0][key]) for r in each.values())
        np.testing.assert_allclose(total[key], clear, rtol=1e-13, atol=1e-11)
    # a refusal still names its site
    small = InProcessFederation.from_frames({**frames, "IS": frames["SE"].head(5)})
    with pytest.raises(AlgorithmError) as exc:
        small.aggregate("nordfed.lasso.newton", params)
    assert exc.value.site == "IS" and exc.value.refused


# ------------------------------------------------------------------------------------------- through a hub
SITES = {"DK": 60, "NO": 45, "SE": 33}


def _secure_count_only(site: str, policy: dict) -> dict:
    return {**policy, "secure_aggregation": ["nordfed.count"], "secure_aggregation_min_sites": 3}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    wd = tmp_path_factory.mktemp("secsum")
    with LocalNetwork(wd, tiny_sites(wd, SITES), policy_hook=_secure_count_only, poll_timeout_s=10) as network:
        yield network


@pytest.fixture(scope="module")
def fed(net) -> HubFederation:
    return HubFederation(net.client, net.collaboration_id, timeout=60)


def test_hub_sum_equals_the_sites_counts_and_each_result_is_masked(net, fed) -> None:
    total = fed.aggregate("nordfed.count", {})
    assert total["persons"] == sum(SITES.values())
    assert sum(v for v in total["by_sex"].values()) == sum(SITES.values())
    # what the researcher holds of one node is its masked words: not the node's count
    results = net.client.results(fed.last_task_id, net.collaboration_id)
    assert len(results) == 3
    for r in results:
        assert S.is_masked(r.value) and S._float(np.asarray(r.value["words"]).reshape(-1, 2))[0] not in SITES.values()
    # each node's ledger says the result it sealed was masked
    for handle in net.nodes.values():
        with Ledger.open(load_node_config(handle.config_path).ledger_path, create=False) as led:
            done = [e.to_dict() for e in led.entries() if e.kind == "run_completed"]
        assert done and done[-1]["payload"]["task_id"] == fed.last_task_id
        assert done[-1]["payload"].get("secure_sum") is True


def test_policy_refuses_the_algorithm_on_its_own_and_over_too_few_sites(net, fed) -> None:
    with pytest.raises(AlgorithmError) as exc:
        fed.run("nordfed.count", {})
    assert exc.value.refused and "only under secure aggregation" in exc.value.message
    with pytest.raises(AlgorithmError) as exc:
        fed.aggregate("nordfed.count", {}, sites=["DK", "NO"])
    assert exc.value.refused and "at least 3" in exc.value.message


def test_a_substituted_peer_key_is_refused(net, fed) -> None:
    """A researcher who lists a key of her own for a peer could strip that pair's mask: the node checks every
    peer key against the hub's listing and refuses."""
    client = net.client
    nodes = client.nodes(net.collaboration_id)
    mine = PrivateKey.generate()
    peers = {str(n["id"]): n["encryption_key"] for n in nodes}
    victim, other = nodes[0], nodes[1]
    peers[str(other["id"])] = b64(bytes(mine.public_key))
    name, version, code_hash = _algorithm_ref("nordfed.count")
    payload = {"nonce": secrets.token_hex(16), "algorithm": name, "version": version, "code_hash": code_hash,
               "params": b64(wire.encode({})), "username": client.user.get("username"),
               "organization_id": client.user.get("organization_id"),
               "encryption_key": client.identity.encryption_public, "created_at": time.time(),
               "secure_sum": {"peers": peers}}
    task = client.request("POST", "/api/tasks", json={
        "collaboration_id": net.collaboration_id, "algorithm": name, "version": version, "code_hash": code_hash,
        "runs": [{"node_id": n["id"], "input": seal_task_input(client.identity, payload, n["encryption_key"])}
                 for n in nodes]})
    client.wait(task["id"], timeout=60)
    runs = {r.node_name: r for r in client.results(task["id"], net.collaboration_id)}
    assert runs[victim["name"]].status == "refused"
    assert "not the one the hub publishes" in runs[victim["name"]].log
    assert runs[victim["name"]].value is None



def test_cli_creates_a_secure_sum_task_and_prints_only_the_sum(net) -> None:
    from typer.testing import CliRunner

    from nordfed.cli import app

    env = {"NORDFED_HOME": str(net.workdir / "cli-home"), "COLUMNS": "200"}
    key_dir = net.workdir / "client-home" / "keys" / net.researcher  # the keys the nodes pinned
    runner = CliRunner()
    r = runner.invoke(app, ["login", "--hub", net.hub_url, "-u", net.researcher, "-p", net.password,
                            "--key-dir", str(key_dir)], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["task", "create", "-c", str(net.collaboration_id), "-a", "nordfed.count", "--secure-sum"],
                      env=env)
    assert r.exit_code == 0 and "completed" in r.output, r.output
    task_id = r.output.split("task ")[1].split()[0]
    r = runner.invoke(app, ["task", "result", task_id], env=env)
    assert r.exit_code == 0 and "sum over DK, NO, SE (secure aggregation)" in r.output, r.output
    assert f'"persons": {sum(SITES.values())}' in r.output and '"persons": 60' not in r.output
    r = runner.invoke(app, ["task", "result", task_id, "--json"], env=env)
    assert r.exit_code == 0 and '"sum_over"' in r.output, r.output


def test_a_secure_sum_with_an_offline_node_fails_at_once_naming_it(net, fed) -> None:
    """A secure sum needs every node's answer: asking one the hub lists as offline would wait for it until the
    timeout (ten minutes by default), so the client refuses at once and says what to do."""
    root = net.root()
    reg = root.request("POST", "/api/nodes", json={"name": "FI", "organization_id": net.nodes["DK"].organization_id,
                                                   "collaboration_id": net.collaboration_id})
    try:
        started = time.monotonic()
        with pytest.raises(AlgorithmError) as exc:
            HubFederation(net.client, net.collaboration_id, timeout=60).aggregate("nordfed.count", {})
        assert exc.value.site == "FI" and "FI is offline" in exc.value.message and "--sites" in exc.value.message
        assert time.monotonic() - started < 10
    finally:
        root.delete_node(reg["id"])
    assert fed.aggregate("nordfed.count", {})["persons"] == sum(SITES.values())
