"""The hub copy of each node's ledger (DESIGN invariant 3): nodes push their new entries over their channel, the
hub checks them and appends them, and whoever may see the node reads them back to compare with the node's own copy.

The hub accepts only what extends its copy: each entry must hash correctly, carry a valid signature by one of the
signing keys the node has registered (current or earlier: a node whose key pair was replaced keeps its ledger, so
one chain may hold several signers) and continue the stored chain (seq and prev_hash). Re-pushed entries identical
to stored ones are skipped; a different entry at a seq the hub already holds is a fork (409) and changes nothing, so
a node whose ledger was rewritten cannot rewrite the hub copy. Only ``nordfed.ledger.entry`` (pure) is used here.

The node's token is the trust anchor for pushes: whoever holds it may register a signing key (``PUT
/nodes/me/keys``) and then push entries signed by it, exactly as for results. The signatures bind entries to the
registered keys; they do not make a stolen token harmless (revoke it, rotate the api key).

Epochs: a node reinstalled with new keys and an empty ledger starts again at seq 1, which the hub refuses as a
fork. Root or an admin of the node's organization then closes the current epoch (``POST
/nodes/{id}/ledger/restart``, recorded in ``hub_ledger_restart``): its entries stay as they are, readable with
``?epoch=N``, and the node's next push starts the next epoch from seq 1. An epoch without entries cannot be closed
(nothing to close; a second click does not open an empty epoch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Connection, Row, func, insert, select

from nordfed.hub.deps import CurrentPrincipal, CurrentUser, Hub, HubState, PathId, forbidden, not_found
from nordfed.hub.models import LedgerEntry, LedgerRestart, Node, NodeSigningKey, as_utc, utcnow
from nordfed.hub.permissions import can_see_collaboration, require_org_admin
from nordfed.hub.schemas import MAX_ID, LedgerCopyOut, LedgerRestartOut, SigningKeyOut, clipped
from nordfed.ledger.entry import GENESIS, Entry, LedgerFormatError

router = APIRouter(prefix="/nodes", tags=["ledger"])

LEDGER_OPS = frozenset({"ledger", "ledger_head"})
MAX_BATCH = 500  # entries per push message
MAX_PAGE = 5000  # entries per read


def _current_epoch(node_id: Any) -> Any:
    """The node's current epoch, as a scalar subquery: the one after the last closed (1 before any restart)."""
    return (select(func.coalesce(func.max(LedgerRestart.epoch), 0) + 1)
            .where(LedgerRestart.node_id == node_id).scalar_subquery())


def current_epoch(con: Connection, node_id: int) -> int:
    """The node's current epoch (1 before any restart)."""
    return con.execute(select(_current_epoch(node_id))).scalar_one()


def _head(con: Connection, node_id: int, epoch: int) -> tuple[int, str]:
    row = con.execute(select(LedgerEntry.seq, LedgerEntry.entry_hash)
                      .where(LedgerEntry.node_id == node_id, LedgerEntry.epoch == epoch)
                      .order_by(LedgerEntry.seq.desc()).limit(1)).first()
    return (row[0], row[1]) if row is not None else (0, GENESIS)


def _restart_hint(node_id: int) -> str:
    return (f"if the node was reinstalled with a fresh ledger, root or an admin of its organization can close this "
            f"epoch and let it start a new one: POST /api/nodes/{node_id}/ledger/restart (nordfed ledger restart "
            f"--node {node_id})")


