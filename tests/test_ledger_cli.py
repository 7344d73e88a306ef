"""`nordfed ledger verify|show|export|merge|checkpoint`: exit codes and what they print."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nordfed.cli.ledger import register
from nordfed.ledger import Checkpoint, Ledger
from nordfed.privacy.crypto import Identity

N = 6


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.command("version")(lambda: None)  # a second command keeps `ledger` a named group, as in the real app
    return app


@pytest.fixture
def keys(tmp_path) -> tuple[Identity, Path]:
    ident = Identity.generate()
    ident.save(tmp_path / "keys")
    return ident, tmp_path / "keys"


@pytest.fixture
def ledger_path(tmp_path, keys) -> Path:
    path = tmp_path / "node.ledger"
    with Ledger.open(path, keys[0]) as led:
        for i in range(1, N + 1):
            led.append("run_completed", "oslo", {"task_id": i, "code_hash": f"{i:064x}"})
    return path


def run(app, *args: str):
    return CliRunner(env={"COLUMNS": "200"}).invoke(app, ["ledger", *map(str, args)])


def test_verify_intact_and_broken(app, ledger_path, keys):
    ident, key_dir = keys
    for key in (ident.signing_public, key_dir / "signing.pub"):
        res = run(app, "verify", ledger_path, "--key", key)
        assert res.exit_code == 0, res.output
        assert f"intact: {N} entries" in res.output
    res = run(app, "verify", ledger_path)
    assert res.exit_code == 0 and "signer keys not pinned" in res.output
    res = run(app, "verify", ledger_path, "--key", Identity.generate().signing_public)
    assert res.exit_code == 1 and "entry 1: unknown_signer" in res.output

    con = sqlite3.connect(ledger_path)
    con.execute("DROP TRIGGER entries_no_update")
    con.execute("UPDATE entries SET payload = replace(payload, '\"task_id\":4', '\"task_id\":5') WHERE seq = 4")
    con.commit()
    con.close()
    res = run(app, "verify", ledger_path, "--key", ident.signing_public)
    assert res.exit_code == 1 and "BROKEN at entry 4: hash_mismatch" in res.output
    res = run(app, "show", ledger_path, "--tail", 0)
    assert res.exit_code == 0 and "hash_mismatch" in res.output and res.output.count("│ ok ") == N - 1
    res = run(app, "verify", ledger_path, "--json")
    rep = json.loads(res.stdout)
    assert res.exit_code == 1 and rep["problems"][0]["seq"] == 4 and rep["problems"][0]["reason"] == "hash_mismatch"


def test_verify_checkpoint_and_bad_input(app, tmp_path, ledger_path, keys):
    with Ledger.open(ledger_path, create=False) as led:
        cp = led.checkpoint()
    assert run(app, "verify", ledger_path, "--checkpoint", str(cp)).exit_code == 0
    later = Checkpoint(N + 2, cp.entry_hash)
    res = run(app, "verify", ledger_path, "--checkpoint", str(later))
    assert res.exit_code == 1 and f"entry {N + 1}: truncated" in res.output
    cp_file = tmp_path / "cp.json"
    cp_file.write_text(json.dumps(cp.countersign(keys[0]).to_dict()))
    assert run(app, "verify", ledger_path, "--checkpoint", cp_file).exit_code == 0
    assert run(app, "verify", ledger_path, "--checkpoint", "7:nothex").exit_code == 2
    assert run(app, "verify", ledger_path, "--key", "not-a-key").exit_code == 2
    res = run(app, "verify", tmp_path / "missing.ledger")
    assert res.exit_code == 2 and "no such ledger file" in res.output
    assert not (tmp_path / "missing.ledger").exists()


def test_show_and_export(app, tmp_path, ledger_path):
    res = run(app, "show", ledger_path, "--tail", 2)
    assert res.exit_code == 0, res.output
    assert "run_completed" in res.output and f"{N - 1}" in res.output and "intact" in res.output
    res = run(app, "export", ledger_path, "--since", 3)
    assert res.exit_code == 0
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [d["seq"] for d in lines] == list(range(4, N + 1))
    out = tmp_path / "exp.jsonl"
    assert run(app, "export", ledger_path, "--out", out).exit_code == 0
    assert len(out.read_text().splitlines()) == N


def test_merge_and_checkpoint(app, tmp_path, ledger_path, keys):
    ident, key_dir = keys
    exp = tmp_path / "exp.jsonl"
    run(app, "export", ledger_path, "--out", exp)
    hub_copy = tmp_path / "hub.ledger"
    res = run(app, "merge", hub_copy, exp, "--key", ident.signing_public)
    assert res.exit_code == 0 and f"{N} added" in res.output
    assert run(app, "merge", hub_copy, exp).exit_code == 0  # idempotent
    with Ledger.open(tmp_path / "other.ledger", ident) as other:  # same key, different history: a fork at 1
        other.append("run_completed", "oslo", {"task_id": 99})
    other_exp = tmp_path / "other.jsonl"
    run(app, "export", tmp_path / "other.ledger", "--out", other_exp)
    res = run(app, "merge", hub_copy, other_exp)
    assert res.exit_code == 1 and "fork at entry 1" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text(exp.read_text().splitlines()[0] + "\n{oops\n")
    res = run(app, "merge", hub_copy, bad)
    assert res.exit_code == 2 and "bad.jsonl, line 2" in res.output

    res = run(app, "checkpoint", hub_copy)
    published = Checkpoint.from_dict(json.loads(res.stdout))
    assert res.exit_code == 0 and published.seq == N and not published.signatures
    res = run(app, "checkpoint", ledger_path, "--confirm", str(published), "--key-dir", key_dir)
    signed = Checkpoint.from_dict(json.loads(res.stdout))
    assert res.exit_code == 0 and signed.signed_by() == [ident.signing_public]
    res = run(app, "checkpoint", tmp_path / "other.ledger", "--confirm", str(published))
    assert res.exit_code == 1 and "does not confirm" in res.output
