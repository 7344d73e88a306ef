"""`nordfed login` never takes the `nordfed hub` commands' NORDFED_HUB_USERNAME/_PASSWORD (root's, as the README
exports them): it reads NORDFED_USERNAME and NORDFED_PASSWORD, or asks. A real hub (SQLite) where root and
researcher_a have different passwords."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from test_hub_support import PASSWORD, ROOT_PASSWORD, Network, served_network

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    with served_network("sqlite", tmp_path_factory.mktemp("hub")) as network:
        yield network


def test_login_does_not_send_the_hub_administrators_password(net: Network, tmp_path) -> None:
    env = {"NORDFED_HOME": str(tmp_path), "NORDFED_HUB_PASSWORD": ROOT_PASSWORD, "NORDFED_PASSWORD": None}
    login = ["login", "--hub", net.url, "--username", "researcher_a"]
    res = CliRunner().invoke(app, login, env=env, input=f"{PASSWORD}\n")
    assert res.exit_code == 0, res.output
    assert "Password:" in res.output  # asked for hers rather than sending root's
    assert f"logged in to {net.url} as researcher_a" in res.output


def test_login_takes_its_password_from_nordfed_password(net: Network, tmp_path) -> None:
    env = {"NORDFED_HOME": str(tmp_path), "NORDFED_HUB_PASSWORD": ROOT_PASSWORD, "NORDFED_PASSWORD": PASSWORD}
    res = CliRunner().invoke(app, ["login", "--hub", net.url, "-u", "researcher_a"], env=env)
    assert res.exit_code == 0, res.output
    assert "Password:" not in res.output and f"logged in to {net.url} as researcher_a" in res.output


def test_login_takes_its_name_from_nordfed_username_not_the_administrators(net: Network, tmp_path) -> None:
    env = {"NORDFED_HOME": str(tmp_path), "NORDFED_HUB_USERNAME": "root", "NORDFED_HUB_PASSWORD": ROOT_PASSWORD,
           "NORDFED_USERNAME": None, "NORDFED_PASSWORD": PASSWORD}
    res = CliRunner().invoke(app, ["login", "--hub", net.url], env=env)
    assert res.exit_code == 2 and "--username" in res.output  # not a login as root
    env["NORDFED_USERNAME"] = "researcher_a"
    res = CliRunner().invoke(app, ["login", "--hub", net.url], env=env)
    assert res.exit_code == 0, res.output
    assert f"logged in to {net.url} as researcher_a" in res.output
