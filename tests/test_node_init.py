"""`nordfed node init`: a commented node.yaml the real loader takes, every algorithm pinned, no secret in it."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.fed.protocol import algorithms
from nordfed.policy.node import NodeConfig, NodePolicy, PolicyError, load_node_config

runner = CliRunner()
API_KEY = "node-api-key-from-the-environment-1234"
KEY = "uxjKqB30EKuF4tUZHYtKKkCRVItaGjbvC+/ACBjSzXg="
WHO = {"collaborations", "organizations", "researchers", "algorithms"}


def _init(tmp_path, *extra: str):
    return runner.invoke(app, ["node", "init", "--out", str(tmp_path / "site" / "node.yaml"), "--hub",
                               "http://127.0.0.1:18700/api", "--site", "DK", "--cdm", "duckdb:///dk.duckdb", *extra],
                         env={"COLUMNS": "200"})


def test_written_file_loads_pins_every_algorithm_and_keeps_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _init(tmp_path, "-c", "1", "--organization", "3", "--researcher", f"alice:{KEY}")
    assert r.exit_code == 0, r.output
    path = tmp_path / "site" / "node.yaml"
    text = path.read_text()
    monkeypatch.setenv("NORDFED_NODE_API_KEY", API_KEY)
    cfg = load_node_config(path)
    assert API_KEY not in text and "api_key_env: \"NORDFED_NODE_API_KEY\"" in text
    assert cfg.api_key == API_KEY and cfg.name == "DK"
    assert cfg.hub_url == "http://127.0.0.1:18700"  # the node adds /api itself
    assert cfg.cdm_url == f"duckdb:///{tmp_path / 'dk.duckdb'}"  # not relative to wherever the node starts
    assert cfg.key_dir == tmp_path / "site" / "keys"
    pinned = {(a.name, a.version, a.code_hash) for a in cfg.policy.algorithms}
    assert pinned == {(n, a.version, a.code_hash) for n, a in algorithms().items()}
    assert (cfg.policy.collaborations, cfg.policy.organizations) == ([1], [3])
    assert cfg.policy.researchers[0].username == "alice" and cfg.policy.researchers[0].signing_key == KEY
    # nothing refused beyond what a node refuses by default
    assert cfg.policy.model_dump(exclude=WHO) == NodePolicy().model_dump(exclude=WHO)
    assert cfg.poll_timeout_s == NodeConfig.model_fields["poll_timeout_s"].default


def test_every_setting_is_in_the_file_for_the_site_to_see(tmp_path):
    assert _init(tmp_path).exit_code == 0
    text = (tmp_path / "site" / "node.yaml").read_text()
    for field in [*NodeConfig.model_fields, *NodePolicy.model_fields]:
        if field != "api_key":  # read from the environment or a file
            assert f"{field}:" in text, field
    raw = yaml.safe_load(text)["policy"]
    assert raw["collaborations"] == raw["organizations"] == raw["researchers"] == []  # the site chooses


def test_api_key_file_and_refusals(tmp_path, monkeypatch):
    monkeypatch.delenv("NORDFED_NODE_API_KEY", raising=False)
    assert _init(tmp_path, "--api-key-file", "api.key").exit_code == 0
    path = tmp_path / "site" / "node.yaml"
    with pytest.raises(PolicyError, match=r"node.yaml: field api_key_file: cannot read .*site/api.key"):
        load_node_config(path)
    (tmp_path / "site" / "api.key").write_text(API_KEY + "\n")
    assert load_node_config(path).api_key == API_KEY
    again = _init(tmp_path)
    assert again.exit_code == 2 and "exists; pass --force" in again.output
    assert _init(tmp_path, "--force").exit_code == 0
    with pytest.raises(PolicyError, match="field api_key_env: environment variable NORDFED_NODE_API_KEY is not set"):
        load_node_config(path)
    both = tmp_path / "both.yaml"
    both.write_text(path.read_text() + 'api_key: "12345678"\n')
    with pytest.raises(PolicyError, match="fields api_key and api_key_env: give only one"):
        load_node_config(both)
    bad = _init(tmp_path, "--force", "--researcher", "alice")
    assert bad.exit_code == 2 and "--researcher 'alice'" in bad.output and "USER:SIGNING_KEY" in bad.output
    short = _init(tmp_path, "--force", "--researcher", "alice:abc")
    assert short.exit_code == 2 and "signing_key" in short.output
    assert _init(tmp_path, "--force", "--hub", "127.0.0.1:18700").exit_code == 2
