"""Every network command has --help; offline commands work without a hub."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.fed.protocol import get_algorithm

runner = CliRunner()

COMMANDS = [["node"], ["node", "start"], ["node", "keys"], ["node", "ledger"], ["node", "ledger", "verify"],
            ["node", "ledger", "show"], ["node", "trust"], ["login"], ["task"], ["task", "create"],
            ["task", "status"], ["task", "result"], ["task", "cancel"], ["algorithms"], ["demo"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help(cmd):
    r = runner.invoke(app, [*cmd, "--help"])
    assert r.exit_code == 0, r.output
    assert "Usage" in r.output


def test_node_keys_and_algorithms(tmp_path):
    r = runner.invoke(app, ["node", "keys", "--dir", str(tmp_path / "k")])
    assert r.exit_code == 0 and "signing_key:" in r.output
    assert (tmp_path / "k" / "signing.key").stat().st_mode & 0o077 == 0
    r = runner.invoke(app, ["node", "keys", "--dir", str(tmp_path / "k")])
    assert r.exit_code == 1 and "refusing to overwrite" in r.output
    r = runner.invoke(app, ["algorithms"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and get_algorithm("nordfed.count").code_hash in r.output


def test_node_start_bad_config_exits_nonzero(tmp_path):
    cfg = tmp_path / "node.yaml"
    cfg.write_text("hub_url: http://127.0.0.1:1\nname: DK\n")
    r = runner.invoke(app, ["node", "start", "--config", str(cfg)])
    assert r.exit_code == 1 and "field api_key" in r.output and str(cfg) in r.output


def test_task_commands_need_login(tmp_path):
    r = runner.invoke(app, ["task", "status", "1"], env={"NORDFED_HOME": str(tmp_path)})
    assert r.exit_code == 1 and "nordfed login" in r.output


def test_node_ledger_commands_name_what_is_missing(tmp_path):
    cfg = tmp_path / "node.yaml"
    cfg.write_text("hub_url: http://127.0.0.1:1\napi_key: \"12345678\"\nname: DK\ncdm_url: duckdb:///x.duckdb\n"
                   "key_dir: k\nstate_dir: state\n")
    r = runner.invoke(app, ["node", "ledger", "verify", "--config", str(cfg)], env={"COLUMNS": "200"})
    assert r.exit_code == 1 and "signing.pub" in r.output and "ever started" in r.output, r.output
    assert runner.invoke(app, ["node", "keys", "--dir", str(tmp_path / "k")]).exit_code == 0
    r = runner.invoke(app, ["node", "ledger", "show", "--config", str(cfg)], env={"COLUMNS": "200"})
    assert r.exit_code == 1 and str(tmp_path / "state" / "node.ledger") in r.output.replace("\n", ""), r.output


def test_diagnostics_are_found_by_standard_discovery_without_the_node_package():
    code = ("import sys; from nordfed.fed.protocol import algorithms; a = algorithms(); "
            "print(a['nordfed.count'].partial.__module__, a['nordfed.ping'].partial.__module__, "
            "any(m.startswith('nordfed.node') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["nordfed.fed.diagnostics", "nordfed.fed.diagnostics", "False"]
    from nordfed.node import builtin  # the shim the client still imports

    assert builtin.count_by_sex is get_algorithm("nordfed.count").partial
    assert builtin.ping is get_algorithm("nordfed.ping").partial
