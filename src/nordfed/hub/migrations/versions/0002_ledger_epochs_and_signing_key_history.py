"""Ledger epochs and node signing-key history.

- ``hub_node_signing_key``: every signing key a node has registered. Backfilled with each node's current key and
  every key that signed an entry of its hub copy (the hub accepted those only from the key registered then);
  ``registered_at`` of a backfilled key is when the hub first received an entry it signed, else the upgrade time.
- ``hub_ledger_entry.epoch``, now part of the primary key (node_id, epoch, seq). Epochs count from 1: every entry
  stored before this revision is in epoch 1, the current epoch of every node (none has restarted).
- ``hub_ledger_restart``: the epochs closed by an administrator.

Autogenerate wrote the two tables and a NOT NULL column without a value for the existing rows, and cannot see a
primary-key change; the column is filled before it becomes NOT NULL, and the key is replaced inside the batch
(SQLite copies the table once; PostgreSQL drops and adds the constraint).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

PK = "hub_ledger_entry_pkey"  # PostgreSQL's name for the baseline's unnamed primary key


def _entry_table(key: list[str]) -> sa.Table:
    """hub_ledger_entry as SQLite's batch mode copies it, its primary key named so it can be dropped (SQLite's is
    unnamed). PostgreSQL ALTERs the table in place and ignores this."""
    return sa.Table(
        "hub_ledger_entry",
        sa.MetaData(),
        sa.Column("node_id", sa.Integer(), sa.ForeignKey("hub_node.id", ondelete="CASCADE"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable="epoch" not in key),
        sa.PrimaryKeyConstraint(*key, name=PK),
    )


_node = sa.table("hub_node", sa.column("id", sa.Integer), sa.column("signing_key", sa.String))
_entry = sa.table("hub_ledger_entry", sa.column("node_id", sa.Integer), sa.column("entry", sa.Text),
                  sa.column("received_at", sa.DateTime(timezone=True)), sa.column("epoch", sa.Integer))
_key = sa.table("hub_node_signing_key", sa.column("node_id", sa.Integer), sa.column("signing_key", sa.String),
                sa.column("registered_at", sa.DateTime(timezone=True)))


def _known_keys(con: sa.Connection) -> list[dict]:
    """(node, key) → first time the hub received an entry signed by it; nodes' current keys included."""
    first: dict[tuple[int, str], object] = {}
    # streamed (statement option: on the Connection it would stick to the DDL that follows)
    rows = con.execute(sa.select(_entry.c.node_id, _entry.c.entry, _entry.c.received_at).execution_options(
        yield_per=1000))
    for node_id, text, received_at in rows:
        try:
            signer = json.loads(text).get("signer")
        except (ValueError, AttributeError):
            continue  # the hub stored only verified entries; nothing to learn from a row that does not parse
        if isinstance(signer, str) and 0 < len(signer) <= 200:
            at = first.get((node_id, signer))
            first[(node_id, signer)] = received_at if at is None or received_at < at else at
    now = datetime.now(UTC)
    for node_id, key in con.execute(sa.select(_node.c.id, _node.c.signing_key).where(_node.c.signing_key.is_not(None))):
        first.setdefault((node_id, key), now)
    return [{"node_id": n, "signing_key": k, "registered_at": at} for (n, k), at in sorted(first.items())]


def upgrade() -> None:
    op.create_table(
        "hub_ledger_restart",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("head_seq", sa.Integer(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("restarted_by", sa.Integer(), nullable=True),
        sa.Column("restarted_by_name", sa.String(length=200), nullable=False),
        sa.Column("restarted_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["hub_node.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["restarted_by"], ["hub_user.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("node_id", "epoch"),
    )
    op.create_table(
        "hub_node_signing_key",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("signing_key", sa.String(length=200), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["hub_node.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("node_id", "signing_key"),
    )
    con = op.get_bind()
    keys = _known_keys(con)
    if keys:
        con.execute(sa.insert(_key), keys)

    op.add_column("hub_ledger_entry", sa.Column("epoch", sa.Integer(), nullable=True))
    con.execute(sa.update(_entry).values(epoch=1))
    with op.batch_alter_table("hub_ledger_entry", copy_from=_entry_table(["node_id", "seq"])) as batch:
        batch.alter_column("epoch", existing_type=sa.Integer(), nullable=False)
        batch.drop_constraint(PK, type_="primary")
        batch.create_primary_key(PK, ["node_id", "epoch", "seq"])


def downgrade() -> None:
    # only while no node has restarted: two epochs cannot share the old key (node_id, seq)
    con = op.get_bind()
    if con.execute(sa.text("SELECT count(*) FROM hub_ledger_restart")).scalar_one():
        raise RuntimeError("nodes have restarted their ledger copies: revision 0002 cannot be downgraded")
    with op.batch_alter_table("hub_ledger_entry", copy_from=_entry_table(["node_id", "epoch", "seq"])) as batch:
        batch.drop_constraint(PK, type_="primary")
        batch.create_primary_key(PK, ["node_id", "seq"])
        batch.drop_column("epoch")
    op.drop_table("hub_node_signing_key")
    op.drop_table("hub_ledger_restart")
