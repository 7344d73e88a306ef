"""The node's own policy file and its warm worker (time and memory limits, disclosure refusals)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from nordfed.fed import wire
from nordfed.fed.km import fit_km
from nordfed.fed.protocol import AlgorithmError, InProcessFederation, get_algorithm
from nordfed.node.worker import WarmWorker, WorkerSpec
from nordfed.omop.store import open_cdm
from nordfed.policy.node import NodePolicy, PolicyError, load_node_config
from nordfed.privacy.disclosure import DisclosurePolicy


def _policy(**kw) -> NodePolicy:
    a = get_algorithm("nordfed.count")
    base = dict(collaborations=[1], organizations=[1],
                researchers=[{"username": "alice", "signing_key": "A" * 43 + "=", "organization_id": 1}],
                algorithms=[{"name": a.name, "version": a.version, "code_hash": a.code_hash}])
    return NodePolicy.model_validate(base | kw)


def _signed(**kw) -> dict:
    a = get_algorithm("nordfed.count")
    return {"algorithm": a.name, "version": a.version, "code_hash": a.code_hash, "username": "alice",
            "organization_id": 1} | kw


def test_min_cell_count_never_below_default_unless_explicit():
    with pytest.raises(ValueError, match="allow_min_cell_count_below_default"):
        _policy(min_cell_count=5)
    assert _policy(min_cell_count=5, allow_min_cell_count_below_default=True).min_cell_count == 5
    assert _policy().min_cell_count == 10


def test_policy_check_reasons():
    pol = _policy()
    run = {k: _signed()[k] for k in ("algorithm", "version", "code_hash")}
    assert pol.check(run, _signed(), 1) is None
    assert "collaboration 2" in pol.check(run, _signed(), 2)
    assert "does not match the hub" in pol.check(run | {"code_hash": "0" * 64}, _signed(), 1)
    bad = _signed(code_hash="0" * 64)
    assert "not pinned" in pol.check({**run, "code_hash": "0" * 64}, bad, 1)
    assert "allowlist" in pol.check({**run, "algorithm": "nordfed.ping"}, _signed(algorithm="nordfed.ping"), 1)
    assert "organization 2" in pol.check(run, _signed(organization_id=2), 1)


def test_config_errors_name_file_and_field(tmp_path):
    p = tmp_path / "node.yaml"
    p.write_text("hub_url: ftp://x\napi_key: \"12345678\"\nname: DK\ncdm_url: duckdb:///x.duckdb\nkey_dir: keys\n"
                 "policy: {min_cell_count: 3}\n")
    with pytest.raises(PolicyError) as exc:
        load_node_config(p)
    assert str(p) in str(exc.value) and "field hub_url" in str(exc.value) and "policy" in str(exc.value)
    p.write_text("hub_url: http://127.0.0.1:1\napi_key: \"12345678\"\nname: DK\n"
                 "cdm_url: duckdb:///x.duckdb\nkey_dir: k\n")
    cfg = load_node_config(p)
    assert cfg.key_dir == tmp_path / "k" and cfg.policy.min_cell_count == 10
    # like key_dir and tables, a relative DuckDB path is node.yaml's, wherever the node is started from
    assert cfg.cdm_url == f"duckdb:///{tmp_path.resolve() / 'x.duckdb'}"
    p.write_text("hub_url: http://127.0.0.1:1\napi_key: \"12345678\"\nname: DK\ncdm_url: mysql://x/y\nkey_dir: k\n")
    with pytest.raises(PolicyError, match="field cdm_url: unsupported CDM URL"):
        load_node_config(p)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "site.duckdb"
    cdm = open_cdm(f"duckdb:///{path}", create=True)
    n = 25  # 17 male, 8 female: the female cell is below 10
    cdm.insert("person", pd.DataFrame({"person_id": range(1, n + 1), "gender_concept_id": [8507] * 17 + [8532] * 8,
                                       "year_of_birth": 1960, "race_concept_id": 0, "ethnicity_concept_id": 0}))
    cdm.close()
    w = WarmWorker(WorkerSpec("DK", f"duckdb:///{path}", 10, 2048))
    yield w
    w.stop()


def test_worker_runs_suppresses_and_enforces_limits(worker):
    out = worker.run("nordfed.count", wire.encode({}), 10)
    assert out.status == "completed", out
    # 25 - 17 would give the 8 women away: the male cell is withheld as well (complementary suppression)
    assert wire.decode(out.result) == {"persons": 25, "by_sex": {"female": None, "male": None}}
    pid = worker.pid
    slow = worker.run("nordfed.ping", wire.encode({"sleep": 5}), 0.3)
    assert slow.status == "failed" and "time limit" in slow.message and worker.pid != pid
    assert worker.run("nordfed.ping", wire.encode({"echo": 1}), 5).status == "completed"  # replacement is warm


def test_worker_refuses_small_totals(tmp_path):
    url = f"duckdb:///{tmp_path / 's.duckdb'}"
    cdm = open_cdm(url, create=True)
    cdm.insert("person", pd.DataFrame({"person_id": [1, 2, 3], "gender_concept_id": 8507, "year_of_birth": 1960,
                                       "race_concept_id": 0, "ethnicity_concept_id": 0}))
    cdm.close()
    w = WarmWorker(WorkerSpec("NO", url, 10, 2048))
    try:
        out = w.run("nordfed.count", wire.encode({}), 10)
        assert out.status == "refused" and "fewer persons than" in out.message and "3" not in out.message
    finally:
        w.stop()


def test_exact_event_times_is_a_strict_opt_in(tmp_path):
    p = tmp_path / "node.yaml"
    base = "hub_url: http://127.0.0.1:1\napi_key: \"12345678\"\nname: DK\ncdm_url: duckdb:///x.duckdb\nkey_dir: k\n"
    for bad in ('"yes"', "1", '"false"'):
        p.write_text(base + f"policy: {{exact_event_times: {bad}}}\n")
        with pytest.raises(PolicyError) as exc:
            load_node_config(p)
        assert str(p) in str(exc.value) and "field policy.exact_event_times" in str(exc.value)
    p.write_text(base)
    off = load_node_config(p).policy
    p.write_text(base + "policy: {exact_event_times: true}\n")
    on = load_node_config(p).policy
    assert off.disclosure() == DisclosurePolicy(min_cell_count=10, exact_event_times=False)
    assert on.disclosure() == DisclosurePolicy(min_cell_count=10, exact_event_times=True)
    assert on.sha256() != off.sha256() == NodePolicy().sha256()


def test_exact_event_times_lets_a_site_release_exact_kaplan_meier_counts():
    # exact (untied) event times: every per-time count is 1, below any minimum cell count
    rng = np.random.default_rng(7)
    frames = {s: pd.DataFrame({"t": rng.permutation(np.arange(1, 41)) + 100 * i, "e": rng.integers(0, 2, 40)})
              for i, s in enumerate(("DK", "NO"))}
    for f in frames.values():
        f.loc[:12, "e"] = 1  # enough events per site for the totals rule
    default = InProcessFederation.from_frames(frames, NodePolicy().disclosure())
    with pytest.raises(AlgorithmError) as exc:
        fit_km(default, duration="t", event="e")
    assert exc.value.refused and "exact_event_times" in exc.value.message
    fed = InProcessFederation.from_frames(frames, NodePolicy(exact_event_times=True).disclosure())
    km = fit_km(fed, duration="t", event="e")
    pooled = pd.concat(frames.values())
    ref = KaplanMeierFitter().fit(pooled["t"], pooled["e"])
    expected = ref.survival_function_.iloc[:, 0].reindex(km.times)
    np.testing.assert_allclose(km.survival, expected.to_numpy(), rtol=0, atol=1e-12)


def test_worker_applies_the_nodes_exact_event_times(worker, tmp_path):
    # an unstratified Cox model needs exact risk sets: the default worker refuses before touching data
    out = worker.run("nordfed.cox.risk_sets", wire.encode({}), 10)
    assert out.status == "refused" and "exact_event_times is off" in out.message
    assert out.reason == "disclosure control refused the result" and "exact" not in out.reason
    exact = WarmWorker(WorkerSpec("DK", None, 10, 2048, exact_event_times=True))  # the fixture holds the CDM
    try:
        out = exact.run("nordfed.cox.risk_sets", wire.encode({}), 10)
    finally:
        exact.stop()
    # allowed past the policy check; then fails on its (missing) parameters, and the ledger-safe reason
    # names only the exception type
    assert out.status == "failed" and "exact_event_times" not in out.message
    assert out.reason.startswith("algorithm raised ")


def test_event_time_noise_reaches_the_worker(tmp_path):
    """A site whose policy requires noise releases Kaplan-Meier counts on noised times, never the real ones."""
    p = tmp_path / "node.yaml"
    base = "hub_url: http://127.0.0.1:1\napi_key: \"12345678\"\nname: DK\nkey_dir: k\n"
    times = pd.DataFrame({"t": np.arange(21.0, 81.0), "e": np.tile([1, 0], 30)})  # far from 0: no clipping ties
    times.to_csv(tmp_path / "surv.csv", index=False)
    p.write_text(base + "tables: {default: surv.csv}\npolicy: {event_time_noise: -1}\n")
    with pytest.raises(PolicyError, match="event_time_noise"):
        load_node_config(p)
    p.write_text(base + "tables: {default: surv.csv}\npolicy: {event_time_noise: 3.0}\n")
    config = load_node_config(p)
    assert config.policy.disclosure().event_time_noise == 3.0
    w = WarmWorker(WorkerSpec.from_config(config))
    try:
        out = w.run("nordfed.km.counts", wire.encode({"duration": "t", "event": "e"}), 10)
    finally:
        w.stop()
    assert out.status == "completed", out.message
    released = wire.decode(out.result)["groups"]["all"]["times"]
    assert len(released) == 60 and not set(np.asarray(released)) & set(times.t)