def _unencodable_field(e: Entry) -> str | None:
    """The first field holding a lone surrogate (JSON's ``\\ud800`` escape parses to one), or None. The hash covers
    the ASCII-escaped canonical JSON, so such an entry can verify; but the hub stores it as UTF-8, which no database
    driver can encode (an unhandled error that dropped the node's channel)."""
    for name in ("ts", "actor", "signer", "signature"):
        try:
            getattr(e, name).encode("utf-8")
        except UnicodeEncodeError:
            return name
    try:
        json.dumps(e.payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return "payload"
    return None


def parse_batch(raw: Any) -> list[Entry]:
    """A pushed batch → entries in consecutive seq order; 422 naming the first bad entry and field."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_BATCH:
        raise HTTPException(422, f"entries: must be a list of 1 to {MAX_BATCH} ledger entries")
    out: list[Entry] = []
    for i, d in enumerate(raw):
        try:
            e = Entry.from_dict(d)
        except LedgerFormatError as exc:  # it quotes the bad value: cut short, it may be huge
            raise HTTPException(422, f"entries.{i}: {clipped(str(exc), 300)}") from exc
        if e.seq > MAX_ID:
            raise HTTPException(422, f"entries.{i}: field 'seq' must be at most {MAX_ID}")
        bad = _unencodable_field(e)
        if bad is not None:
            raise HTTPException(422, f"entries.{i}: field {bad!r} must be valid Unicode (no lone surrogates)")
        if out and e.seq != out[-1].seq + 1:
            raise HTTPException(422, f"entries.{i}: seq {e.seq} does not follow {out[-1].seq} (send consecutive "
                                     "entries in seq order)")
        out.append(e)
    return out


def _check_signed(entries: list[Entry], keys: frozenset[str]) -> None:
    if not keys:
        raise HTTPException(409, "this node has no registered signing key (PUT /nodes/me/keys first)")
    for e in entries:
        if not e.hash_ok():
            raise HTTPException(422, f"entry {e.seq}: content does not hash to its entry_hash")
        if e.signer not in keys:
            raise HTTPException(422, f"entry {e.seq}: signed by {e.signer}, not one of this node's registered signing "
                                     "keys")
        if not e.signature_ok():
            raise HTTPException(422, f"entry {e.seq}: signature does not verify")


def _locked_epoch(con: Connection, node_id: int) -> int:
    """The node's current epoch, its row locked: on PostgreSQL that serialises pushes and restarts of one node
    (SQLite's write transactions are serial already); 404 for an unknown node."""
    epoch = con.execute(select(_current_epoch(Node.id)).where(Node.id == node_id).with_for_update(of=Node)).scalar()
    if epoch is None:
        raise not_found("node", node_id)
    return epoch


def _node_keys(con: Connection, node_id: int) -> frozenset[str]:
    """Every signing key the node has registered (one query: pushes are a hot path); 404 for an unknown node."""
    rows = con.execute(select(NodeSigningKey.signing_key).select_from(Node)
                       .outerjoin(NodeSigningKey, NodeSigningKey.node_id == Node.id).where(Node.id == node_id)).all()
    if not rows:
        raise not_found("node", node_id)
    return frozenset(key for key, in rows if key is not None)


def store_entries(hub: HubState, node_id: int, entries: list[Entry]) -> dict[str, Any]:
    """Verify (outside any transaction: signatures cost CPU) and append to the current epoch; all or nothing.

    Keys are only ever added to a node's history, so entries checked against the keys read here stay valid when
    the node registers another key meanwhile.
    """
    with hub.read() as con:
        keys = _node_keys(con, node_id)
    _check_signed(entries, keys)
    with hub.write() as con:
        epoch = _locked_epoch(con, node_id)
        head_seq, head_hash = _head(con, node_id, epoch)
        old = [e for e in entries if e.seq <= head_seq]
        new = [e for e in entries if e.seq > head_seq]
        if old:
            stored = dict(con.execute(select(LedgerEntry.seq, LedgerEntry.entry_hash).where(
                LedgerEntry.node_id == node_id, LedgerEntry.epoch == epoch,
                LedgerEntry.seq.between(old[0].seq, old[-1].seq))).all())
            for e in old:
                if stored.get(e.seq) != e.entry_hash:
                    raise HTTPException(409, f"fork at entry {e.seq}: the hub copy holds another entry there "
                                             f"({str(stored.get(e.seq))[:12]}…, pushed {e.entry_hash[:12]}…); "
                                             f"the hub copy is left unchanged; {_restart_hint(node_id)}")
        if new:
            if new[0].seq != head_seq + 1:
                raise HTTPException(409, f"the hub copy ends at entry {head_seq}; push from entry {head_seq + 1}")
            prev = head_hash
            for e in new:
                if e.prev_hash != prev:
                    if e is new[0]:
                        raise HTTPException(409, f"entry {e.seq}: prev_hash does not name entry {e.seq - 1} of the "
                                                 f"hub copy (fork); {_restart_hint(node_id)}")
                    raise HTTPException(422, f"entry {e.seq}: prev_hash does not name entry {e.seq - 1} of the batch "
                                             "(broken chain)")
                prev = e.entry_hash
            now = utcnow()
            con.execute(insert(LedgerEntry), [
                {"node_id": node_id, "epoch": epoch, "seq": e.seq, "kind": e.kind, "entry_hash": e.entry_hash,
                 "received_at": now,
                 "entry": json.dumps(e.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)}
                for e in new])
            head_seq = new[-1].seq
    return {"op": "ledger_ok", "head": head_seq, "added": len(new), "present": len(old)}


def head_of(hub: HubState, node_id: int) -> dict[str, Any]:
    """The head of the current epoch (0 right after a restart: the node pushes its chain from entry 1)."""
    with hub.read() as con:
        seq, h = _head(con, node_id, current_epoch(con, node_id))
    return {"op": "ledger_ok", "head": seq, "hash": h if seq else None}


async def ledger_op(hub: HubState, node_id: int, msg: Mapping[str, Any]) -> dict[str, Any]:
    """The channel's ledger ops: ``ledger_head`` → the stored head; ``ledger`` (entries) → append, new head."""
    allowed = {"op", "id"} | ({"entries"} if msg.get("op") == "ledger" else set())
    extra = sorted(str(k) for k in msg if k not in allowed)
    if extra:
        raise HTTPException(422, f"{clipped(extra[0])}: extra fields not permitted")
    if msg.get("op") == "ledger_head":
        return await hub.db.run(head_of, hub, node_id)
    entries = parse_batch(msg.get("entries"))
    return await run_in_threadpool(store_entries, hub, node_id, entries)


def _restart_out(r: Row) -> LedgerRestartOut:
    return LedgerRestartOut(node_id=r.node_id, epoch=r.epoch, head_seq=r.head_seq, head_hash=r.head_hash,
                            restarted_by=r.restarted_by, restarted_by_name=r.restarted_by_name,
                            restarted_at=as_utc(r.restarted_at))


@router.get("/{node_id}/ledger", response_model=None, responses={200: {"model": LedgerCopyOut}})
def read_ledger(
    node_id: PathId,
    hub: Hub,
    caller: CurrentPrincipal,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1000,
    epoch: Annotated[int | None, Query(ge=1, le=MAX_ID, description="default: the current epoch")] = None,
) -> Response:
    """The hub copy of a node's ledger in one epoch after ``after``, in seq order, with the node's signing keys and
    restarts: root, the node's organization admins, members of its collaboration (and the node itself)."""
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
        epochs = current_epoch(con, node_id)
        if epoch is None:
            epoch = epochs
        elif epoch > epochs:
            raise HTTPException(404, f"node {node_id} has no ledger epoch {epoch} (epochs 1..{epochs})")
        keys = con.execute(select(NodeSigningKey.signing_key, NodeSigningKey.registered_at)
                           .where(NodeSigningKey.node_id == node_id)
                           .order_by(NodeSigningKey.registered_at, NodeSigningKey.signing_key)).all()
        restarts = con.execute(select(*LedgerRestart.__table__.c).where(LedgerRestart.node_id == node_id)
                               .order_by(LedgerRestart.epoch)).all()
        texts = con.execute(select(LedgerEntry.entry).where(
            LedgerEntry.node_id == node_id, LedgerEntry.epoch == epoch, LedgerEntry.seq > after)
            .order_by(LedgerEntry.seq).limit(limit)).scalars().all()
    meta = LedgerCopyOut(
        node_id=node_id, epoch=epoch, epochs=epochs,
        signing_keys=[SigningKeyOut(signing_key=k, registered_at=as_utc(t)) for k, t in keys],
        restarts=[_restart_out(r) for r in restarts], entries=[],
    ).model_dump(mode="json", exclude={"entries"})
    # the entries go out as stored (the node's canonical JSON), without a parse and re-serialisation each
    body = json.dumps(meta, separators=(",", ":"))[:-1] + ',"entries":[' + ",".join(texts) + "]}"
    return Response(body, media_type="application/json")


@router.post("/{node_id}/ledger/restart", response_model=LedgerRestartOut, status_code=201)
def restart_ledger(node_id: PathId, hub: Hub, caller: CurrentUser) -> LedgerRestartOut:
    """Close the current epoch of the node's hub copy (root, or an admin of the node's organization): its entries
    stay readable (``?epoch=N``) and unchanged; the node's next push starts the next epoch from entry 1. 409 when
    the epoch holds no entry."""
    with hub.write() as con:
        org = con.execute(select(Node.organization_id).where(Node.id == node_id)).scalar()
        if org is None:
            raise not_found("node", node_id)
        require_org_admin(caller, org, "restart the ledger copies of its nodes")
        epoch = _locked_epoch(con, node_id)
        head_seq, head_hash = _head(con, node_id, epoch)
        if head_seq == 0:
            raise HTTPException(409, f"epoch {epoch} of node {node_id}'s ledger copy holds no entries: nothing to "
                                     "close (the node can push its chain as it is)")
        row = {"node_id": node_id, "epoch": epoch, "head_seq": head_seq, "head_hash": head_hash,
               "restarted_by": caller.id, "restarted_by_name": caller.name, "restarted_at": utcnow()}
        con.execute(insert(LedgerRestart), [row])
    return LedgerRestartOut(**row)
