"""The node's own ledger (DESIGN invariant 3): every run it sees and every policy it starts with.

Entries carry identifiers, hashes and the node's own words, never data and never text written by algorithm
code (an exception message may quote a data value): such text is recorded as its sha256, which an auditor can
match against the run log the requester received.

| kind | when | payload |
|---|---|---|
| policy_loaded | every start | policy_sha256, file, file_sha256, min_cell_count, exact_event_times |
| policy_changed | a start whose policy differs from the last recorded one | previous/new hash, changed fields |
| task_received | a run is claimed | task_id, run_id, algorithm (name@version), code_hash, username, params_sha256 |
| run_refused | policy or disclosure control said no | task_id, run_id, reason[, detail_sha256] |
| run_completed | a result was sealed for the requester | task_id, run_id, result_sha256 (of the sealed blob) |
| run_failed | the run did not complete | task_id, run_id, reason[, detail_sha256] |
| result_not_posted | the hub did not take a sealed result | task_id, run_id, reason |

The hub keeps a copy (:class:`HubReplica`): the runtime pushes new entries over its channel once at start-up (all
the hub lacks) and then between runs: all of them once the node is idle, one batch at most every PUSH_EVERY_S while
runs keep coming; never between a claim and its answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nordfed.ledger import Entry, Ledger, LedgerError
from nordfed.ledger.verify import parse_row
from nordfed.node.channel import ChannelRefused, HubChannel
from nordfed.policy.node import NodeConfig, NodePolicy
from nordfed.privacy.crypto import Identity

log = logging.getLogger("nordfed.node")

MAX_REASON_CHARS = 500
SNAPSHOT = "policy.last.json"  # the last recorded policy, so policy_changed can name what changed
PUSH_BATCH = 500  # entries per push message
PUSH_IDLE_S = 1.0  # no run for this long with entries unpushed: the node is idle, push them
# While runs keep coming, push one batch at most this often: the hub checks ~0.1 ms per entry and the node waits for
# it (every 5 s, the round-trip benchmark's p99 grew by ~5 ms).
PUSH_EVERY_S = 30.0
PUSH_RETRY_S = 300.0  # after the hub refused entries (fork, bad entry), try again this much later
# ... unless the hub's head of this node's copy changed meanwhile (an administrator restarted the copy's epoch):
# asked this often while waiting, a cheap query
PUSH_PROBE_S = 10.0


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def run_ids(run: Mapping[str, Any]) -> dict[str, int]:
    return {"task_id": int(run["task_id"]), "run_id": int(run["run_id"])}


def outcome_payload(run: Mapping[str, Any], reason: str, detail: str | None = None) -> dict[str, Any]:
    """A refusal or failure: the node's own reason, plus the hash of any text that algorithm code produced."""
    out: dict[str, Any] = {**run_ids(run), "reason": reason[:MAX_REASON_CHARS]}
    if detail and detail != reason:
        out["detail_sha256"] = sha256_text(detail)
    return out


