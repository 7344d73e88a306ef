"""Chain verification as a pure function of the stored rows: which entry is the first broken one, and why.

Reasons, per entry: ``unreadable`` (a field no longer parses), ``hash_mismatch`` (content changed after it was
written), ``reordered`` (a valid entry stored at another position than the one it was signed for),
``bad_signature``, ``unknown_signer`` (valid signature by a key that is not pinned), ``gap`` (an entry is
missing), ``broken_link`` (prev_hash does not name the entry before), ``fork`` (two entries claim the same
predecessor, or the chain disagrees with a checkpoint) and ``truncated`` (the chain ends before a checkpoint).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from nordfed.ledger.entry import FIELDS, GENESIS, Checkpoint, Entry, LedgerFormatError

Reason = Literal["unreadable", "hash_mismatch", "reordered", "bad_signature", "unknown_signer", "gap",
                 "broken_link", "fork", "truncated"]


@dataclass(frozen=True)
class Problem:
    seq: int
    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"entry {self.seq}: {self.reason} ({self.detail})"


@dataclass(frozen=True)
class VerifyReport:
    count: int
    head: Checkpoint | None
    problems: list[Problem] = field(default_factory=list)
    signers: list[str] = field(default_factory=list)  # keys that signed valid entries
    pinned: bool = False  # signer keys were checked against a trusted set

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return self.problems[0] if self.problems else None

    def summary(self) -> str:
        if self.ok:
            head = f"head {self.head}" if self.head else "empty"
            return f"intact: {self.count} entries, {head}" + ("" if self.pinned else " (signer keys not pinned)")
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"BROKEN at {self.first}{more}"


def parse_row(row: Sequence[Any]) -> Entry:
    """A stored row (columns in FIELDS order, payload as JSON text) → Entry; LedgerFormatError names the field."""
    d = dict(zip(FIELDS, row, strict=True))
    try:
        d["payload"] = json.loads(d["payload"])
    except (TypeError, ValueError) as exc:
        raise LedgerFormatError(f"field 'payload' is not valid JSON: {exc}") from exc
    return Entry.from_dict(d)


def _logical_positions(rows: Sequence[Sequence[Any]]) -> tuple[dict[int, int], list[int]]:
    """Follow prev_hash links from GENESIS over the stored hashes: row index → position in the linked chain.

    Also returns the indexes of rows that claim an already-claimed predecessor (forks inside one file).
    """
    by_prev: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        by_prev.setdefault(row[5], []).append(i)
    pos: dict[int, int] = {}
    forks = [i for ids in by_prev.values() if len(ids) > 1 for i in ids[1:]]
    cur, n = GENESIS, 1
    while True:
        ids = by_prev.get(cur)
        if not ids or ids[0] in pos:
            return pos, forks
        pos[ids[0]] = n
        cur, n = rows[ids[0]][6], n + 1


def verify_rows(rows: Sequence[Sequence[Any]], public_keys: Iterable[str] | None = None,
                checkpoints: Iterable[Checkpoint] = (), max_problems: int = 100) -> VerifyReport:
    """Verify stored rows (ordered by their seq column) as one chain starting at entry 1."""
    trusted = set(public_keys) if public_keys is not None else None
    logical, forks = _logical_positions(rows)
    fork_rows = set(forks)
    problems: list[Problem] = []
    signers: set[str] = set()
    stored_hash: dict[int, str] = {}
    expected, prev_hash = 1, GENESIS  # prev_hash None = previous row was broken; don't cascade link errors
    for i, row in enumerate(rows):
        seq = row[0] if isinstance(row[0], int) else expected
        stored_hash[seq] = row[6]
        link_prev, prev_hash = prev_hash, row[6]
        if seq > expected:
            problems.append(Problem(expected, "gap", f"entries {expected}..{seq - 1} are missing"
                                    if seq - 1 > expected else f"entry {expected} is missing"))
            link_prev = None
        expected = seq + 1
        try:
            e = parse_row(row)
        except LedgerFormatError as exc:
            problems.append(Problem(seq, "unreadable", str(exc)))
            prev_hash = None
            continue
        if not e.hash_ok():
            k = logical.get(i)
            if k is not None and k != seq and e.with_seq(k).hash_ok():
                problems.append(Problem(seq, "reordered", f"the entry stored here was written as entry {k}"))
            else:
                problems.append(Problem(seq, "hash_mismatch", "content does not hash to its entry_hash "
                                        "(changed after it was written)"))
            prev_hash = None
            continue
        if not e.signature_ok():
            problems.append(Problem(seq, "bad_signature", f"signature does not verify under signer {e.signer}"))
            continue
        if trusted is not None and e.signer not in trusted:
            problems.append(Problem(seq, "unknown_signer", f"validly signed by {e.signer}, which is not pinned"))
            continue
        signers.add(e.signer)
        if i in fork_rows:
            problems.append(Problem(seq, "fork", f"another entry already follows {e.prev_hash[:12]}…"))
        elif link_prev is not None and e.prev_hash != link_prev:
            problems.append(Problem(seq, "broken_link", f"prev_hash {e.prev_hash[:12]}… does not name entry "
                                    f"{seq - 1} ({link_prev[:12]}…)"))
        if len(problems) >= max_problems:
            break
    last = rows[-1] if rows else None
    head_seq = last[0] if last is not None and isinstance(last[0], int) else 0
    for cp in checkpoints:
        if cp.seq > head_seq:
            problems.append(Problem(head_seq + 1, "truncated", f"the chain ends at {head_seq} but checkpoint "
                                    f"{cp.seq} was published"))
        elif stored_hash.get(cp.seq) != cp.entry_hash:
            problems.append(Problem(cp.seq, "fork", f"entry {cp.seq} is not the one checkpointed "
                                    f"({cp.entry_hash[:12]}…)"))
    problems.sort(key=lambda p: p.seq)  # stable: per-entry reasons before checkpoint reasons at the same seq
    head = Checkpoint(head_seq, last[6]) if last is not None and head_seq and isinstance(last[6], str) else None
    return VerifyReport(count=len(rows), head=head, problems=problems, signers=sorted(signers),
                        pinned=trusted is not None)
