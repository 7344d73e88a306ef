"""Result retention: sealed results of tasks finished longer ago than the hub's setting are removed, the runs say so
in their log, and asking for them answers 410 (never a 500 or an empty result). On SQLite and PostgreSQL (the
latter when NORDFED_TEST_POSTGRES_URL is set). Time passes by moving ``finished_at`` into the past in the database."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from nordfed.cli import app as cli_app
from nordfed.hub.app import create_app
from nordfed.hub.db import open_hub_db
from nordfed.hub.lifecycle import expire_results
from nordfed.hub.models import Run, utcnow
from nordfed.hub.server import HubServer, free_port
from test_hub_cli import _wait_healthy
from test_hub_support import ROOT_PASSWORD, Api, Network, b64, build_network, hub_database

pytestmark = pytest.mark.network
DAYS = timedelta(days=30)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub_url(request, tmp_path):
    with hub_database(request.param, tmp_path) as url:
        yield url


def _finish(node: Api, task: dict, status: str = "completed", result: bool = True) -> str | None:
    """``node`` claims its run of ``task`` and ends it; returns the result it sent."""
    run = node.call("GET", "/runs/next", params={"timeout": 5})
    assert run["task_id"] == task["id"]
    sealed = b64() if result else None
    node.call("PATCH", f"/runs/{run['run_id']}", json={"status": status, **({"result": sealed} if sealed else {})})
    return sealed


def _age(url: str, task_id: int, days: int) -> None:
    """Pretend the task's finished runs finished ``days`` ago."""
    db = open_hub_db(url, create=False)
    try:
        with db.engine.begin() as con:
            con.execute(
                update(Run)
                .where(Run.task_id == task_id, Run.finished_at.is_not(None))
                .values(finished_at=utcnow() - timedelta(days=days))
            )
    finally:
        db.engine.dispose()


def _tasks(net: Network, url: str) -> dict[str, dict]:
    """old (completed 40 days ago), recent (completed now), old_failed (one result, one failure, 40 days ago),
    running (one run finished 40 days ago, the other still pending)."""
    a, b = net.nodes["node_a"], net.nodes["node_b"]
    tasks: dict[str, dict] = {}
    for name, runs in (("old", [("completed", True)] * 2), ("recent", [("completed", True)] * 2),
                       ("old_failed", [("completed", True), ("failed", False)])):
        tasks[name] = net.task(net.researcher_a, [a, b])
        for node, (status, result) in zip((a, b), runs, strict=True):
            _finish(node, tasks[name], status, result)
    tasks["running"] = net.task(net.researcher_a, [a, b])
    _finish(a, tasks["running"])
    for name in ("old", "old_failed", "running"):
        _age(url, tasks[name]["id"], 40)
    return tasks


def _assert_removed(net: Network, task: dict, note: str) -> None:
    gone = net.researcher_a.request("GET", f"/tasks/{task['id']}/results")
    assert gone.status_code == 410, gone.text
    assert note in gone.json()["detail"] and f"GET /api/tasks/{task['id']}" in gone.json()["detail"]
    waited = net.researcher_a.request("GET", f"/tasks/{task['id']}/results", params={"wait": 1})
    assert waited.status_code == 410
    seen = net.researcher_a.call("GET", f"/tasks/{task['id']}")
    assert seen["status"] in ("completed", "failed")  # statuses and logs stay
    for run in seen["runs"]:
        assert not run["has_result"]
    assert any(note in run["log"] for run in seen["runs"])


def _assert_kept(net: Network, task: dict) -> None:
    rows = net.researcher_a.call("GET", f"/tasks/{task['id']}/results")
    assert any(r["result"] for r in rows)


