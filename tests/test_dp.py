"""Differential privacy: discrete Laplace counts (OpenDP) and each researcher's ε budget at a node.

The network half runs a real hub and two nodes whose policy gives each researcher ε = 1; SE also refuses
anything not released under differential privacy.
"""

from __future__ import annotations

import math
import signal

import numpy as np
import pandas as pd
import pytest

from nordfed.client import HubFederation
from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from nordfed.ledger import Ledger
from nordfed.node.localnet import LocalNetwork, tiny_sites
from nordfed.policy.node import load_node_config
from nordfed.privacy.dp import DPRequestError, noisy_counts, requested_epsilon


def test_noise_is_discrete_laplace_of_the_scale_epsilon_asks_for() -> None:
    for epsilon, sensitivity in ((1.0, 2), (0.25, 1)):
        draws = np.array([noisy_counts([1000], epsilon, sensitivity)[0] for _ in range(20_000)])
        a = math.exp(-epsilon / sensitivity)  # the two-sided geometric distribution of scale sensitivity/ε
        var = 2 * a / (1 - a) ** 2
        assert draws.dtype.kind == "i"
        assert abs(draws.mean() - 1000) < 5 * math.sqrt(var / len(draws))
        assert abs(draws.var() / var - 1) < 0.08  # ~1.6 % standard error at this kurtosis
        assert (draws != 1000).mean() > 1 - 2 * (1 - a) / (1 + a)  # P(noise = 0) = (1-a)/(1+a), halved margin
    # at ε = 0.01 the noise is mostly far below -2: released as 0, never as a negative count
    small = np.array([noisy_counts([0, 1, 2], 0.01, 1) for _ in range(50)])
    assert small.min() == 0 and (small == 0).mean() > 0.3


@pytest.mark.parametrize("spec, ok", [
    (None, None), ({"epsilon": 0.5}, 0.5), ({"epsilon": 10}, 10.0),
    ({"epsilon": 0}, False), ({"epsilon": -1}, False), ({"epsilon": 11}, False), ({"epsilon": float("nan")}, False),
    ({"epsilon": True}, False), ({"epsilon": "1"}, False), ({}, False), ({"epsilon": 1, "delta": 1e-6}, False),
    (0.5, False),
])
def test_the_dp_parameter_is_checked(spec: object, ok: object) -> None:
    params = {} if spec is None else {"dp": spec}
    if ok is False:
        with pytest.raises(DPRequestError):
            requested_epsilon(params)
    else:
        assert requested_epsilon(params) == ok


def _federation(n: int = 400) -> InProcessFederation:
    rng = np.random.default_rng(0)
    return InProcessFederation.from_frames({"DK": pd.DataFrame({"sex": rng.choice(["male", "female"], n)})})


def test_a_private_count_is_noisy_and_unbiased_and_other_algorithms_refuse() -> None:
    fed = _federation()
    exact = fed.run("nordfed.count", {})["DK"]
    noisy = [fed.run("nordfed.count", {"dp": {"epsilon": 1.0}})["DK"] for _ in range(400)]
    assert "dp" not in exact and {r["dp"] for r in noisy} == {"epsilon 1, discrete Laplace noise"}  # says so
    # a secure sum keeps the label (text is the same at every site) and adds the noisy counts up
    two = InProcessFederation.from_frames({s: fed._sites["DK"].frames["default"] for s in ("A", "B")})
    assert two.aggregate("nordfed.count", {"dp": {"epsilon": 1.0}})["dp"] == "epsilon 1, discrete Laplace noise"
    totals = np.array([r["persons"] for r in noisy])
    assert (totals != exact["persons"]).mean() > 0.3
    assert abs(totals.mean() - exact["persons"]) < 0.5  # sd of the mean 2.8/sqrt(400) = 0.14
    males = np.array([r["by_sex"]["male"] for r in noisy])
    assert abs(males.mean() - exact["by_sex"]["male"]) < 0.5
    with pytest.raises(AlgorithmError, match="does not release under differential privacy") as exc:
        fed.run("nordfed.ping", {"dp": {"epsilon": 1.0}})
    assert exc.value.refused