def policy_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level policy fields that differ: settings with old and new value; lists (pins, collaborations) with what
    was added, removed and changed, named (an auditor asks which algorithm or researcher, not only that one did).

    >>> policy_diff({"algorithms": [{"name": "a", "version": "1"}, {"name": "b", "version": "1"}]},
    ...             {"algorithms": [{"name": "a", "version": "2"}, {"name": "c", "version": "1"}]})
    {'algorithms': {'added': ['c'], 'removed': ['b'], 'changed': ['a']}}
    """
    changed: dict[str, Any] = {}
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        scalar = all(isinstance(v, bool | int | float | str) or v is None for v in (a, b))
        if scalar:
            changed[key] = {"from": a, "to": b}
        elif isinstance(a, list | type(None)) and isinstance(b, list | type(None)):
            changed[key] = _list_diff(a or [], b or [])
        else:
            changed[key] = "changed"
    return changed


def _list_diff(old: list[Any], new: list[Any]) -> dict[str, list[Any]]:
    """Items added, removed and changed, each named by its ``name`` or ``username`` (pins) or by itself."""
    def named(items: list[Any]) -> dict[Any, Any]:
        return {(i.get("name", i.get("username")) if isinstance(i, dict) else i): i for i in items}

    a, b = named(old), named(new)
    out = {"added": sorted((k for k in b if k not in a), key=str),
           "removed": sorted((k for k in a if k not in b), key=str),
           "changed": sorted((k for k in a if k in b and a[k] != b[k]), key=str)}
    return {k: v for k, v in out.items() if v}


class NodeLedger:
    """Appends the node runtime's entries to ``state_dir/node.ledger``, signed with the node's key."""

    def __init__(self, config: NodeConfig, identity: Identity):
        self.path = config.ledger_path
        self.actor = config.name
        self.state = config.state_path
        self.ledger = Ledger.open(self.path, identity)
        self.public_key = identity.signing_public
        #: the keys the chain may be signed with: the node's own, and its earlier ones named in node.yaml
        self.keys = [identity.signing_public, *config.previous_signing_keys]
        self._reader: sqlite3.Connection | None = None

    def check_intact(self) -> None:
        """Refuse to extend a chain that no longer verifies under the node's keys (someone edited it)."""
        rep = self.ledger.verify(self.keys)
        if not rep.ok:
            hint = ""
            if rep.first is not None and rep.first.reason == "unknown_signer":
                hint = ("; if this node's key pair was replaced on purpose, list the earlier signing.pub under "
                        "previous_signing_keys in node.yaml")
            raise LedgerError(f"{self.path}: {rep.summary()}; inspect it with `nordfed ledger show {self.path}`, "
                              f"keep it as evidence and move it aside to start a new chain{hint}")

    def append(self, kind: str, payload: Mapping[str, Any]) -> Entry:
        return self.ledger.append(kind, self.actor, payload)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self.ledger.close()

    def _read(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        """Bounded reads for replication on a connection of their own (``Ledger.rows`` loads the whole tail)."""
        if self._reader is None:
            self._reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        return self._reader.execute(sql, args).fetchall()

    def head_seq(self) -> int:
        return int(self._read("SELECT coalesce(max(seq), 0) FROM entries")[0][0])

    def batch_after(self, seq: int, limit: int) -> list[Entry]:
        rows = self._read("SELECT seq, ts, kind, actor, payload, prev_hash, entry_hash, signer, signature "
                          "FROM entries WHERE seq > ? ORDER BY seq LIMIT ?", seq, limit)
        return [parse_row(r) for r in rows]

    # ------------------------------------------------------------------ policy
    def last_policy_hash(self) -> str | None:
        last = None
        for e in self.ledger.entries():
            if e.kind == "policy_loaded":
                last = e.payload.get("policy_sha256")
        return last

    def record_policy(self, config: NodeConfig) -> list[Entry]:
        """``policy_loaded`` at every start, then ``policy_changed`` when it differs from the last recorded one."""
        policy: NodePolicy = config.policy
        new_hash = policy.sha256()
        previous = self.last_policy_hash()
        file, file_hash = config.source or (None, None)
        written = [self.append("policy_loaded", {
            "policy_sha256": new_hash, "file": file, "file_sha256": file_hash,
            "min_cell_count": policy.min_cell_count, "exact_event_times": policy.exact_event_times})]
        snapshot = self.state / SNAPSHOT
        current = policy.model_dump(mode="json")
        if previous is not None and previous != new_hash:
            old = self._snapshot(snapshot, previous)
            written.append(self.append("policy_changed", {
                "previous_policy_sha256": previous, "policy_sha256": new_hash,
                "changed": policy_diff(old, current) if old is not None else "unknown (no snapshot of the "
                                                                            "previous policy)"}))
            log.warning("node policy changed since the last start: %s", written[-1].payload["changed"])
        tmp = snapshot.with_suffix(".tmp")
        tmp.write_text(json.dumps(current, sort_keys=True, indent=1))
        tmp.replace(snapshot)
        return written

    @staticmethod
    def _snapshot(path: Path, expected_hash: str) -> dict[str, Any] | None:
        """The previous policy, only if it is the one the ledger recorded (a stale file says nothing)."""
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        text = json.dumps(old, sort_keys=True, separators=(",", ":"))
        return old if sha256_text(text) == expected_hash else None

    # ------------------------------------------------------------------ runs
    def task_received(self, run: Mapping[str, Any], username: str | None, params: str | None = None) -> Entry:
        """Not fsynced on its own: the run's outcome entry, appended before anything is posted, syncs both
        (one WAL fsync covers every earlier frame). A power cut before that loses only the record of a run that
        answered nothing, and the hub requeues it. ``params``: the signed parameters as they arrived (encoded),
        recorded as their sha256, so an audit can tell which request this was without the ledger holding it."""
        return self.ledger.append("task_received", self.actor, {
            **run_ids(run), "algorithm": f"{run['algorithm']}@{run['version']}", "code_hash": str(run["code_hash"]),
            "username": username, "params_sha256": None if params is None else sha256_text(params)}, durable=False)

    def run_refused(self, run: Mapping[str, Any], reason: str, detail: str | None = None) -> Entry:
        return self.append("run_refused", outcome_payload(run, reason, detail))

    def run_failed(self, run: Mapping[str, Any], reason: str, detail: str | None = None) -> Entry:
        return self.append("run_failed", outcome_payload(run, reason, detail))

    def run_completed(self, run: Mapping[str, Any], sealed: str, secure_sum: bool = False) -> Entry:
        """``secure_sum``: the result was masked for a sum over nodes (recorded only then, so earlier entries
        keep their form)."""
        extra = {"secure_sum": True} if secure_sum else {}
        return self.append("run_completed", {**run_ids(run), "result_sha256": sha256_text(sealed), **extra})

    def result_not_posted(self, run: Mapping[str, Any], reason: str) -> Entry:
        return self.append("result_not_posted", outcome_payload(run, reason))


class HubReplica:
    """What the hub holds of this node's ledger, and pushing the rest over the node's channel."""

    def __init__(self, ledger: NodeLedger):
        self.ledger = ledger
        self.hub_head: int | None = None  # unknown until asked: at start-up and after a refusal
        self.pushed_at = 0.0
        self.retry_at = 0.0
        self.probe_at = 0.0
        self.refused_head: tuple[int, str | None] | None = None  # the hub's head when it refused

    def pending(self) -> bool:
        """Entries the hub lacks, and the hub has not refused a push recently (or it is time to ask whether its
        copy changed since)."""
        now = time.monotonic()
        if now < self.retry_at:
            return now >= self.probe_at
        return self.hub_head is None or self.ledger.head_seq() > self.hub_head

    def due(self, idle: bool) -> bool:
        return (idle or time.monotonic() - self.pushed_at >= PUSH_EVERY_S) and self.pending()

    def push(self, channel: HubChannel, batches: int | None = None) -> int:
        """Send the entries the hub lacks (all, or at most ``batches`` messages); returns how many. A refusal is
        logged and retried later (ChannelRefused 401 is raised: the caller logs in again)."""
        sent = 0
        now = time.monotonic()
        if now < self.retry_at:
            self.probe_at = now + PUSH_PROBE_S
            if channel.ledger_head() == self.refused_head:
                return 0
            self.retry_at, self.hub_head = 0.0, None  # the copy changed (say, a new epoch): push again now
        try:
            for attempt in range(2):
                fresh = self.hub_head is None
                try:
                    sent += self._push_all(channel, batches)
                    return sent
                except ChannelRefused as exc:
                    self.hub_head = None
                    if exc.status == 401:
                        raise
                    if attempt or fresh:  # once more from the hub's real head (it may have lost entries)
                        self.retry_at = time.monotonic() + PUSH_RETRY_S
                        self.probe_at = time.monotonic() + PUSH_PROBE_S
                        self.refused_head = channel.ledger_head()
                        log.error("the hub refused this node's ledger entries: %s; next try in %g s (compare the "
                                  "copies with `nordfed ledger pull` and `nordfed ledger verify --against`)",
                                  exc, PUSH_RETRY_S)
                        return sent
            return sent
        finally:
            self.pushed_at = time.monotonic()

    def _push_all(self, channel: HubChannel, batches: int | None) -> int:
        if self.hub_head is None:
            seq, _ = channel.ledger_head()
            local = self.ledger.head_seq()
            if seq > local:
                log.error("the hub holds %s entries of this node's ledger but %s ends at entry %s: truncated or "
                          "replaced? The hub will refuse the new entries as a fork", seq, self.ledger.path, local)
            # re-send the last entry both should hold: the hub confirms it (present) or refuses a fork at once
            self.hub_head = max(min(seq, local) - 1, 0)
        sent, n = 0, 0
        while (batches is None or n < batches) and (batch := self.ledger.batch_after(self.hub_head, PUSH_BATCH)):
            head = channel.push_ledger([e.to_dict() for e in batch])
            sent, n = sent + len(batch), n + 1
            if head < batch[-1].seq:  # cannot happen with a well-behaved hub; do not loop on it
                break
            self.hub_head = head
            if len(batch) < PUSH_BATCH:
                break
        return sent
