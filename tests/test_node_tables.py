"""Nodes that serve plain tables (CSV/Parquet) besides or instead of their OMOP CDM.

Config checks at start (missing, unreadable, unknown format: the error names the config file and key), lazy
once-per-worker loading, and the real network: a hub and three node processes serving CSV tables give the
same GLM and LASSO numbers as :class:`InProcessFederation` on the same frames, and both equal the pooled fit
of statsmodels / scikit-learn on the pooled rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from sklearn.linear_model import LogisticRegression

from nordfed.client import HubFederation
from nordfed.fed import wire
from nordfed.fed.glm import fit_glm
from nordfed.fed.lasso import fit_lasso
from nordfed.fed.protocol import InProcessFederation, SiteData
from nordfed.node.localnet import LocalNetwork, tiny_cdm
from nordfed.node.worker import LazyTables, WarmWorker, WorkerSpec
from nordfed.policy.node import PolicyError, load_node_config, read_table

COVARIATES = ["age", "bmi", "smoker", "stage"]
ROWS = {"DK": 320, "NO": 260, "SE": 200}


def _rows(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"age": rng.normal(65, 10, n).round(1), "bmi": rng.normal(26, 4, n).round(2),
                       "smoker": rng.integers(0, 2, n), "stage": rng.integers(1, 5, n),
                       "sex": rng.choice(["female", "male"], n)})
    eta = -6 + 0.06 * df["age"] + 0.05 * df["bmi"] + 0.7 * df["smoker"] + 0.3 * df["stage"] + 0.2 * (seed % 3)
    df["died"] = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    return df


def _config(tmp_path: Path, tables: str, cdm: str = "") -> Path:
    p = tmp_path / "node.yaml"
    p.write_text(f'hub_url: http://127.0.0.1:1\napi_key: "12345678"\nname: DK\nkey_dir: keys\n{cdm}{tables}')
    return p


# ---------------------------------------------------------------------------------------------- config
def test_tables_resolve_relative_to_the_config_file_and_cdm_is_optional(tmp_path):
    (tmp_path / "data").mkdir()
    _rows(20, 0).to_csv(tmp_path / "data" / "rows.csv", index=False)
    _rows(20, 1).to_parquet(tmp_path / "data" / "lung.parquet")
    cfg = load_node_config(_config(tmp_path, "tables: {default: data/rows.csv, lung: data/lung.parquet}\n"))
    assert cfg.cdm_url is None
    assert cfg.tables == {"default": tmp_path / "data" / "rows.csv", "lung": tmp_path / "data" / "lung.parquet"}
    spec = WorkerSpec.from_config(cfg)
    assert spec.tables == {k: str(v) for k, v in cfg.tables.items()} and spec.cdm_url is None


@pytest.mark.parametrize(("tables", "setup", "expected"), [
    ("{default: rows.csv}", None, "rows.csv: file not found"),
    ("{lung: lung.xlsx}", "lung.xlsx", "unknown table format '.xlsx'"),
    ("{lung: lung.parquet}", "lung.parquet", "not a readable parquet file"),
    ("{lung: lung.csv}", "lung.csv", "not a readable csv file"),
    ("{lung: sub.csv}", "sub.csv/", "not a regular file"),
])
def test_bad_table_is_refused_at_start_naming_file_and_key(tmp_path, tables, setup, expected):
    if setup == "sub.csv/":
        (tmp_path / "sub.csv").mkdir()
    elif setup is not None:
        (tmp_path / setup).write_bytes(b"" if setup.endswith(".csv") else b"PK\x03\x04 not a table")
    p = _config(tmp_path, f"tables: {tables}\n")
    with pytest.raises(PolicyError) as exc:
        load_node_config(p)
    msg = str(exc.value)
    key = tables.strip("{}").split(":")[0]
    assert msg.startswith(f"{p}: field tables.{key}: ") and expected in msg, msg


def test_node_needs_a_cdm_or_tables_and_table_names_are_plain(tmp_path):
    with pytest.raises(PolicyError, match="neither is given"):
        load_node_config(_config(tmp_path, ""))
    _rows(20, 0).to_csv(tmp_path / "rows.csv", index=False)
    with pytest.raises(PolicyError, match=r"field tables\.a b"):
        load_node_config(_config(tmp_path, "tables: {'a b': rows.csv}\n"))
    cfg = load_node_config(_config(tmp_path, "tables: {default: rows.csv}\n", cdm="cdm_url: duckdb:///x.duckdb\n"))
    # relative to node.yaml's folder, like the tables
    assert cfg.cdm_url == f"duckdb:///{tmp_path.resolve() / 'x.duckdb'}" and list(cfg.tables) == ["default"]


def test_tables_load_once_on_first_use(tmp_path):
    path = tmp_path / "rows.csv"
    _rows(30, 0).to_csv(path, index=False)
    tables = LazyTables({"default": path, "lung": tmp_path / "gone.csv"})
    assert tables.loaded() == [] and sorted(tables) == ["default", "lung"]
    first = tables["default"]
    path.write_text("age\n1\n")  # a changed file does not reach a running worker: it keeps what it read
    assert tables["default"] is first and len(first) == 30 and tables.loaded() == ["default"]
    with pytest.raises(ValueError, match=r"table 'lung' .*gone\.csv"):
        tables["lung"]
    with pytest.raises(KeyError):
        tables["other"]


def test_warm_worker_serves_named_tables_without_a_cdm(tmp_path):
    _rows(200, 0).to_csv(tmp_path / "rows.csv", index=False)
    _rows(150, 1).to_parquet(tmp_path / "lung.parquet")
    spec = WorkerSpec("DK", None, 10, 4096, tables={"default": str(tmp_path / "rows.csv"),
                                                    "lung": str(tmp_path / "lung.parquet")})
    local = InProcessFederation({"DK": SiteData("DK", frames={name: read_table(Path(path))
                                                             for name, path in spec.tables.items()})})
    worker = WarmWorker(spec)
    try:
        for dataset in (None, "lung"):
            params = {"dataset": dataset, "outcome": "died", "covariates": COVARIATES, "family": "binomial"}
            out = worker.run("nordfed.glm.irls", wire.encode(params), 30)
            assert out.status == "completed", out.message
            assert wire.decode(out.result) == local.run("nordfed.glm.irls", params)["DK"]
        out = worker.run("nordfed.glm.irls", wire.encode({"dataset": "kidney", "outcome": "died",
                                                          "covariates": COVARIATES}), 30)
        assert out.status == "failed" and "no table 'kidney'" in out.message
        out = worker.run("nordfed.count", wire.encode({"dataset": "lung"}), 30)
        assert out.status == "completed" and wire.decode(out.result)["persons"] == 150
    finally:
        worker.stop()


# ---------------------------------------------------------------------------------------------- network
@pytest.fixture(scope="module")
def net(tmp_path_factory):
    wd = tmp_path_factory.mktemp("tables-net")
    tables = {}
    for i, (site, n) in enumerate(ROWS.items()):
        _rows(n, i).to_csv(wd / f"{site}.csv", index=False)
        _rows(n // 2 + 40, 10 + i).to_csv(wd / f"{site}-lung.csv", index=False)
        tables[site] = {"default": wd / f"{site}.csv", "lung": wd / f"{site}-lung.csv"}
    # DK serves its CDM besides the tables; NO and SE serve tables only
    sites = {"DK": tiny_cdm(f"duckdb:///{wd / 'DK.duckdb'}", 40), "NO": None, "SE": None}
    pinned = ["nordfed.count", "nordfed.glm.irls", "nordfed.lasso.moments", "nordfed.lasso.newton"]
    with LocalNetwork(wd, sites, tables=tables, pinned=pinned, poll_timeout_s=10) as network:
        yield network


@pytest.fixture(scope="module")
def fed(net) -> HubFederation:
    return HubFederation(net.client, net.collaboration_id, timeout=60)


def _local(net, fed) -> InProcessFederation:
    # the nodes' tables, read by the same reader, in the hub's site order (sums in the same order: bit-identical)
    return InProcessFederation({s: SiteData(s, frames={k: read_table(Path(p)) for k, p in net.tables[s].items()})
                                for s in fed.sites})


def _pooled(net, name: str) -> pd.DataFrame:
    return pd.concat([read_table(net.workdir / f"{s}{name}.csv") for s in ROWS], ignore_index=True)


@pytest.mark.parametrize("dataset", [None, "lung"])
def test_glm_over_hub_on_csv_tables_equals_in_process_and_statsmodels(net, fed, dataset):
    suffix = "-lung" if dataset else ""
    remote = fit_glm(fed, outcome="died", covariates=COVARIATES, dataset=dataset)
    local = fit_glm(_local(net, fed), outcome="died", covariates=COVARIATES, dataset=dataset)
    assert remote.to_dict() == local.to_dict()  # identical numbers, not merely close
    pooled = _pooled(net, suffix)
    ref = sm.GLM(pooled["died"], sm.add_constant(pooled[COVARIATES]), family=sm.families.Binomial()).fit(tol=1e-12)
    assert remote.n == len(pooled)
    np.testing.assert_allclose(list(remote.coefficients.values()), ref.params.to_numpy(), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(list(remote.standard_errors.values()), ref.bse.to_numpy(), rtol=1e-6)


def test_lasso_over_hub_on_csv_tables_equals_in_process_and_sklearn(net, fed):
    lam = 0.05
    remote = fit_lasso(fed, COVARIATES, "died", lam=lam)
    local = fit_lasso(_local(net, fed), COVARIATES, "died", lam=lam)
    np.testing.assert_array_equal(remote.betas, local.betas)
    assert (remote.rounds, remote.iterations, remote.n) == (local.rounds, local.iterations, local.n)
    pooled = _pooled(net, "")
    x, y = pooled[COVARIATES].to_numpy(float), pooled["died"].to_numpy()
    mu, sd = x.mean(0), x.std(0)
    # saga leaves the intercept unpenalised, as the federated fit does; C = 1/(n*lam) matches the objectives
    ref = LogisticRegression(C=1 / (len(y) * lam), l1_ratio=1.0, solver="saga", tol=1e-12,
                             max_iter=100_000).fit((x - mu) / sd, y)
    b0, b = remote.original()
    assert 0 < np.count_nonzero(b) < len(COVARIATES)  # the penalty is active and selects
    np.testing.assert_allclose(b * sd, ref.coef_[0], atol=1e-5)
    np.testing.assert_allclose(b0 + b @ mu, ref.intercept_[0], atol=1e-5)


def test_cdm_and_tables_side_by_side_at_one_node(net, fed):
    # no dataset: DK counts its CDM's persons, the tables-only nodes their default table
    out = fed.run("nordfed.count", {})
    assert {s: r["persons"] for s, r in out.items()} == {"DK": 40, "NO": ROWS["NO"], "SE": ROWS["SE"]}
    out = fed.run("nordfed.count", {"dataset": "lung"})
    assert {s: r["persons"] for s, r in out.items()} == {s: n // 2 + 40 for s, n in ROWS.items()}


def test_cli_node_start_exits_non_zero_on_a_bad_table(tmp_path):
    from typer.testing import CliRunner

    from nordfed.cli import app

    p = _config(tmp_path, "tables: {default: rows.csv}\n")
    r = CliRunner().invoke(app, ["node", "start", "--config", str(p)], env={"COLUMNS": "200"})
    assert r.exit_code != 0 and "field tables.default" in r.output and "file not found" in r.output, r.output
    assert not (tmp_path / "keys").exists()  # refused before the node made keys or a ledger