def test_expired_results_are_removed_and_answer_410(hub_url):
    with HubServer(create_app(hub_url, root_password=ROOT_PASSWORD)) as server:
        net = build_network(server.url)
        tasks = _tasks(net, hub_url)
        db = open_hub_db(hub_url, create=False)
        try:
            assert expire_results(db.engine, DAYS) == 3  # old: 2 runs, old_failed: the completed one
            assert expire_results(db.engine, DAYS) == 0  # nothing left, no second note
            with db.engine.connect() as con:
                old = [tasks["old"]["id"], tasks["old_failed"]["id"]]
                assert set(con.scalars(select(Run.result).where(Run.task_id.in_(old)))) == {None}
        finally:
            db.engine.dispose()
        note = f"result removed after 30 days (hub retention) on {utcnow().date().isoformat()}"
        _assert_removed(net, tasks["old"], note)
        _assert_removed(net, tasks["old_failed"], note)
        failed = next(r for r in net.researcher_a.call("GET", f"/tasks/{tasks['old_failed']['id']}")["runs"]
                      if r["status"] == "failed")
        assert note not in failed["log"]  # it had no result to remove
        _assert_kept(net, tasks["recent"])
        _assert_kept(net, tasks["running"])  # a task still running keeps the results it has


def test_hub_with_retention_removes_expired_results_at_start(hub_url):
    with HubServer(create_app(hub_url, root_password=ROOT_PASSWORD)) as server:
        net = build_network(server.url)
        tasks = _tasks(net, hub_url)
    with HubServer(create_app(hub_url, result_retention=DAYS)) as server:
        net = build_network_again(net, server.url)
        _assert_removed(net, tasks["old"], "result removed after 30 days (hub retention)")
        _assert_kept(net, tasks["recent"])
    with pytest.raises(ValueError, match="result_retention"):
        create_app(hub_url, result_retention=timedelta(days=-1))


def build_network_again(net: Network, url: str) -> Network:
    """The task owner, logged in again at the restarted hub (on a new port)."""
    net.researcher_a = Api(url).login("researcher_a")
    return net


def test_hub_start_result_retention_days(tmp_path):
    db = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    refused = CliRunner().invoke(cli_app, ["hub", "start", "--db", db, "--result-retention-days", "0"])
    assert refused.exit_code == 2 and "--result-retention-days" in refused.output
    with HubServer(create_app(db, root_password=ROOT_PASSWORD)) as server:
        net = build_network(server.url)
        tasks = _tasks(net, db)
    port = free_port()
    env = {**os.environ, "NORDFED_HUB_RESULT_RETENTION_DAYS": "30"}
    cmd = [sys.executable, "-c", "from nordfed.cli import app; app()", "hub", "start", "--db", db, "--port",
           str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_healthy(f"http://127.0.0.1:{port}/api", lambda: proc.poll() is None)
        net = build_network_again(net, f"http://127.0.0.1:{port}")
        _assert_removed(net, tasks["old"], "result removed after 30 days (hub retention)")
        _assert_kept(net, tasks["recent"])
    finally:
        proc.terminate()
        proc.wait(15)
    assert "task results are kept 30 days after their task finished" in proc.stdout.read().decode()


def _pages(url: str) -> tuple[int, int]:
    """``(page_count, auto_vacuum)`` of a SQLite hub file."""
    db = open_hub_db(url, create=False)
    try:
        with db.engine.connect() as con:
            return con.exec_driver_sql("PRAGMA page_count").scalar(), con.exec_driver_sql("PRAGMA auto_vacuum").scalar()
    finally:
        db.engine.dispose()


def test_sqlite_file_gives_back_the_space_of_removed_results(tmp_path):
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    with HubServer(create_app(url, root_password=ROOT_PASSWORD)) as server:
        net = build_network(server.url)
        tasks = _tasks(net, url)
    db = open_hub_db(url, create=False)
    try:  # the old task's results become large, as a study's Hessians are
        with db.engine.begin() as con:
            con.execute(update(Run).where(Run.task_id == tasks["old"]["id"]).values(result="x" * 4_000_000))
    finally:
        db.engine.dispose()
    full, mode = _pages(url)
    assert mode == 2  # INCREMENTAL, set when the file was made
    with HubServer(create_app(url, result_retention=DAYS)):
        pass  # the pass at start removes the old results, then frees their pages
    after, _ = _pages(url)
    page = 4096
    assert full - after > 0.9 * 2 * 4_000_000 / page, (full, after)  # two runs' results, given back
