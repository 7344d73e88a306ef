"""Every network command has --help; offline commands work without a hub."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.client.api import hub_base_url
from nordfed.fed.protocol import algorithms, get_algorithm

runner = CliRunner()

COMMANDS = [["node"], ["node", "start"], ["node", "keys"], ["node", "ledger"], ["node", "ledger", "verify"],
            ["node", "ledger", "show"], ["node", "trust"], ["login"], ["task"], ["task", "create"],
            ["task", "status"], ["task", "result"], ["task", "cancel"], ["task", "list"], ["algorithms"], ["demo"],
            ["node", "init"]]


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


def test_algorithms_table_keeps_one_line_each_and_json_has_full_hashes():
    count = get_algorithm("nordfed.count")
    r = runner.invoke(app, ["algorithms"], env={"COLUMNS": "80"})
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if "nordfed.count " in ln)
    assert count.code_hash[:12] in line and count.code_hash not in r.output  # no hash wrapped over lines
    assert "[dp] Persons" in line  # it releases under differential privacy, and the mark is not read as markup
    # one line each (other tests may have registered algorithms of their own, named otherwise)
    assert all(sum(f"{name} " in ln for ln in r.output.splitlines()) == 1 for name in algorithms())
    assert all(len(ln) <= 80 for ln in r.output.splitlines())
    r = runner.invoke(app, ["algorithms", "--json"], env={"COLUMNS": "80"})
    rows = {a["name"]: a for a in json.loads(r.output)}
    assert rows["nordfed.count"] == {"name": "nordfed.count", "version": count.version, "dp": True,
                                     "code_hash": count.code_hash, "description": rows["nordfed.count"]["description"]}
    assert rows["nordfed.ping"]["dp"] is False
    assert rows["nordfed.count"]["description"].startswith("Persons in the site's CDM")
    assert set(rows) == set(algorithms())


def test_node_start_bad_config_exits_nonzero(tmp_path):
    cfg = tmp_path / "node.yaml"
    cfg.write_text("hub_url: http://127.0.0.1:1\nname: DK\n")
    r = runner.invoke(app, ["node", "start", "--config", str(cfg)])
    assert r.exit_code == 1 and "field api_key" in r.output and str(cfg) in r.output


def test_task_commands_need_login(tmp_path):
    r = runner.invoke(app, ["task", "status", "1"], env={"NORDFED_HOME": str(tmp_path)})
    assert r.exit_code == 1 and "nordfed login" in r.output
    r = runner.invoke(app, ["task", "list"], env={"NORDFED_HOME": str(tmp_path)})
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


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hub_url_is_taken_with_or_without_api():
    for url in ("http://127.0.0.1:7700", "http://127.0.0.1:7700/", "http://127.0.0.1:7700/api",
                " http://127.0.0.1:7700/api/ "):
        assert hub_base_url(url) == "http://127.0.0.1:7700"
    assert hub_base_url("https://hub.example.org/api") == "https://hub.example.org"
    with pytest.raises(ValueError, match=r"'127.0.0.1:7700' needs a scheme: use http://127.0.0.1:7700"):
        hub_base_url("127.0.0.1:7700")
    with pytest.raises(ValueError, match="needs http:// or https://"):
        hub_base_url("ftp://hub.example.org")
    with pytest.raises(ValueError, match="names no host"):
        hub_base_url("http://")


def test_login_errors_are_one_line_naming_the_url(tmp_path):
    env = {"NORDFED_HOME": str(tmp_path)}
    url = f"http://127.0.0.1:{_closed_port()}"
    r = runner.invoke(app, ["login", "--hub", url, "-u", "alice", "-p", "pw"], env=env)
    assert r.exit_code == 1, r.exception
    assert r.output.strip() == f"error: cannot reach the hub at {url}: [Errno 111] Connection refused"
    r = runner.invoke(app, ["login", "--hub", url.removeprefix("http://"), "-u", "alice", "-p", "pw"], env=env)
    assert r.exit_code == 2 and f"use {url}" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_study_run_refuses_hub_options_without_hub(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\n")
    r = runner.invoke(app, ["study", "run", str(spec), "--collaboration", "2"])
    assert r.exit_code == 2 and "--collaboration only applies with --hub" in r.output, r.output
    r = runner.invoke(app, ["study", "run", str(spec), "--hub", "127.0.0.1:7700", "--collaboration", "2"])
    assert r.exit_code == 2 and "--hub: " in r.output and "http://127.0.0.1:7700" in r.output, r.output


def test_ctrl_c_stops_a_command_with_one_line(tmp_path):
    with socket.socket() as hub:  # accepts the connection, never answers
        hub.bind(("127.0.0.1", 0))
        hub.listen(1)
        hub.settimeout(60)
        cmd = [sys.executable, "-c", "from nordfed.cli import app; app()", "login", "--hub",
               f"http://127.0.0.1:{hub.getsockname()[1]}", "-u", "alice", "-p", "pw"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "NORDFED_HOME": str(tmp_path)},
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        conn, _ = hub.accept()  # the command now waits for the hub's answer
        with conn:
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == "interrupted" and out == "", (out, err)
