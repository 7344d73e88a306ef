"""The hub copy of each node's ledger (DESIGN invariant 3): nodes push their new entries over their channel, the
hub checks them and appends them, and whoever may see the node reads them back to compare with the node's own copy.

The hub accepts only what extends its copy: each entry must hash correctly, carry a valid signature by the node's
registered signing key and continue the stored chain (seq and prev_hash). Re-pushed entries identical to stored
ones are skipped; a different entry at a seq the hub already holds is a fork (409) and changes nothing, so a node
whose ledger was rewritten cannot rewrite the hub copy. Only ``nordfed.ledger.entry`` (pure) is used here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, insert, select

from nordfed.hub.deps import CurrentPrincipal, Hub, HubState, PathId, forbidden, not_found
from nordfed.hub.models import LedgerEntry, Node, utcnow
from nordfed.hub.permissions import can_see_collaboration
from nordfed.hub.schemas import MAX_ID
from nordfed.ledger.entry import GENESIS, Entry, LedgerFormatError

router = APIRouter(prefix="/nodes", tags=["ledger"])

LEDGER_OPS = frozenset({"ledger", "ledger_head"})
MAX_BATCH = 500  # entries per push message
MAX_PAGE = 5000  # entries per read


def _head(con: Connection, node_id: int) -> tuple[int, str]:
    row = con.execute(select(LedgerEntry.seq, LedgerEntry.entry_hash).where(LedgerEntry.node_id == node_id)
                      .order_by(LedgerEntry.seq.desc()).limit(1)).first()
    return (row[0], row[1]) if row is not None else (0, GENESIS)


def parse_batch(raw: Any) -> list[Entry]:
    """A pushed batch → entries in consecutive seq order; 422 naming the first bad entry and field."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BATCH:
        raise HTTPException(422, f"entries: must be a list of 1 to {MAX_BATCH} ledger entries")
    out: list[Entry] = []
    for i, d in enumerate(raw):
        try:
            e = Entry.from_dict(d)
        except LedgerFormatError as exc:
            raise HTTPException(422, f"entries.{i}: {exc}") from exc
        if e.seq > MAX_ID:
            raise HTTPException(422, f"entries.{i}: field 'seq' must be at most {MAX_ID}")
        if out and e.seq != out[-1].seq + 1:
            raise HTTPException(422, f"entries.{i}: seq {e.seq} does not follow {out[-1].seq} (send consecutive "
                                     "entries in seq order)")
        out.append(e)
    return out


def _check_signed(entries: list[Entry], key: str | None) -> None:
    if key is None:
        raise HTTPException(409, "this node has no registered signing key (PUT /nodes/me/keys first)")
    for e in entries:
        if not e.hash_ok():
            raise HTTPException(422, f"entry {e.seq}: content does not hash to its entry_hash")
        if e.signer != key:
            raise HTTPException(422, f"entry {e.seq}: signed by {e.signer}, not this node's registered signing key")
        if not e.signature_ok():
            raise HTTPException(422, f"entry {e.seq}: signature does not verify")


def _node_key(con: Connection, node_id: int, lock: bool = False) -> str | None:
    query = select(Node.signing_key).where(Node.id == node_id)
    row = con.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise not_found("node", node_id)
    return row[0]


def store_entries(hub: HubState, node_id: int, entries: list[Entry]) -> dict[str, Any]:
    """Verify (outside any transaction: signatures cost CPU) and append; all or nothing."""
    with hub.read() as con:
        key = _node_key(con, node_id)
    _check_signed(entries, key)
    with hub.write() as con:
        if _node_key(con, node_id, lock=True) != key:  # the row lock serialises pushes of one node on PostgreSQL
            raise HTTPException(409, "the node's signing key changed while its entries were checked; push again")
        head_seq, head_hash = _head(con, node_id)
        old = [e for e in entries if e.seq <= head_seq]
        new = [e for e in entries if e.seq > head_seq]
        if old:
            stored = dict(con.execute(select(LedgerEntry.seq, LedgerEntry.entry_hash).where(
                LedgerEntry.node_id == node_id, LedgerEntry.seq.between(old[0].seq, old[-1].seq))).all())
            for e in old:
                if stored.get(e.seq) != e.entry_hash:
                    raise HTTPException(409, f"fork at entry {e.seq}: the hub copy holds another entry there "
                                             f"({str(stored.get(e.seq))[:12]}…, pushed {e.entry_hash[:12]}…); "
                                             "the hub copy is left unchanged")
        if new:
            if new[0].seq != head_seq + 1:
                raise HTTPException(409, f"the hub copy ends at entry {head_seq}; push from entry {head_seq + 1}")
            prev = head_hash
            for e in new:
                if e.prev_hash != prev:
                    status = 409 if e is new[0] else 422
                    raise HTTPException(status, f"entry {e.seq}: prev_hash does not name entry {e.seq - 1} of the "
                                                f"{'hub copy (fork)' if status == 409 else 'batch (broken chain)'}")
                prev = e.entry_hash
            now = utcnow()
            con.execute(insert(LedgerEntry), [
                {"node_id": node_id, "seq": e.seq, "kind": e.kind, "entry_hash": e.entry_hash, "received_at": now,
                 "entry": json.dumps(e.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)}
                for e in new])
            head_seq = new[-1].seq
    return {"op": "ledger_ok", "head": head_seq, "added": len(new), "present": len(old)}


def head_of(hub: HubState, node_id: int) -> dict[str, Any]:
    with hub.read() as con:
        seq, h = _head(con, node_id)
    return {"op": "ledger_ok", "head": seq, "hash": h if seq else None}


async def ledger_op(hub: HubState, node_id: int, msg: Mapping[str, Any]) -> dict[str, Any]:
    """The channel's ledger ops: ``ledger_head`` → the stored head; ``ledger`` (entries) → append, new head."""
    allowed = {"op", "id"} | ({"entries"} if msg.get("op") == "ledger" else set())
    extra = sorted(str(k) for k in msg if k not in allowed)
    if extra:
        raise HTTPException(422, f"{extra[0]}: extra fields not permitted")
    if msg.get("op") == "ledger_head":
        return await hub.db.run(head_of, hub, node_id)
    entries = parse_batch(msg.get("entries"))
    return await run_in_threadpool(store_entries, hub, node_id, entries)


@router.get("/{node_id}/ledger")
def read_ledger(
    node_id: PathId,
    hub: Hub,
    caller: CurrentPrincipal,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
) -> Response:
    """The hub copy of a node's ledger after ``after``, in seq order: root, the node's organization admins, members
    of its collaboration (and the node itself)."""
    with hub.read() as con:
        node = con.execute(select(Node.organization_id, Node.collaboration_id).where(Node.id == node_id)).first()
        if node is None:
            raise not_found("node", node_id)
        own_admin = caller.has("organization_admin") and caller.organization_id == node.organization_id
        if caller.kind == "node":
            allowed = caller.id == node_id
        else:
            allowed = caller.is_root or own_admin or can_see_collaboration(caller, hub.collaboration(
                con, node.collaboration_id))
        if not allowed:
            raise forbidden(f"node {node_id} is not in one of your collaborations")
        texts = con.execute(select(LedgerEntry.entry).where(LedgerEntry.node_id == node_id, LedgerEntry.seq > after)
                            .order_by(LedgerEntry.seq).limit(limit)).scalars().all()
    return Response("[" + ",".join(texts) + "]", media_type="application/json")
