"""The ledger file: an append-only SQLite table of signed, hash-chained entries (stdlib sqlite3, WAL).

Each append is one ``BEGIN IMMEDIATE`` transaction, so writers on the same file are serialised and each one
chains onto the real head; the head this handle last saw must still be in the chain, so a file that was
restored from a backup or edited under a running writer is refused instead of silently forked. Triggers refuse
UPDATE and DELETE; anyone who bypasses them is caught by :meth:`Ledger.verify`.

>>> with Ledger.open("node.ledger", identity) as led:                                   # doctest: +SKIP
...     led.append("run_completed", "oslo", {"task_id": 7, "result_sha256": "…"})
...     led.verify([identity.signing_public]).ok
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from nordfed.ledger.entry import FIELDS, GENESIS, Checkpoint, Entry, LedgerFormatError, make_entry, signing_key_of
from nordfed.ledger.verify import VerifyReport, parse_row, verify_rows
from nordfed.privacy.crypto import Identity, VerificationError

FORMAT = "nordfed-ledger/1"
_COLS = ", ".join(FIELDS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL, payload TEXT NOT NULL,
    prev_hash TEXT NOT NULL, entry_hash TEXT NOT NULL, signer TEXT NOT NULL, signature TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
    BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
INSERT OR IGNORE INTO meta VALUES ('format', '{FORMAT}');
"""


class LedgerError(Exception):
    """The ledger file cannot be used as asked (not a ledger, read-only handle, corrupt head, gap on merge)."""


class LedgerFork(LedgerError):
    """Two copies of a chain disagree at ``seq``."""

    def __init__(self, seq: int, message: str):
        super().__init__(f"fork at entry {seq}: {message}")
        self.seq = seq


@dataclass(frozen=True)
class MergeReport:
    added: int
    present: int
    head: Checkpoint | None


def _row(e: Entry) -> tuple[Any, ...]:
    return (e.seq, e.ts, e.kind, e.actor, json.dumps(e.payload, sort_keys=True, separators=(",", ":")),
            e.prev_hash, e.entry_hash, e.signer, e.signature)


