"""Every network command has --help; offline commands work without a hub."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.fed.protocol import get_algorithm

runner = CliRunner()

COMMANDS = [["node"], ["node", "start"], ["node", "keys"], ["login"], ["task"], ["task", "create"],
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
