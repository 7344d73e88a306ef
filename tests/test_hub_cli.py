"""`nordfed hub create-root` and `nordfed hub start` (a real subprocess serving on a loopback port)."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time

import httpx
import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.hub.roles import ROLES
from nordfed.hub.server import free_port

runner = CliRunner()


def test_create_root_then_refuse_duplicates_and_weak_passwords(tmp_path):
    db = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    ok = runner.invoke(app, ["hub", "create-root", "--db", db, "--username", "admin", "--password", "s3cret-pass"])
    assert ok.exit_code == 0 and "admin" in ok.output
    again = runner.invoke(app, ["hub", "create-root", "--db", db, "--username", "admin", "--password", "s3cret-pass"])
    assert again.exit_code == 1 and "already exists" in again.output
    weak = runner.invoke(app, ["hub", "create-root", "--db", db, "--username", "other", "--password", "short"])
    assert weak.exit_code == 1 and "at least 8 characters" in weak.output
    bad = runner.invoke(app, ["hub", "create-root", "--db", "mysql://x/y", "--password", "s3cret-pass"])
    assert bad.exit_code == 1 and "unsupported hub database URL" in bad.output


def test_start_refuses_half_tls_config(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    result = runner.invoke(
        app, ["hub", "start", "--db", f"sqlite:///{tmp_path / 'h.sqlite'}", "--ssl-certfile", str(cert)]
    )
    assert result.exit_code == 2 and "go together" in result.output


@pytest.mark.network
def test_hub_start_serves_the_api(tmp_path):
    port = free_port()
    env = {**os.environ, "NORDFED_HUB_ROOT_PASSWORD": "root-password-1"}
    db = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    cli = "from nordfed.cli import app; app()"
    cmd = [sys.executable, "-c", cli, "hub", "start", "--db", db, "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}/api"
        _wait_healthy(base, lambda: proc.poll() is None)
        token = httpx.post(f"{base}/token", json={"username": "root", "password": "root-password-1"}).json()
        assert token["roles"] == ["root"]
        admin_commands_work_against(f"http://127.0.0.1:{port}", base)
        listings_and_node_commands_work_against(f"http://127.0.0.1:{port}", base, tmp_path / "home")
    finally:
        proc.terminate()
        proc.wait(15)
    banner = proc.stdout.read().decode()
    # the URL it names is the one login takes
    assert f"nordfed hub on http://127.0.0.1:{port} (" in banner
    assert f"nordfed login --hub http://127.0.0.1:{port} -u USER" in banner


def _wait_healthy(base: str, alive) -> None:
    """Until the hub answers /health (its banner comes before uvicorn listens); ``alive()`` False: it exited."""
    deadline = time.monotonic() + 30
    while True:
        assert alive(), "hub exited"
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "hub did not start"
            time.sleep(0.1)


@pytest.mark.network
def test_hub_start_on_a_terminal_asks_for_the_missing_root_password(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NORDFED_HUB_ROOT_PASSWORD"}
    argv = [sys.executable, "-c", "from nordfed.cli import app; app()", "hub", "start", "--db",
            f"sqlite:///{tmp_path / 'hub.sqlite'}", "--port", str(port), "--log-level", "warning"]
    pid, tty = pty.fork()  # the child's controlling terminal, which getpass reads
    if pid == 0:  # pragma: no cover - the child
        os.execve(sys.executable, argv, env)
    try:
        screen = _read_until(tty, b"password:")
        _type_hidden(tty, b"root-password-2\n")
        screen += _read_until(tty, b"confirmation:")
        _type_hidden(tty, b"root-password-2\n")
        screen += _read_until(tty, b"log in with")
        assert b"root-password-2" not in screen  # not echoed
        _wait_healthy(f"http://127.0.0.1:{port}/api", lambda: os.waitpid(pid, os.WNOHANG) == (0, 0))
        token = httpx.post(f"http://127.0.0.1:{port}/api/token", json={"username": "root",
                                                                       "password": "root-password-2"})
        assert token.status_code == 200 and token.json()["roles"] == ["root"]
    finally:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
        os.close(tty)


def _read_until(tty: int, text: bytes, timeout: float = 30.0) -> bytes:
    seen, deadline = b"", time.monotonic() + timeout
    while text not in seen:
        assert time.monotonic() < deadline, f"no {text!r} on the terminal, only {seen!r}"
        if select.select([tty], [], [], 0.2)[0]:
            seen += os.read(tty, 1024)
    return seen


def _type_hidden(tty: int, text: bytes) -> None:
    deadline = time.monotonic() + 30
    while termios.tcgetattr(tty)[3] & termios.ECHO:  # typed before echo is off, getpass would flush it
        assert time.monotonic() < deadline, "the terminal kept echoing"
        time.sleep(0.02)
    os.write(tty, text)


def test_create_user_lists_and_checks_every_role():
    help_text = runner.invoke(app, ["hub", "create-user", "--help"], env={"COLUMNS": "250"}).output
    assert all(role in help_text for role in ROLES), help_text
    bad = runner.invoke(app, ["hub", "create-user", "kari", "--organization-id", "2", "--role", "reseacher",
                              "--new-password", "kari-password", "--url", "http://127.0.0.1:9", "--password", "x"])
    assert bad.exit_code == 2 and "'reseacher' is not one of" in bad.output, bad.output


def admin_commands_work_against(url: str, base: str) -> None:
    auth = ["--url", url, "--password", "root-password-1"]
    org = runner.invoke(app, ["hub", "create-organization", "Oslo University Hospital", "NO", *auth])
    assert org.exit_code == 0 and "(id 2)" in org.output, org.output
    api_url = runner.invoke(app, ["hub", "create-organization", "Aarhus", "DK", "--url", f"{base}/",
                                  "--password", "root-password-1"])
    assert api_url.exit_code == 0 and "(id 3)" in api_url.output, api_url.output
    again = runner.invoke(app, ["hub", "create-organization", "Oslo University Hospital", "NO", *auth])
    assert again.exit_code == 1 and "already exists" in again.output
    collab = runner.invoke(app, ["hub", "create-collaboration", "crc", "--organization-id", "2", *auth])
    assert collab.exit_code == 0 and "(id 1)" in collab.output, collab.output
    grown = runner.invoke(app, ["hub", "update-collaboration", "1", "--add-organization-id", "3", *auth])
    assert grown.exit_code == 0 and "organizations 2, 3" in grown.output, grown.output
    idle = runner.invoke(app, ["hub", "update-collaboration", "1", *auth])
    assert idle.exit_code == 2 and "nothing to change" in idle.output, idle.output
    unknown = runner.invoke(app, ["hub", "update-collaboration", "1", "--add-organization-id", "99", *auth])
    assert unknown.exit_code == 1 and "Traceback" not in unknown.output, unknown.output
    user = runner.invoke(
        app,
        [
            "hub",
            "create-user",
            "kari",
            "--organization-id",
            "2",
            "--role",
            "researcher",
            "--role",
            "viewer",
            "--new-password",
            "kari-password",
            *auth,
        ],
    )
    assert user.exit_code == 0 and "researcher, viewer" in user.output, user.output
    node = runner.invoke(
        app, ["hub", "register-node", "ouh", "--organization-id", "2", "--collaboration-id", "1", *auth]
    )
    assert node.exit_code == 0, node.output
    assert "written to standard output, not shown here" in " ".join(node.stderr.split())  # redirected: says where
    api_key = node.stdout.strip().splitlines()[-1]
    assert httpx.post(f"{base}/token/node", json={"api_key": api_key}).json()["name"] == "ouh"
    wrong = runner.invoke(app, ["hub", "create-organization", "X", "SE", "--url", url, "--password", "nope-nope"])
    assert wrong.exit_code == 1 and "login as 'root' failed" in wrong.output
    down = runner.invoke(
        app, ["hub", "create-organization", "X", "SE", "--url", "http://127.0.0.1:9", "--password", "x"]
    )
    assert down.exit_code == 1 and "cannot reach the hub" in down.output


def listings_and_node_commands_work_against(url: str, base: str, home) -> None:
    """After admin_commands_work_against: organizations 1 (the hub's), 2 and 3, collaboration 1, user kari in
    organization 2, node ouh (id 1) in collaboration 1."""
    env = {"NORDFED_HOME": str(home), "COLUMNS": "200"}
    root = ["--url", url, "--password", "root-password-1"]

    def cli(*args: str) -> str:
        r = runner.invoke(app, list(args), env=env)
        assert r.exit_code == 0, r.output
        return r.output

    orgs = json.loads(cli("hub", "list", "organizations", "--json", *root))
    assert [(o["id"], o["name"], o["hub"]) for o in orgs] == [
        (1, "nordfed hub", True), (2, "Oslo University Hospital", False), (3, "Aarhus", False)]
    table = cli("hub", "list", "organizations", *root)
    assert "the hub's own" in next(ln for ln in table.splitlines() if "nordfed hub" in ln)
    users = cli("hub", "list", "users", *root)
    assert "kari" in users and "Oslo University Hospital (2)" in users and "researcher, viewer" in users
    assert "Oslo University Hospital (2)" in cli("hub", "list", "collaborations", *root)
    nodes = json.loads(cli("hub", "list", "nodes", "--collaboration-id", "1", "--json", *root))
    assert [(n["id"], n["name"], n["disabled"]) for n in nodes] == [(1, "ouh", False)]

    # without --password: the saved `nordfed login`, and only on its hub
    r = runner.invoke(app, ["hub", "list", "nodes"], env=env)
    assert r.exit_code == 1 and "nordfed login" in r.output and "--password" in r.output, r.output
    cli("login", "--hub", url, "-u", "kari", "-p", "kari-password")
    assert "ouh" in cli("hub", "list", "nodes")  # kari's organization's node
    r = runner.invoke(app, ["hub", "list", "nodes", "--url", "http://127.0.0.1:9"], env=env)
    assert r.exit_code == 2 and f"you are logged in to {url}" in r.output, r.output
    assert "no tasks" not in cli("task", "list")  # an empty table, not an error

    assert "node 'ouh' (id 1) disabled" in cli("hub", "disable-node", "1", *root)
    assert "disabled" in next(ln for ln in cli("hub", "list", "nodes", *root).splitlines() if "ouh" in ln)
    assert json.loads(cli("hub", "list", "nodes", "--json", *root))[0]["disabled"] is True
    assert "node 'ouh' (id 1) enabled" in cli("hub", "enable-node", "1", *root)
    refused = runner.invoke(app, ["hub", "disable-node", "99", *root], env=env)
    assert refused.exit_code == 1 and "PATCH /api/nodes/99 refused (404)" in refused.output, refused.output
    assert "node 'ouh' (id 1) deleted" in cli("hub", "delete-node", "1", *root)
    assert json.loads(cli("hub", "list", "nodes", "--json", *root)) == []
