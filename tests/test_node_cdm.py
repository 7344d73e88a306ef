"""How a node uses its site's CDM: the worker holds it only while it works, and a node refuses to start on a
cdm_url that names no OMOP CDM."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from nordfed.fed import wire
from nordfed.node.localnet import tiny_cdm
from nordfed.node.runtime import check_cdm
from nordfed.node.worker import SiteCDM, WarmWorker, WorkerSpec, _fresh
from nordfed.omop.store import open_cdm
from nordfed.policy.node import NodeConfig, PolicyError
from nordfed.studies import partials

# another process opens the file read-write and adds one person, once the node lets it
_WRITER = textwrap.dedent("""
    import sys, time, duckdb
    deadline = time.monotonic() + float(sys.argv[2])
    while True:
        try:
            con = duckdb.connect(sys.argv[1])
            break
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    con.execute("INSERT INTO person (person_id, gender_concept_id, year_of_birth, race_concept_id, "
                "ethnicity_concept_id) VALUES (999, 8507, 1970, 0, 0)")
    con.close()
""")


def _count(worker: WarmWorker) -> int:
    out = worker.run("nordfed.count", wire.encode({}), 30)
    assert out.status == "completed", out
    return int(wire.decode(out.result)["persons"])


def test_an_idle_worker_leaves_the_duckdb_file_to_other_processes(tmp_path):
    path = tmp_path / "dk.duckdb"
    url = tiny_cdm(f"duckdb:///{path}", 40)
    worker = WarmWorker(WorkerSpec("DK", url, 10, 2048, cdm_idle_s=2.0))
    try:
        assert _count(worker) == 40
        # right after a task (the next round of a study may come) the worker still holds it
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(str(path))
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", _WRITER, str(path), "30"], check=True, timeout=60)
        assert time.monotonic() - t0 < 20
        assert _count(worker) == 41  # reopened, and it sees what the other process wrote
    finally:
        worker.stop()


def test_a_task_waits_briefly_for_a_file_another_process_holds(tmp_path):
    path = tmp_path / "dk.duckdb"
    url = tiny_cdm(f"duckdb:///{path}", 40)
    worker = WarmWorker(WorkerSpec("DK", url, 10, 2048, cdm_idle_s=0.2))
    try:
        assert _count(worker) == 40
        deadline = time.monotonic() + 20
        while True:  # this process takes the file once the worker let go of it
            try:
                held = duckdb.connect(str(path))
                break
            except duckdb.IOException:
                assert time.monotonic() < deadline, "the worker never closed the CDM"
                time.sleep(0.05)
        threading.Timer(1.0, held.close).start()  # say a `nordfed omop summary` that takes a second
        assert _count(worker) == 40
    finally:
        worker.stop()


def test_study_caches_survive_a_reconnect_but_not_new_data(tmp_path):
    url = tiny_cdm(f"duckdb:///{tmp_path / 'dk.duckdb'}", 40)
    builds: list[int] = []

    def persons(cdm: SiteCDM) -> int:
        def build():
            builds.append(1)
            return cdm.query("SELECT count(*) AS n FROM person")

        return int(partials._cached(cdm, "test_persons", {}, build)["n"].iloc[0])

    cdm, retired = SiteCDM(url), []
    assert persons(cdm) == 40 and cdm.is_open
    cdm.close()
    with open_cdm(url) as other:  # a reader leaves the file as it was
        assert other.scalar("SELECT count(*) FROM person") == 40
    assert _fresh(cdm, retired) is cdm and persons(cdm) == 40 and len(builds) == 1  # a later round: cached
    cdm.close()
    with open_cdm(url) as other:
        other.execute("INSERT INTO person (person_id, gender_concept_id, year_of_birth, race_concept_id, "
                      "ethnicity_concept_id) VALUES (999, 8507, 1970, 0, 0)")
    new = _fresh(cdm, retired)
    assert new is not cdm and retired == [cdm]
    assert persons(new) == 41 and len(builds) == 2
    new.close()


def _node_config(tmp_path: Path, cdm_url: str) -> Path:
    p = tmp_path / "node.yaml"
    # nothing listens on port 1: a node that got as far as the hub would retry forever
    p.write_text(f"hub_url: http://127.0.0.1:1\napi_key: \"12345678\"\nname: SE\ncdm_url: {cdm_url}\n"
                 "key_dir: keys\n")
    return p


def _node_start(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from nordfed.cli import main; main()", "node", "start",
                           "--config", str(config)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "300"}, cwd=config.parent)


def test_node_refuses_to_start_on_a_missing_cdm(tmp_path):
    cfg = _node_config(tmp_path, "duckdb:///sites/se_typo.duckdb")
    r = _node_start(cfg)
    assert r.returncode == 1, r.stderr
    assert f"{cfg}: field cdm_url: no CDM at {tmp_path / 'sites' / 'se_typo.duckdb'}" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert not (tmp_path / "sites").exists() and not (tmp_path / "keys").exists()  # nothing made, no ledger


def test_node_refuses_to_start_on_a_database_that_is_not_a_cdm(tmp_path):
    con = duckdb.connect(str(tmp_path / "other.duckdb"))
    con.execute("CREATE TABLE patients (id INTEGER)")
    con.close()
    cfg = _node_config(tmp_path, "duckdb:///other.duckdb")
    r = _node_start(cfg)
    assert r.returncode == 1, r.stderr
    # relative to node.yaml's folder, and named in full
    assert f"{cfg}: field cdm_url: duckdb:///{tmp_path.resolve() / 'other.duckdb'} is not an OMOP CDM (no person " \
        "table)" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_cdm_check_on_both_engines(cdm_url, tmp_path):
    def config(url: str) -> NodeConfig:
        return NodeConfig(hub_url="http://127.0.0.1:1", api_key="12345678", name="SE", cdm_url=url,
                          key_dir=tmp_path / "keys")

    with pytest.raises(PolicyError, match="field cdm_url: no CDM"):
        check_cdm(config(cdm_url))
    with open_cdm(cdm_url, create=True) as cdm:
        cdm.execute("DROP TABLE person")
    with pytest.raises(PolicyError, match=r"is not an OMOP CDM \(no person table\)"):
        check_cdm(config(cdm_url))
    tiny_cdm(cdm_url, 3)
    check_cdm(config(cdm_url))
