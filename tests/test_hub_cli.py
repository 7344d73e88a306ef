"""`nordfed hub create-root` and `nordfed hub start` (a real subprocess serving on a loopback port)."""

from __future__ import annotations

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
        _wait_healthy(base, proc)
        token = httpx.post(f"{base}/token", json={"username": "root", "password": "root-password-1"}).json()
        assert token["roles"] == ["root"]
        admin_commands_work_against(f"http://127.0.0.1:{port}", base)
    finally:
        proc.terminate()
        proc.wait(15)
    banner = proc.stdout.read().decode()
    # the URL it names is the one login takes
    assert f"nordfed hub on http://127.0.0.1:{port} (" in banner
    assert f"nordfed login --hub http://127.0.0.1:{port} -u USER" in banner


def _wait_healthy(base: str, proc) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "hub exited"
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
    api_key = node.stdout.strip().splitlines()[-1]
    assert httpx.post(f"{base}/token/node", json={"api_key": api_key}).json()["name"] == "ouh"
    wrong = runner.invoke(app, ["hub", "create-organization", "X", "SE", "--url", url, "--password", "nope-nope"])
    assert wrong.exit_code == 1 and "login as 'root' failed" in wrong.output
    down = runner.invoke(
        app, ["hub", "create-organization", "X", "SE", "--url", "http://127.0.0.1:9", "--password", "x"]
    )
    assert down.exit_code == 1 and "cannot reach the hub" in down.output
