"""Baseline: the hub schema as nordfed made it before migrations (``create_all`` of models.py at that time).

An unversioned hub database whose tables and columns match this revision is stamped with it and then upgraded.

Revision ID: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _created_at() -> sa.Column:
    return sa.Column("created_at", sa.DateTime(timezone=True), nullable=False)


def _disabled() -> sa.Column:
    # sa.false(), not text('0'): PostgreSQL refuses an integer default on a boolean column
    return sa.Column("disabled", sa.Boolean(), server_default=sa.false(), nullable=False)


def upgrade() -> None:
    op.create_table(
        "hub_collaboration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "hub_organization",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("country", sa.String(length=64), nullable=False),
        _created_at(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "hub_collaboration_organization",
        sa.Column("collaboration_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["collaboration_id"], ["hub_collaboration.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["organization_id"], ["hub_organization.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("collaboration_id", "organization_id"),
    )
    op.create_table(
        "hub_node",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("collaboration_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("api_key_hash", sa.String(length=200), nullable=False),
        sa.Column("encryption_key", sa.String(length=200), nullable=True),
        sa.Column("signing_key", sa.String(length=200), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        _disabled(),
        _created_at(),
        sa.ForeignKeyConstraint(["collaboration_id"], ["hub_collaboration.id"]),
        sa.ForeignKeyConstraint(["organization_id"], ["hub_organization.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("collaboration_id", "name"),
        sa.UniqueConstraint("key_id"),
    )
    op.create_table(
        "hub_user",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.Column("roles", sa.String(length=400), nullable=False),
        sa.Column("encryption_key", sa.String(length=200), nullable=True),
        sa.Column("signing_key", sa.String(length=200), nullable=True),
        _disabled(),
        _created_at(),
        sa.ForeignKeyConstraint(["organization_id"], ["hub_organization.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "hub_ledger_entry",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("entry_hash", sa.String(length=64), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["hub_node.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("node_id", "seq"),
    )
    op.create_table(
        "hub_study",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collaboration_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        _created_at(),
        sa.ForeignKeyConstraint(["collaboration_id"], ["hub_collaboration.id"]),
        sa.ForeignKeyConstraint(["created_by"], ["hub_user.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("collaboration_id", "name"),
    )
    op.create_index("ix_hub_study_collaboration_id", "hub_study", ["collaboration_id"])
    op.create_table(
        "hub_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["node_id"], ["hub_node.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["hub_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_hub_token_expires_at", "hub_token", ["expires_at"])
    op.create_table(
        "hub_study_organization",
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["hub_organization.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["study_id"], ["hub_study.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("study_id", "organization_id"),
    )
    op.create_table(
        "hub_task",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collaboration_id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.String(length=200), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("code_hash", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("study_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        _created_at(),
        sa.ForeignKeyConstraint(["collaboration_id"], ["hub_collaboration.id"]),
        sa.ForeignKeyConstraint(["owner_id"], ["hub_user.id"]),
        sa.ForeignKeyConstraint(["study_id"], ["hub_study.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_hub_task_collab_status", "hub_task", ["collaboration_id", "status"])
    op.create_index("ix_hub_task_study_id", "hub_task", ["study_id"])
    op.create_table(
        "hub_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("log", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["node_id"], ["hub_node.id"]),
        sa.ForeignKeyConstraint(["task_id"], ["hub_task.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_hub_run_node_status", "hub_run", ["node_id", "status", "id"])
    op.create_index("ix_hub_run_task_id", "hub_run", ["task_id"])


def downgrade() -> None:
    for table in (
        "hub_run",
        "hub_task",
        "hub_study_organization",
        "hub_token",
        "hub_study",
        "hub_ledger_entry",
        "hub_user",
        "hub_node",
        "hub_collaboration_organization",
        "hub_organization",
        "hub_collaboration",
    ):
        op.drop_table(table)  # takes its indexes with it
