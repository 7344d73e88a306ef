"""`nordfed hub create-root` and `nordfed hub start` (a real subprocess serving on a loopback port)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from nordfed.cli import app
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
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "hub did not start"
                time.sleep(0.1)
        token = httpx.post(f"{base}/token", json={"username": "root", "password": "root-password-1"}).json()
        assert token["roles"] == ["root"]
        admin_commands_work_against(f"http://127.0.0.1:{port}", base)
    finally:
        proc.terminate()
        proc.wait(15)


def admin_commands_work_against(url: str, base: str) -> None:
    auth = ["--url", url, "--password", "root-password-1"]
    org = runner.invoke(app, ["hub", "create-organization", "Oslo University Hospital", "NO", *auth])
    assert org.exit_code == 0 and "(id 2)" in org.output, org.output
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
