"""The tamper-evident ledger: round trip, each kind of tampering named with its sequence number, replication."""

from __future__ import annotations

import itertools
import json
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from nordfed.ledger import (
    GENESIS,
    Checkpoint,
    Entry,
    Ledger,
    LedgerError,
    LedgerFork,
    LedgerFormatError,
    dump_jsonl,
    load_jsonl,
    make_entry,
)
from nordfed.privacy.crypto import Identity, VerificationError

N = 10


@pytest.fixture(scope="module")
def node() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def mallory() -> Identity:
    return Identity.generate()


def fill(led: Ledger, n: int = N, start: int = 1) -> list[Entry]:
    kinds = ("task_received", "run_completed", "run_refused", "policy_changed")
    return [led.append(kinds[i % 4], "oslo", {"task_id": f"task-{i:04d}", "algorithm": "km@1.0",
                                             "result_sha256": f"{i:064x}"}) for i in range(start, start + n)]


@pytest.fixture
def ledger_path(tmp_path, node) -> Path:
    path = tmp_path / "node.ledger"
    with Ledger.open(path, node) as led:
        fill(led)
    return path


def tamper(path: Path, *sql: str) -> None:
    """What someone with file access can do: drop the append-only triggers and edit rows."""
    con = sqlite3.connect(path)
    con.execute("DROP TRIGGER entries_no_update")
    con.execute("DROP TRIGGER entries_no_delete")
    for stmt in sql:
        con.execute(stmt)
    con.commit()
    con.close()


def verify(path: Path, keys: list[str] | None, **kw):
    with Ledger.open(path, create=False) as led:
        return led.verify(keys, **kw)


def test_round_trip(ledger_path, node):
    with Ledger.open(ledger_path, node) as led:
        entries = list(led.entries())
        assert [e.seq for e in entries] == list(range(1, N + 1))
        assert entries[0].prev_hash == GENESIS
        assert all(b.prev_hash == a.entry_hash for a, b in itertools.pairwise(entries))
        assert entries[2].payload == {"task_id": "task-0003", "algorithm": "km@1.0", "result_sha256": f"{3:064x}"}
        assert entries[0].ts.endswith("+00:00") and entries[0].signer == node.signing_public
        assert led.head() == entries[-1]
        rep = led.verify([node.signing_public])
        assert rep.ok and rep.count == N and rep.pinned and rep.signers == [node.signing_public]
        assert rep.head == Checkpoint(N, entries[-1].entry_hash)
        nxt = led.append("model_registered", "hub-admin", {"model": "crc-risk", "version": "2.1"})
    assert nxt.seq == N + 1 and nxt.prev_hash == entries[-1].entry_hash
    assert verify(ledger_path, [node.signing_public]).ok  # persisted and reopened


