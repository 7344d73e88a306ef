"""Hub schema migrations on SQLite and PostgreSQL (own schema via ``?schema=``).

The first test is the one that keeps migrations honest: running every revision from an empty database gives exactly
the schema of models.py (Alembic's autogenerate finds no difference, and the primary keys, which autogenerate does
not compare, are the same), so it fails the moment models.py changes without a revision. The rest: a fresh database
is created at head, one from before migrations is adopted (or refused when it is not the baseline), a database newer
than the code is refused untouched, and a test-only revision after the shipped ones (written to a copy of the
migrations folder, altering a referenced table with SQLite's table copy) upgrades a populated database without
losing a row.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, func, inspect, select, text
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.hub import migrations
from nordfed.hub.db import HubDBError, hub_db_status, open_hub_db, upgrade_hub_db
from nordfed.hub.models import (
    Base,
    Collaboration,
    LedgerEntry,
    Node,
    Organization,
    Run,
    Task,
    Token,
    User,
    utcnow,
)
from test_hub_support import hub_database


@pytest.fixture(params=["sqlite", "postgres"])
def url(request, tmp_path) -> str:
    with hub_database(request.param, tmp_path) as database_url:
        yield database_url


def blank(url: str) -> Engine:
    """The hub's own engine on an empty database (PostgreSQL: its schema exists, without tables)."""
    engine = open_hub_db(url, create=False).engine
    schema = parse_qs(urlsplit(url).query).get("schema")
    if schema:
        with engine.begin() as con:
            con.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema[0]}"'))
    return engine


def run_revisions(engine: Engine, to: str = "heads") -> None:
    with engine.begin() as con:
        command.upgrade(migrations.alembic_config(con), to)


def model_diff(engine: Engine) -> list:
    with engine.connect() as con:
        context = MigrationContext.configure(con, opts={"compare_type": True, "compare_server_default": True})
        return compare_metadata(context, Base.metadata)


def revisions(engine: Engine) -> tuple[str, ...]:
    with engine.connect() as con:
        return tuple(sorted(MigrationContext.configure(con).get_current_heads()))


def columns(engine: Engine) -> dict[str, set[str]]:
    inspector = inspect(engine)
    return {t: {c["name"] for c in inspector.get_columns(t)} for t in inspector.get_table_names()}


def primary_keys(engine: Engine) -> dict[str, list[str]]:
    inspector = inspect(engine)
    return {t: inspector.get_pk_constraint(t)["constrained_columns"] for t in inspector.get_table_names()}


HEAD = migrations._script(migrations.HERE).get_current_head()  # the shipped head revision


def from_before_migrations(url: str) -> Engine:
    """A database as nordfed made it before migrations: the baseline's tables, no alembic_version."""
    engine = blank(url)
    run_revisions(engine, migrations.BASELINE)
    with engine.begin() as con:
        con.execute(text("DROP TABLE alembic_version"))
    return engine


def test_every_revision_from_empty_gives_the_models_schema(url):
    assert len(migrations.status(blank(url)).heads) == 1, "several heads: merge them (alembic merge)"
    engine = blank(url)
    run_revisions(engine)
    assert model_diff(engine) == [], "models.py and the revisions differ: add one (see nordfed.hub.migrations)"
    # and the fresh-database path (create_all + stamp) is the same schema at the same revision
    migrated, keys = columns(engine), primary_keys(engine)
    for table in [*Base.metadata.sorted_tables[::-1], "alembic_version"]:
        with engine.begin() as con:
            con.execute(text(f"DROP TABLE {getattr(table, 'name', table)}"))
    hub = open_hub_db(url)
    assert model_diff(hub.engine) == [] and columns(hub.engine) == migrated and primary_keys(hub.engine) == keys
    assert revisions(hub.engine) == migrations.status(hub.engine).heads