class Ledger:
    """One chain in one SQLite file. Thread-safe; open with a signing key to append, without one to read/merge."""

    def __init__(self, con: sqlite3.Connection, path: Path, signing_key: SigningKey | None):
        self._con, self.path, self._key = con, path, signing_key
        self._lock = threading.Lock()
        self._durable = True  # the connection's current synchronous mode (FULL), switched per append
        # raw, not parsed: a damaged head must not stop anyone from opening the file to verify or show it
        row = con.execute("SELECT seq, entry_hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        self._seen: tuple[int, str] = (row[0], row[1]) if row else (0, GENESIS)

    @classmethod
    def open(cls, path: str | Path, signing_key: SigningKey | Identity | None = None, *,
             create: bool = True) -> Ledger:
        path = Path(path)
        if not create and not path.is_file():
            raise LedgerError(f"{path}: no such ledger file")
        try:
            con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")  # an audit record must survive a power cut once append returns
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "entries" not in tables:
                raise LedgerError(f"{path}: is an SQLite file but not a nordfed ledger (no 'entries' table)")
            if not tables:
                if not create:
                    raise LedgerError(f"{path}: empty file, not a ledger")
                con.executescript(_SCHEMA)
            fmt = con.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        except (sqlite3.DatabaseError, LedgerError) as exc:
            con.close()
            if isinstance(exc, LedgerError):
                raise
            raise LedgerError(f"{path}: not a readable ledger ({exc})") from exc
        if fmt is None or fmt[0] != FORMAT:
            con.close()
            raise LedgerError(f"{path}: ledger format {fmt[0] if fmt else None!r}, expected {FORMAT!r}")
        return cls(con, path, signing_key_of(signing_key) if signing_key is not None else None)

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reading -----------------------------------------------------------------------------------------------

    def rows(self, since: int = 0) -> list[tuple[Any, ...]]:
        """Stored rows as they are (possibly tampered), in seq order, for verification and display."""
        with self._lock:
            return self._con.execute(f"SELECT {_COLS} FROM entries WHERE seq > ? ORDER BY seq", (since,)).fetchall()

    def entries(self, since: int = 0) -> Iterator[Entry]:
        """Parsed entries after ``since``; a row that no longer parses raises LedgerError naming it."""
        for row in self.rows(since):
            yield self._parse(row)

    def _parse(self, row: Sequence[Any]) -> Entry:
        try:
            return parse_row(row)
        except LedgerFormatError as exc:
            raise LedgerError(f"{self.path}: entry {row[0]}: {exc}") from exc

    def head(self) -> Entry | None:
        with self._lock:
            row = self._con.execute(f"SELECT {_COLS} FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        return self._parse(row) if row else None

    def checkpoint(self) -> Checkpoint | None:
        """The current head as a checkpoint the hub can publish and nodes can countersign."""
        h = self.head()
        return Checkpoint(h.seq, h.entry_hash) if h else None

    def export_since(self, seq: int = 0) -> list[Entry]:
        return list(self.entries(seq))

    def verify(self, public_keys: Iterable[str] | None = None,
               checkpoints: Iterable[Checkpoint] = ()) -> VerifyReport:
        """Check every entry's hash, signature (against ``public_keys`` when given), order and links, and that
        the chain still contains each checkpoint."""
        return verify_rows(self.rows(), public_keys, checkpoints)

    # writing -----------------------------------------------------------------------------------------------

    def append(self, kind: str, actor: str, payload: Mapping[str, Any], *, durable: bool = True) -> Entry:
        """Sign and append one entry after the current head; returns it once it is durable.

        ``durable=False`` skips the fsync: the entry survives a crash of this process at once, a power cut only
        after the next durable append (or checkpoint) on this file, which syncs the WAL up to and including it.
        """
        if self._key is None:
            raise LedgerError(f"{self.path}: opened without a signing key; cannot append")
        with self._lock:
            if durable != self._durable:
                self._con.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            with self._transaction():
                prev = self._checked_head()
                entry = make_entry(prev[0] + 1, kind, actor, payload, prev[1], self._key)
                self._con.execute(f"INSERT INTO entries ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?)", _row(entry))
            self._seen = (entry.seq, entry.entry_hash)
        return entry

    def merge(self, entries: Iterable[Entry], public_keys: Iterable[str] | None = None) -> MergeReport:
        """Add a replica's entries that extend this copy; all or nothing.

        Entries already present must be identical (else LedgerFork); new ones must continue the head without a
        gap, hash correctly and carry a valid signature (by a key in ``public_keys`` when given).
        """
        trusted = set(public_keys) if public_keys is not None else None
        with self._lock:
            with self._transaction():
                head = self._checked_head()
                added, present = self._merge_into(head, sorted(entries, key=lambda x: x.seq), trusted)
                head = self._checked_head() if added else head
            self._seen = head
        return MergeReport(added, present, Checkpoint(*head) if head[0] else None)

    def _merge_into(self, head: tuple[int, str], entries: list[Entry], trusted: set[str] | None) -> tuple[int, int]:
        added = present = 0
        for e in entries:
            if not e.hash_ok():
                raise LedgerError(f"incoming entry {e.seq}: content does not hash to its entry_hash")
            if not e.signature_ok() or (trusted is not None and e.signer not in trusted):
                raise LedgerError(f"incoming entry {e.seq}: signature missing, bad or by an unpinned key")
            if e.seq <= head[0]:
                mine = self._con.execute("SELECT entry_hash FROM entries WHERE seq = ?", (e.seq,)).fetchone()
                if mine is None or mine[0] != e.entry_hash:
                    raise LedgerFork(e.seq, f"this copy has {mine[0][:12] if mine else None}…, the replica "
                                            f"has {e.entry_hash[:12]}…")
                present += 1
                continue
            if e.seq != head[0] + 1:
                raise LedgerError(f"incoming entries jump from {head[0]} to {e.seq}; "
                                  f"export from seq {head[0]} to merge")
            if e.prev_hash != head[1]:
                raise LedgerFork(e.seq, f"the replica's entry {e.seq} does not follow this copy's entry {head[0]}")
            self._con.execute(f"INSERT INTO entries ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?)", _row(e))
            head, added = (e.seq, e.entry_hash), added + 1
        return added, present

    def countersign(self, checkpoint: Checkpoint) -> Checkpoint:
        """Confirm a published checkpoint against this copy and add our signature; LedgerFork if we disagree."""
        if self._key is None:
            raise LedgerError(f"{self.path}: opened without a signing key; cannot countersign")
        try:
            checkpoint.signed_by()
        except VerificationError as exc:
            raise LedgerError(str(exc)) from exc
        rep = self.verify(checkpoints=[checkpoint])
        if not rep.ok:
            raise LedgerFork(rep.first.seq, f"will not countersign checkpoint {checkpoint}: {rep.first}")
        return checkpoint.countersign(self._key)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error: one append or merge is one write transaction."""
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def _checked_head(self) -> tuple[int, str]:
        """Inside the write lock: the real head, after checking it is intact and still extends what we saw."""
        row = self._con.execute(f"SELECT {_COLS} FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        seen_seq, seen_hash = self._seen
        if row is None:
            if seen_seq:
                raise LedgerFork(1, f"{self.path} is empty but this handle had written up to entry {seen_seq}")
            return 0, GENESIS
        head = self._parse(row)
        if not head.hash_ok():
            raise LedgerError(f"{self.path}: head entry {head.seq} does not hash to its entry_hash; "
                              "run `nordfed ledger verify` before writing")
        if seen_seq:
            at = self._con.execute("SELECT entry_hash FROM entries WHERE seq = ?", (seen_seq,)).fetchone()
            if at is None or at[0] != seen_hash:
                raise LedgerFork(seen_seq, f"{self.path} no longer holds the entry {seen_seq} this handle saw "
                                           "(restored from a backup or edited?)")
        return head.seq, head.entry_hash