def test_append_only_triggers(ledger_path):
    con = sqlite3.connect(ledger_path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("UPDATE entries SET actor = 'x' WHERE seq = 2")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        con.execute("DELETE FROM entries WHERE seq = 2")
    con.close()


def test_payload_byte_changed_in_file(ledger_path, node):
    assert not Path(f"{ledger_path}-wal").exists()  # closed: everything is in the main file
    raw = ledger_path.read_bytes()
    assert raw.count(b"task-0003") == 1
    ledger_path.write_bytes(raw.replace(b"task-0003", b"task-9003"))
    with Ledger.open(ledger_path, create=False) as led:
        assert list(led.entries())[2].payload["task_id"] == "task-9003"  # the edit took, sqlite does not notice
        rep = led.verify([node.signing_public])
    assert not rep.ok and rep.first.seq == 3 and rep.first.reason == "hash_mismatch"
    assert len(rep.problems) == 1  # no cascade: entry 4 still links to the stored hash of entry 3


def test_unparseable_field(ledger_path, node):
    tamper(ledger_path, "UPDATE entries SET payload = '{not json' WHERE seq = 6",
           f"UPDATE entries SET kind = 'Not A Kind' WHERE seq = {N}")  # a damaged head still opens for verify
    rep = verify(ledger_path, [node.signing_public])
    assert (rep.first.seq, rep.first.reason) == (6, "unreadable") and "payload" in rep.first.detail
    assert (rep.problems[1].seq, rep.problems[1].reason) == (N, "unreadable") and "'kind'" in rep.problems[1].detail
    with Ledger.open(ledger_path, create=False) as led, pytest.raises(LedgerError, match="entry 6"):
        list(led.entries())


def test_deleted_row(ledger_path, node):
    tamper(ledger_path, "DELETE FROM entries WHERE seq = 4")
    rep = verify(ledger_path, [node.signing_public])
    assert (rep.first.seq, rep.first.reason) == (4, "gap") and rep.count == N - 1


def test_swapped_rows(ledger_path, node):
    tamper(ledger_path, "UPDATE entries SET seq = -1 WHERE seq = 5", "UPDATE entries SET seq = 5 WHERE seq = 6",
           "UPDATE entries SET seq = 6 WHERE seq = -1")
    rep = verify(ledger_path, [node.signing_public])
    assert (rep.first.seq, rep.first.reason) == (5, "reordered")
    assert "written as entry 6" in rep.first.detail
    assert (rep.problems[1].seq, rep.problems[1].reason) == (6, "reordered")


def _forge(entries: list[Entry], at: int, key: Identity) -> list[Entry]:
    """Rewrite entry ``at`` and re-chain and re-sign everything after it, as a forger with ``key`` would."""
    out, prev = [], entries[at - 2].entry_hash
    for e in entries[at - 1:]:
        payload = {**e.payload, "result_sha256": "f" * 64} if e.seq == at else e.payload
        f = make_entry(e.seq, e.kind, e.actor, payload, prev, key, ts=e.ts)
        out.append(f)
        prev = f.entry_hash
    return out


def _rewrite(path: Path, forged: list[Entry]) -> None:
    tamper(path, f"DELETE FROM entries WHERE seq >= {forged[0].seq}")
    con = sqlite3.connect(path)
    con.executemany("INSERT INTO entries VALUES (?,?,?,?,?,?,?,?,?)",
                    [(e.seq, e.ts, e.kind, e.actor, json.dumps(e.payload), e.prev_hash, e.entry_hash, e.signer,
                      e.signature) for e in forged])
    con.commit()
    con.close()


def test_resigned_with_another_key(ledger_path, node, mallory):
    with Ledger.open(ledger_path, create=False) as led:
        entries = list(led.entries())
    _rewrite(ledger_path, _forge(entries, 3, mallory))
    rep = verify(ledger_path, [node.signing_public])
    assert (rep.first.seq, rep.first.reason) == (3, "unknown_signer")
    # without pinned keys the forgery is self-consistent: the report says so and shows the foreign signer
    loose = verify(ledger_path, None)
    assert loose.ok and not loose.pinned and mallory.signing_public in loose.signers


def test_signature_replaced_keeping_signer(ledger_path, node, mallory):
    with Ledger.open(ledger_path, create=False) as led:
        e = list(led.entries())[6]
    sig = make_entry(e.seq, e.kind, e.actor, e.payload, e.prev_hash, mallory, ts=e.ts).signature
    tamper(ledger_path, f"UPDATE entries SET signature = '{sig}' WHERE seq = 7")
    for keys in ([node.signing_public], None):
        rep = verify(ledger_path, keys)
        assert (rep.first.seq, rep.first.reason) == (7, "bad_signature")


def test_truncated_tail_vs_checkpoint(ledger_path, node):
    with Ledger.open(ledger_path, create=False) as led:
        cp = led.checkpoint()
    assert cp.seq == N
    tamper(ledger_path, f"DELETE FROM entries WHERE seq > {N - 3}")
    assert verify(ledger_path, [node.signing_public]).ok  # a clean cut is invisible without a checkpoint...
    rep = verify(ledger_path, [node.signing_public], checkpoints=[cp])
    assert (rep.first.seq, rep.first.reason) == (N - 2, "truncated")  # ...and named with one


def test_checkpoint_fork_after_restore(tmp_path, ledger_path, node):
    backup = tmp_path / "backup.ledger"
    backup.write_bytes(ledger_path.read_bytes())
    with Ledger.open(ledger_path, node) as led:
        fill(led, 2, start=N + 1)
        cp = led.checkpoint()
    with Ledger.open(backup, node) as restored:  # the node restored from backup and kept writing
        fill(restored, 3, start=100)
        rep = restored.verify([node.signing_public], checkpoints=[cp])
    assert (rep.first.seq, rep.first.reason) == (N + 2, "fork")


def test_append_refuses_a_file_changed_underneath(ledger_path, node):
    with Ledger.open(ledger_path, node) as writer, Ledger.open(ledger_path, node) as other:
        fill(other, 1, start=50)  # another writer on the same file is fine: the chain just continues
        assert writer.append("run_completed", "oslo", {"task_id": "y"}).seq == N + 2
        # the file is rolled back to an older state under the running writer (backup restore, hand edit)
        tamper(ledger_path, f"DELETE FROM entries WHERE seq > {N - 1}")
        with pytest.raises(LedgerFork, match=f"entry {N + 2}"):
            writer.append("run_completed", "oslo", {"task_id": "z"})
    assert verify(ledger_path, None).count == N - 1  # the refused append wrote nothing


def test_append_refuses_corrupt_head(ledger_path, node):
    tamper(ledger_path, f"UPDATE entries SET actor = 'eve' WHERE seq = {N}")
    with Ledger.open(ledger_path, node) as led, pytest.raises(LedgerError, match=f"head entry {N}"):
        led.append("run_completed", "oslo", {"task_id": "x"})
    assert verify(ledger_path, None).count == N  # nothing was written


def test_two_writers_do_not_fork(tmp_path, node):
    path = tmp_path / "shared.ledger"
    a, b = Ledger.open(path, node), Ledger.open(path, node)
    threads = [threading.Thread(target=fill, args=(h, 40)) for h in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rep = a.verify([node.signing_public])
    assert rep.ok and rep.count == 80
    a.close()
    b.close()


def test_merge_replicas(tmp_path, ledger_path, node, mallory):
    hub = Ledger.open(tmp_path / "hub-copy.ledger")  # the hub's replica: no signing key, only merges
    with Ledger.open(ledger_path, create=False) as node_copy:
        rep = hub.merge(node_copy.export_since(0), [node.signing_public])
    assert (rep.added, rep.present) == (N, 0)
    with Ledger.open(ledger_path, node) as led:
        fill(led, 3, start=N + 1)
        rep = hub.merge(led.export_since(hub.head().seq - 2))  # overlap is checked, not re-added
        assert (rep.added, rep.present) == (3, 2) and rep.head == led.checkpoint()
        assert list(hub.entries()) == list(led.entries())
        assert hub.verify([node.signing_public]).ok
        # a replica that forked at N+2 (restored node) is refused as a whole
        forked = _forge(list(led.entries()), N + 2, node)
        with pytest.raises(LedgerFork) as exc:
            hub.merge(forked)
        assert exc.value.seq == N + 2
        fill(led, 2, start=N + 4)
        new = led.export_since(N + 3)
    with pytest.raises(LedgerError, match="jump"):
        hub.merge(new[1:])
    with pytest.raises(LedgerError, match=f"entry {N + 4}: content"):
        hub.merge([replace(new[0], actor="eve"), new[1]])
    with pytest.raises(LedgerError, match="unpinned"):
        hub.merge(new, [mallory.signing_public])
    assert hub.head().seq == N + 3  # every refused merge left the copy as it was
    assert hub.merge(new).added == 2 and hub.verify([node.signing_public]).ok
    with pytest.raises(LedgerError, match="without a signing key"):
        hub.append("run_completed", "hub", {})
    hub.close()


def test_checkpoint_countersign(tmp_path, ledger_path, node, mallory):
    hub_id = Identity.generate()
    with Ledger.open(ledger_path, create=False) as copy:
        published = copy.checkpoint().countersign(hub_id)
    with Ledger.open(ledger_path, node) as led:
        signed = led.countersign(published)
        assert signed.signed_by() == sorted([hub_id.signing_public, node.signing_public])
        assert signed.signed_by({node.signing_public}) == [node.signing_public]
        assert Checkpoint.parse(json.dumps(signed.to_dict())) == signed
        assert Checkpoint.parse(str(signed)) == Checkpoint(signed.seq, signed.entry_hash)
        with pytest.raises(LedgerFork):
            led.countersign(Checkpoint(3, "a" * 64))
        bad = replace(signed, signatures={**signed.signatures, mallory.signing_public: signed.signatures[
            node.signing_public]})
        with pytest.raises(VerificationError, match="does not verify"):
            bad.signed_by()


def test_entry_validation(tmp_path, node):
    with Ledger.open(tmp_path / "v.ledger", node) as led:
        with pytest.raises(LedgerFormatError, match="snake_case"):
            led.append("Run Completed", "oslo", {})
        with pytest.raises(LedgerFormatError, match="plain JSON"):
            led.append("run_completed", "oslo", {"auc": float("nan")})
        with pytest.raises(LedgerFormatError, match="never data"):
            led.append("run_completed", "oslo", {"rows": list(range(10_000))})
        with pytest.raises(LedgerFormatError, match="actor"):
            led.append("run_completed", "", {})
        assert led.head() is None
        e = led.append("run_completed", "oslo", {"task_id": 1})
    d = e.to_dict()
    for field, bad, msg in (("seq", 0, "'seq'"), ("prev_hash", "xyz", "'prev_hash'"), ("kind", 3, "'kind'"),
                            ("payload", [1], "'payload'")):
        with pytest.raises(LedgerFormatError, match=msg):
            Entry.from_dict({**d, field: bad})
    with pytest.raises(LedgerFormatError, match="lacks field 'signature'"):
        Entry.from_dict({k: v for k, v in d.items() if k != "signature"})
    path = tmp_path / "x.jsonl"
    with open(path, "w") as fh:
        dump_jsonl([e], fh)
        fh.write('{"seq": 2}\n')
    with pytest.raises(LedgerFormatError, match=r"x\.jsonl, line 2: entry lacks field 'ts'"):
        load_jsonl(path)


def test_open_errors(tmp_path):
    with pytest.raises(LedgerError, match="no such ledger"):
        Ledger.open(tmp_path / "missing.ledger", create=False)
    junk = tmp_path / "junk.ledger"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match=r"junk\.ledger: not a readable ledger"):
        Ledger.open(junk)
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(LedgerError, match="not a nordfed ledger"):
        Ledger.open(other)