def test_a_fresh_database_is_created_at_head_and_a_current_one_left_alone(url):
    done = upgrade_hub_db(url)
    assert done.action == "created" and done.before.state == "empty" and done.after == done.before.heads
    again = upgrade_hub_db(url)
    assert again.action == "current" and again.after == done.after
    status = hub_db_status(url)
    assert status.state == "current" and "up to date" in status.describe()


def test_a_database_from_before_migrations_is_adopted_with_its_data(url):
    engine = from_before_migrations(url)
    with engine.begin() as con:
        con.execute(text("INSERT INTO hub_organization (name, country, created_at) VALUES ('Old', 'NO', :t)"),
                    {"t": utcnow()})
    assert hub_db_status(url).state == "unversioned"
    done = upgrade_hub_db(url)
    assert done.action == "adopted" and hub_db_status(url).state == "current"
    with open_hub_db(url).sessions() as s:
        assert s.scalars(select(Organization.name)).all() == ["Old"]


def test_an_unversioned_database_that_is_not_the_baseline_is_refused_untouched(url):
    engine = from_before_migrations(url)
    with engine.begin() as con:  # as an older nordfed left it: no ledger copy yet, no user signing keys
        con.execute(text("DROP TABLE hub_ledger_entry"))
        con.execute(text("ALTER TABLE hub_user DROP COLUMN signing_key"))
    before = columns(engine)
    with pytest.raises(HubDBError, match="predates schema migrations") as refused:
        open_hub_db(url)
    assert "table hub_ledger_entry missing" in str(refused.value)
    assert "hub_user.signing_key missing" in str(refused.value)
    assert "must be recreated" in str(refused.value)
    assert columns(engine) == before  # nothing created, nothing stamped


NEXT = f"{int(HEAD) + 1:04d}"
TEST_REVISION = f'''"""Test only: a column on hub_node, through SQLite's table copy."""

import sqlalchemy as sa
from alembic import op

revision = "{NEXT}"
down_revision = "{HEAD}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a type change: SQLite cannot ALTER it, so batch mode copies hub_node, drops it and renames the copy while
    # tokens, runs and ledger entries refer to it (a plain ALTER on PostgreSQL)
    with op.batch_alter_table("hub_node") as batch:
        batch.add_column(sa.Column("note", sa.String(200), nullable=False, server_default="none"))
        batch.alter_column("api_key_hash", existing_type=sa.String(200), type_=sa.String(300))


def downgrade() -> None:
    with op.batch_alter_table("hub_node") as batch:
        batch.alter_column("api_key_hash", existing_type=sa.String(300), type_=sa.String(200))
        batch.drop_column("note")
'''


def _populate(url: str) -> dict[str, int]:
    """A hub at the shipped head with a node that tokens, runs and ledger entries refer to."""
    hub = open_hub_db(url)
    with hub.sessions.begin() as s:
        org = Organization(name="A", country="NO")
        collab = Collaboration(name="c", organizations=[org])
        s.add_all([org, collab])
        s.flush()
        user = User(username="u", password_hash="x", organization_id=org.id, roles="researcher")
        node = Node(name="n", organization_id=org.id, collaboration_id=collab.id, key_id="k" * 16, api_key_hash="x")
        s.add_all([user, node])
        s.flush()
        task = Task(collaboration_id=collab.id, owner_id=user.id, algorithm="a", version="1", code_hash="h")
        s.add(task)
        s.flush()
        s.add_all([
            Token(token_hash="t" * 64, node_id=node.id, expires_at=utcnow() + timedelta(hours=1)),
            Run(task_id=task.id, node_id=node.id, input="aW5wdXQ="),
            LedgerEntry(node_id=node.id, epoch=1, seq=1, kind="start", entry_hash="e" * 64, entry="{}"),
        ])
    counts = _counts(hub.engine)
    hub.engine.dispose()
    return counts


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as con:
        return {m.__tablename__: con.execute(select(func.count()).select_from(m)).scalar_one()
                for m in (Node, Token, Run, LedgerEntry)}


