"""Day 2: a node ledger entry edited in place (payload changed, entry_hash left as it was) is caught by
`nordfed ledger verify`, alone and against the hub's copy; the fork line names the field that differs, since both
copies still show the same entry_hash."""

from __future__ import annotations

import sqlite3

from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.ledger import Ledger
from nordfed.privacy.crypto import Identity


def _run(*args: object):
    return CliRunner(env={"COLUMNS": "300"}).invoke(app, ["ledger", *map(str, args)])


def test_an_entry_edited_in_place_is_caught_and_the_fork_names_the_changed_field(tmp_path):
    ident = Identity.generate()
    path = tmp_path / "node.ledger"
    with Ledger.open(path, ident) as led:
        led.append("policy_loaded", "DK", {"min_cell_count": 20})
        led.append("run_completed", "DK", {"task_id": 1})
    copy = tmp_path / "hub.jsonl"
    assert _run("export", path, "--out", copy).exit_code == 0  # what the hub holds
    with sqlite3.connect(path) as con:  # someone lowers the recorded cell count, bypassing the ledger
        con.execute("DROP TRIGGER entries_no_update")
        con.execute("UPDATE entries SET payload = replace(payload, '20', '10') WHERE seq = 1")
    res = _run("verify", path, "--key", ident.signing_public)
    assert res.exit_code == 1 and "BROKEN at entry 1: hash_mismatch" in res.output
    res = _run("verify", path, "--against", copy)
    assert res.exit_code == 1
    assert f"{copy.name} in payload (here" in " ".join(res.output.split())