# ------------------------------------------------------------------------------------------- through a hub
SITES = {"DK": 60, "SE": 45}


def _budget(site: str, policy: dict) -> dict:
    return {**policy, "privacy_budget": 1.0, "dp_required": site == "SE"}


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    wd = tmp_path_factory.mktemp("dp")
    with LocalNetwork(wd, tiny_sites(wd, SITES), policy_hook=_budget, poll_timeout_s=10) as network:
        yield network


def _spent(net, site: str) -> list[dict]:
    with Ledger.open(load_node_config(net.nodes[site].config_path).ledger_path, create=False) as led:
        return [e.payload for e in led.entries() if e.kind == "privacy_spent"]


def test_the_budget_is_charged_on_the_ledger_refused_when_spent_and_kept_over_a_restart(net) -> None:
    fed = HubFederation(net.client, net.collaboration_id, timeout=60)
    first = fed.run("nordfed.count", {"dp": {"epsilon": 0.4}})
    assert set(first) == set(SITES)
    fed.run("nordfed.count", {"dp": {"epsilon": 0.6}})
    spent = _spent(net, "DK")
    assert [p["epsilon"] for p in spent] == [0.4, 0.6] and spent[-1]["total"] == pytest.approx(1.0)
    assert spent[-1]["username"] == net.researcher and spent[-1]["task_id"] == fed.last_task_id
    with pytest.raises(AlgorithmError) as exc:
        fed.run("nordfed.count", {"dp": {"epsilon": 0.1}})
    assert exc.value.refused and "privacy budget" in exc.value.message and "spent ε = 1 of the 1" in exc.value.message
    # a restarted node reads what was spent back from its ledger
    net.kill_node("DK", signal.SIGTERM)
    net.start_node("DK")
    net.wait_nodes_online(names=["DK"])
    with pytest.raises(AlgorithmError) as exc:
        fed.run("nordfed.count", {"dp": {"epsilon": 0.1}}, sites=["DK"])
    assert "privacy budget" in exc.value.message
    assert len(_spent(net, "DK")) == 2  # a refused task costs nothing


def test_a_site_that_requires_dp_refuses_exact_results_and_algorithms_without_it(net) -> None:
    fed = HubFederation(net.client, net.collaboration_id, timeout=60)
    with pytest.raises(AlgorithmError) as exc:
        fed.run("nordfed.count", {}, sites=["SE"])
    assert exc.value.refused and "only under differential privacy" in exc.value.message
    with pytest.raises(AlgorithmError) as exc:
        fed.run("nordfed.ping", {"dp": {"epsilon": 0.1}}, sites=["DK"])
    assert exc.value.refused and "does not release under differential privacy" in exc.value.message
    assert len(_spent(net, "DK")) == 2  # checked before charging
    with pytest.raises(AlgorithmError) as exc:
        fed.run("nordfed.count", {"dp": {"epsilon": 50}}, sites=["DK"])
    assert "dp.epsilon must be" in exc.value.message


def test_the_cli_exits_1_when_a_node_refused_and_says_where_to_look(net) -> None:
    from typer.testing import CliRunner

    from nordfed.cli import app

    net.client.save_state()  # the network's researcher, logged in, for the CLI
    env = {"NORDFED_HOME": str(net.workdir / "client-home"), "COLUMNS": "200"}
    runner = CliRunner()
    r = runner.invoke(app, ["task", "create", "-c", str(net.collaboration_id), "-a", "nordfed.count", "-n",
                            str(net.nodes["SE"].id)], env=env)
    assert r.exit_code == 1 and "SE refused" in r.output and "nordfed task result" in r.output, r.output
    task_id = r.output.split("task ")[1].split()[0]
    r = runner.invoke(app, ["task", "result", task_id], env=env)
    assert r.exit_code == 1 and "only under differential privacy" in r.output, r.output