def test_a_new_revision_upgrades_a_populated_database_which_older_code_then_refuses(url, tmp_path):
    counts = _populate(url)
    assert counts == {"hub_node": 1, "hub_token": 1, "hub_run": 1, "hub_ledger_entry": 1}
    newer = tmp_path / "migrations"
    shutil.copytree(migrations.HERE, newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / f"{NEXT}_node_note.py").write_text(TEST_REVISION)

    engine = open_hub_db(url, create=False).engine
    assert migrations.status(engine, newer).state == "behind"
    done = migrations.upgrade(engine, newer)
    assert (done.action, done.before.revisions, done.after) == ("upgraded", (HEAD,), (NEXT,))
    assert "note" in columns(engine)["hub_node"]
    assert _counts(engine) == counts  # the table copy cascaded no delete into tokens or ledger entries
    if engine.dialect.name == "sqlite":
        with engine.connect() as con:  # and foreign keys are enforced again afterwards
            assert con.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert migrations.upgrade(engine, newer).action == "current"

    # this nordfed does not know the test revision: the database is newer than the code, refused and left as it is
    assert hub_db_status(url).state == "newer"
    with pytest.raises(HubDBError, match=rf"revision {NEXT}, unknown to this nordfed .*upgrade nordfed"):
        open_hub_db(url)
    assert revisions(engine) == (NEXT,) and "note" in columns(engine)["hub_node"]
    engine.dispose()


def test_concurrent_starts_create_the_schema_once(url):
    blank(url).dispose()
    with ThreadPoolExecutor(4) as pool:
        actions = sorted(done.action for done in pool.map(lambda _: upgrade_hub_db(url), range(4)))
    assert actions == ["created", "current", "current", "current"]


def test_cli_db_current_and_upgrade(tmp_path):
    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    missing = runner.invoke(app, ["hub", "db", "current", "--db", db])
    assert missing.exit_code == 1 and "no hub database" in missing.output
    assert not (tmp_path / "hub.sqlite").exists()
    created = runner.invoke(app, ["hub", "db", "upgrade", "--db", db])
    assert created.exit_code == 0 and f"created the hub tables at revision {HEAD}" in created.output
    current = runner.invoke(app, ["hub", "db", "current", "--db", db])
    assert current.exit_code == 0 and f"{HEAD} (head: up to date)" in current.output
    again = runner.invoke(app, ["hub", "db", "upgrade", "--db", db])
    assert again.exit_code == 0 and f"already at revision {HEAD}" in again.output

    engine = open_hub_db(db, create=False).engine
    with engine.begin() as con:
        con.execute(text("UPDATE alembic_version SET version_num = 'f00d'"))
    engine.dispose()
    newer = runner.invoke(app, ["hub", "db", "current", "--db", db])
    assert newer.exit_code == 1 and "newer than this nordfed" in newer.output
    refused = runner.invoke(app, ["hub", "db", "upgrade", "--db", db])
    assert refused.exit_code == 1 and "unknown to this nordfed" in refused.output
    start = runner.invoke(app, ["hub", "start", "--db", db])
    assert start.exit_code == 2 and "unknown to this nordfed" in start.output
    bad = runner.invoke(app, ["hub", "db", "upgrade", "--db", "mysql://x/y"])
    assert bad.exit_code == 1 and "unsupported hub database URL" in bad.output


def test_revision_ids_count_up_and_the_migrations_ship_with_the_package():
    from nordfed.hub.migrations.__main__ import next_revision_id

    assert next_revision_id(frozenset({"0001"})) == "0002" and next_revision_id(frozenset()) == "0001"
    folder = Path(migrations.HERE)
    assert (folder / "env.py").is_file() and (folder / "script.py.mako").is_file()
    assert migrations.BASELINE in {p.name.split("_")[0] for p in (folder / "versions").glob("*.py")}
