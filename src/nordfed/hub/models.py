"""Hub ORM models (SQLAlchemy 2.0). Tables are prefixed ``hub_`` so they never clash with CDM tables in one schema."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    """SQLite drops the zone on the way back; every hub timestamp is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


collaboration_organization = Table(
    "hub_collaboration_organization",
    Base.metadata,
    Column("collaboration_id", ForeignKey("hub_collaboration.id", ondelete="CASCADE"), primary_key=True),
    Column("organization_id", ForeignKey("hub_organization.id", ondelete="CASCADE"), primary_key=True),
)


class Organization(Base):
    __tablename__ = "hub_organization"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    country: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class User(Base):
    __tablename__ = "hub_user"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(200), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    organization_id: Mapped[int] = mapped_column(ForeignKey("hub_organization.id"))
    roles: Mapped[str] = mapped_column(String(400))  # comma-separated role names
    encryption_key: Mapped[str | None] = mapped_column(String(200))
    signing_key: Mapped[str | None] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    @property
    def role_list(self) -> list[str]:
        return [r for r in self.roles.split(",") if r]


class Collaboration(Base):
    __tablename__ = "hub_collaboration"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    organizations: Mapped[list[Organization]] = relationship(secondary=collaboration_organization, lazy="selectin")

    @property
    def organization_ids(self) -> list[int]:
        return sorted(o.id for o in self.organizations)


class Node(Base):
    __tablename__ = "hub_node"
    __table_args__ = (UniqueConstraint("collaboration_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    organization_id: Mapped[int] = mapped_column(ForeignKey("hub_organization.id"))
    collaboration_id: Mapped[int] = mapped_column(ForeignKey("hub_collaboration.id"))
    key_id: Mapped[str] = mapped_column(String(64), unique=True)  # public part of the api key, for lookup
    api_key_hash: Mapped[str] = mapped_column(String(200))
    encryption_key: Mapped[str | None] = mapped_column(String(200))
    signing_key: Mapped[str | None] = mapped_column(String(200))
    last_seen: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


study_organization = Table(
    "hub_study_organization",
    Base.metadata,
    Column("study_id", ForeignKey("hub_study.id", ondelete="CASCADE"), primary_key=True),
    Column("organization_id", ForeignKey("hub_organization.id", ondelete="CASCADE"), primary_key=True),
)


class Study(Base):
    """A named subset of a collaboration's organizations; tasks may belong to one (as in Vantage6)."""

    __tablename__ = "hub_study"
    __table_args__ = (UniqueConstraint("collaboration_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collaboration_id: Mapped[int] = mapped_column(ForeignKey("hub_collaboration.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("hub_user.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    organizations: Mapped[list[Organization]] = relationship(secondary=study_organization, lazy="selectin")

    @property
    def organization_ids(self) -> list[int]:
        return sorted(o.id for o in self.organizations)


class Token(Base):
    __tablename__ = "hub_token"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256: tokens are 256-bit random
    user_id: Mapped[int | None] = mapped_column(ForeignKey("hub_user.id", ondelete="CASCADE"))
    node_id: Mapped[int | None] = mapped_column(ForeignKey("hub_node.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class Task(Base):
    __tablename__ = "hub_task"
    __table_args__ = (Index("ix_hub_task_collab_status", "collaboration_id", "status"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    collaboration_id: Mapped[int] = mapped_column(ForeignKey("hub_collaboration.id"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("hub_user.id"))
    algorithm: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(100))
    code_hash: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    study_id: Mapped[int | None] = mapped_column(ForeignKey("hub_study.id"), index=True)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    runs: Mapped[list[Run]] = relationship(back_populates="task", order_by="Run.id")


class Run(Base):
    __tablename__ = "hub_run"
    __table_args__ = (Index("ix_hub_run_node_status", "node_id", "status", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("hub_task.id", ondelete="CASCADE"), index=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("hub_node.id"))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    log: Mapped[str] = mapped_column(Text, default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    input: Mapped[str] = mapped_column(Text, deferred=True)  # ciphertexts: loaded only when asked for
    result: Mapped[str | None] = mapped_column(Text, deferred=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    task: Mapped[Task] = relationship(back_populates="runs")


class NodeSigningKey(Base):
    """Every signing key a node has registered (``PUT /nodes/me/keys``), kept after the node moves on to another, so
    ledger entries signed before a key change still verify. Keys are never removed; a re-registered key keeps the
    time it was first registered."""

    __tablename__ = "hub_node_signing_key"
    node_id: Mapped[int] = mapped_column(ForeignKey("hub_node.id", ondelete="CASCADE"), primary_key=True)
    signing_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LedgerEntry(Base):
    """The hub copy of a node's ledger: entries as the node signed them (canonical JSON), append-only.

    A copy has epochs, numbered from 1: each holds one chain starting at seq 1. An administrator's restart
    (:class:`LedgerRestart`) closes the current epoch, so a node reinstalled with a fresh ledger can push its new
    chain into the next one. Verified on receipt (routers/ledger.py); the hub never updates or deletes a row.
    Deleting a node (allowed only before its first run) takes its copy with it.
    """

    __tablename__ = "hub_ledger_entry"
    node_id: Mapped[int] = mapped_column(ForeignKey("hub_node.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64))
    entry: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class LedgerRestart(Base):
    """An epoch of a node's hub copy closed by an administrator: who, when, and the head it closed at. A node's
    current epoch is one more than the number of its restarts."""

    __tablename__ = "hub_ledger_restart"
    node_id: Mapped[int] = mapped_column(ForeignKey("hub_node.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)  # the epoch closed
    head_seq: Mapped[int] = mapped_column(Integer)
    head_hash: Mapped[str] = mapped_column(String(64))
    restarted_by: Mapped[int | None] = mapped_column(ForeignKey("hub_user.id", ondelete="SET NULL"))
    restarted_by_name: Mapped[str] = mapped_column(String(200))  # kept when the user is deleted
    restarted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
