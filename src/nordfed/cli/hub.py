"""`nordfed hub …`: run the hub server, bootstrap its first root user, upgrade its database schema."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import closing
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from nordfed.hub.roles import ROLES

hub_app = typer.Typer(help="Run the nordfed hub (coordination server) and administer it.", no_args_is_help=True)
err = Console(stderr=True)
T = TypeVar("T")
HubRole = StrEnum("HubRole", {r: r for r in ROLES})  # typer lists and checks an Enum's values


DbOption = Annotated[
    str, typer.Option("--db", help="Hub database URL: sqlite:///hub.sqlite or postgresql://host:5432/db[?schema=s]")
]


def _fail(message: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def _on_database(db: str, verb: str, work: Callable[[], T], refused: int = 1) -> T:
    """``work()`` on the hub database at ``db``; its errors as a one-line message, exit ``refused`` when nordfed
    refuses the database (or the request), 1 when the database fails."""
    from sqlalchemy.exc import SQLAlchemyError

    from nordfed.hub.admin import AdminError
    from nordfed.hub.db import HubDBError

    try:
        return work()
    except (HubDBError, AdminError) as exc:
        _fail(str(exc), refused)
    except SQLAlchemyError as exc:
        _fail(f"cannot {verb} hub database {db}: {exc.__class__.__name__}: {exc}")


@hub_app.command()
def start(
    db: DbOption = "sqlite:///hub.sqlite",
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 7700,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM); enables HTTPS.")] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    root_password: Annotated[
        str | None,
        typer.Option(envvar="NORDFED_HUB_ROOT_PASSWORD", help="Create user 'root' with this password if missing "
                     "(asked for on a terminal when omitted and there is no root user yet)."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    result_retention_days: Annotated[
        int | None,
        typer.Option(envvar="NORDFED_HUB_RESULT_RETENTION_DAYS", min=1, max=36500,
                     help="Remove sealed task results this many days after their task finished (checked at start "
                          "and hourly); asking for them then answers 410. Default: keep them forever."),
    ] = None,
) -> None:
    """Serve the hub API (one uvicorn worker; long polls are coordinated in-process)."""
    from datetime import timedelta

    from nordfed.hub.app import create_app
    from nordfed.hub.server import GracefulServer, uvicorn_config

    if (ssl_certfile is None) != (ssl_keyfile is None):
        _fail("--ssl-certfile and --ssl-keyfile go together", 2)
    for path in (ssl_certfile, ssl_keyfile):
        if path is not None and not path.is_file():
            _fail(f"{path}: no such file", 2)
    root_password = _root_password(db, root_password)
    retention = None if result_retention_days is None else timedelta(days=result_retention_days)
    app = _on_database(db, "open", lambda: create_app(db, root_password=root_password, result_retention=retention),
                       refused=2)
    tls = {"ssl_certfile": str(ssl_certfile), "ssl_keyfile": str(ssl_keyfile)} if ssl_certfile else {}
    url = f"{'https' if tls else 'http'}://{f'[{host}]' if ':' in host else host}:{port}"
    # the URL printed is the one `nordfed login --hub` and `--url` take (the API itself is under /api)
    err.print(f"nordfed hub on {url} (API under /api, docs at /docs), database {db}\n"
              f"log in with: nordfed login --hub {url} -u USER", highlight=False, soft_wrap=True)
    kept = "forever" if retention is None else f"{result_retention_days} days after their task finished"
    err.print(f"task results are kept {kept} (--result-retention-days)", highlight=False)
    GracefulServer(uvicorn_config(app, host, port, log_level=log_level, **tls)).run()


def _root_password(db: str, given: str | None) -> str | None:
    """``--root-password``; when omitted on a terminal and the hub has no user 'root' yet, asked for (hidden, twice)
    rather than leaving a hub nobody can administer. Without a terminal (services, scripts) nothing is asked."""
    if given is not None or not sys.stdin.isatty():
        return given
    if _on_database(db, "open", lambda: _has_user(db, "root"), refused=2):
        return None
    return typer.prompt("The hub has no user 'root' yet. Its password", hide_input=True, confirmation_prompt=True)


def _has_user(db: str, username: str) -> bool:
    from sqlalchemy import select

    from nordfed.hub.db import open_hub_db
    from nordfed.hub.models import User

    hub_db = open_hub_db(db)
    try:
        with hub_db.sessions() as s:
            return s.scalar(select(User.id).where(User.username == username)) is not None
    finally:
        hub_db.engine.dispose()


@hub_app.command("create-root")
def create_root_command(
    db: DbOption = "sqlite:///hub.sqlite",
    username: Annotated[str, typer.Option(help="Name of the root user.")] = "root",
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="At least 8 characters.")
    ] = ...,
) -> None:
    """Create a root user (the first administrator) directly in the hub database."""
    from nordfed.hub.admin import create_root
    from nordfed.hub.db import open_hub_db

    user_id = _on_database(db, "open", lambda: create_root(open_hub_db(db), username, password))
    typer.echo(f"root user {username!r} created (id {user_id})")


# ---------------------------------------------------------------------------------------- database schema
db_app = typer.Typer(
    help="The hub database schema (Alembic revisions). `nordfed hub start` upgrades it too.", no_args_is_help=True
)
hub_app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(db: DbOption = "sqlite:///hub.sqlite") -> None:
    """Create the hub tables, or upgrade them to this nordfed's schema revision (back up the database first)."""
    from nordfed.hub.db import upgrade_hub_db

    done = _on_database(db, "upgrade", lambda: upgrade_hub_db(db))
    before, after = ", ".join(done.before.revisions) or "none", ", ".join(done.after)
    typer.echo(
        {
            "created": f"created the hub tables at revision {after}",
            "adopted": f"adopted tables made before migrations as the baseline; now at revision {after}",
            "upgraded": f"upgraded from revision {before} to {after}",
            "current": f"already at revision {after} (head)",
        }[done.action]
    )


@db_app.command("current")
def db_current(db: DbOption = "sqlite:///hub.sqlite") -> None:
    """Show the database's schema revision against this nordfed's head (exit 1 unless up to date); changes nothing."""
    from nordfed.hub.db import hub_db_status

    status = _on_database(db, "read", lambda: hub_db_status(db))
    typer.echo(status.describe())
    if status.state != "current":
        raise typer.Exit(1)


# ----------------------------------------------------------------------------------- admin through the API
# These talk to a running hub as an administrator, so the hub's own validation and permissions apply.
UrlOption = Annotated[
    str, typer.Option("--url", envvar="NORDFED_HUB_URL", help="Hub URL as `nordfed hub start` prints it.")
]
UserOption = Annotated[str, typer.Option("--username", envvar="NORDFED_HUB_USERNAME", help="Administrator name.")]
PasswordOption = Annotated[
    str, typer.Option("--password", envvar="NORDFED_HUB_PASSWORD", prompt=True, hide_input=True, help="Its password.")
]


def _logged_in(url: str, username: str, password: str) -> Any:
    """A researcher client logged in as ``username`` at ``url``; unreachable hub and refused login as one line."""
    from nordfed.client.api import Client, HubError, HubUnreachable

    try:
        client = Client(url)
    except ValueError as exc:
        _fail(f"--url: {exc}", 2)
    try:
        return client.login(username, password)
    except HubUnreachable as exc:
        client.close()
        _fail(str(exc))
    except HubError as exc:
        client.close()
        _fail(f"login as {username!r} failed: {exc.detail}")


def _call(client: Any, method: str, path: str, body: dict | None = None) -> Any:
    """``method`` ``/api{path}`` through the client; a refusal names the request and the hub's reason."""
    from nordfed.client.api import HubError, HubUnreachable

    try:
        return client.request(method, f"/api{path}", json=body)
    except HubUnreachable as exc:
        _fail(str(exc))
    except HubError as exc:
        _fail(f"{method} /api{path} refused ({exc.status}): {exc.detail}")


def _admin_call(url: str, username: str, password: str, path: str, body: dict | None, method: str = "POST") -> Any:
    """``method`` ``body`` to ``/api{path}`` logged in as ``username``, through the researcher client."""
    with closing(_logged_in(url, username, password)) as client:
        return _call(client, method, path, body)


@hub_app.command("create-organization")
def create_organization(
    name: Annotated[str, typer.Argument(help="Organization name, e.g. 'Oslo University Hospital'.")],
    country: Annotated[str, typer.Argument(help="Country, e.g. NO.")],
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Create an organization (root only); prints its id."""
    org = _admin_call(url, username, password, "/organizations", {"name": name, "country": country})
    typer.echo(f"organization {org['name']!r} created (id {org['id']})")


@hub_app.command("create-user")
def create_user(
    new_username: Annotated[str, typer.Argument(metavar="USERNAME", help="The new user's name.")],
    organization_id: Annotated[int, typer.Option("--organization-id", help="Its organization.")],
    role: Annotated[list[HubRole], typer.Option("--role", help="Role (repeatable).")],
    new_password: Annotated[
        str,
        typer.Option("--new-password", prompt=True, hide_input=True, confirmation_prompt=True, help="Its password."),
    ],
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Create a user (root, or an organization admin in its own organization)."""
    body = {"username": new_username, "password": new_password, "organization_id": organization_id,
            "roles": [r.value for r in role]}
    user = _admin_call(url, username, password, "/users", body)
    typer.echo(f"user {user['username']!r} created (id {user['id']}, roles {', '.join(user['roles'])})")


@hub_app.command("create-collaboration")
def create_collaboration(
    name: Annotated[str, typer.Argument(help="Collaboration name.")],
    organization_id: Annotated[list[int], typer.Option("--organization-id", help="Member organization (repeatable).")],
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Create a collaboration of organizations (root or collaboration_admin)."""
    collab = _admin_call(
        url, username, password, "/collaborations", {"name": name, "organization_ids": organization_id}
    )
    typer.echo(f"collaboration {collab['name']!r} created (id {collab['id']})")


@hub_app.command("update-collaboration")
def update_collaboration(
    collaboration_id: Annotated[int, typer.Argument(help="Collaboration id.")],
    add: Annotated[list[int] | None, typer.Option("--add-organization-id", help="Organization to add (repeatable).")]
    = None,
    remove: Annotated[list[int] | None, typer.Option(
        "--remove-organization-id", help="Organization to remove (repeatable); its nodes here are disabled.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="A new name.")] = None,
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Add organizations to a collaboration, remove them, or rename it (root or collaboration_admin)."""
    body = {k: v for k, v in (("add_organization_ids", add), ("remove_organization_ids", remove), ("name", name))
            if v}
    if not body:
        _fail("nothing to change: give --add-organization-id, --remove-organization-id or --name", 2)
    collab = _admin_call(url, username, password, f"/collaborations/{collaboration_id}", body, method="PATCH")
    typer.echo(f"collaboration {collab['name']!r} (id {collab['id']}): organizations "
               f"{', '.join(map(str, collab['organization_ids']))}")


@hub_app.command("register-node")
def register_node(
    name: Annotated[str, typer.Argument(help="Node name, unique in its collaboration.")],
    organization_id: Annotated[int, typer.Option("--organization-id", help="The node's organization.")],
    collaboration_id: Annotated[int, typer.Option("--collaboration-id", help="Its collaboration.")],
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Register a node and print its api key (shown once; the hub keeps only a hash)."""
    body = {"name": name, "organization_id": organization_id, "collaboration_id": collaboration_id}
    node = _admin_call(url, username, password, "/nodes", body)
    # redirected (> api.key), the key goes to the file and the terminal should not seem to show nothing
    where = ":" if sys.stdout.isatty() else " (written to standard output, not shown here)"
    err.print(f"node {node['name']!r} registered (id {node['id']}); its api key, shown only now{where}")
    typer.echo(node["api_key"])


def _set_node(node_id: int, url: str, username: str, password: str, method: str, body: dict | None) -> dict:
    return _admin_call(url, username, password, f"/nodes/{node_id}", body, method=method)


NodeArgument = Annotated[int, typer.Argument(help="Node id (`nordfed hub list nodes`).")]


@hub_app.command("disable-node")
def disable_node(
    node_id: NodeArgument,
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Disable a node (root or an organization admin of its organization): its tokens are revoked, its api key
    refused and its unfinished runs fail. `enable-node` undoes it; the node keeps its id, keys and runs."""
    node = _set_node(node_id, url, username, password, "PATCH", {"disabled": True})
    typer.echo(f"node {node['name']!r} (id {node['id']}) disabled")


@hub_app.command("enable-node")
def enable_node(
    node_id: NodeArgument,
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Enable a disabled node again: its api key logs in again."""
    node = _set_node(node_id, url, username, password, "PATCH", {"disabled": False})
    typer.echo(f"node {node['name']!r} (id {node['id']}) enabled")


@hub_app.command("delete-node")
def delete_node(
    node_id: NodeArgument,
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Delete a node that never received a run (one with runs stays part of the record: disable it instead)."""
    node = _set_node(node_id, url, username, password, "DELETE", None)
    typer.echo(f"node {node['name']!r} (id {node['id']}) deleted")


def _user_id(client: Any, user: str) -> int:
    """A user's id from its id or username, among the users this login may list."""
    if user.isdigit():
        return int(user)
    found = [u["id"] for u in _call(client, "GET", "/users") if u["username"] == user]
    if not found:
        _fail(f"no user named {user!r} among the users this login may manage (`nordfed hub list users`)")
    return found[0]


def _set_user(user: str, disabled: bool, url: str, username: str, password: str) -> dict:
    with closing(_logged_in(url, username, password)) as client:
        return _call(client, "PATCH", f"/users/{_user_id(client, user)}", {"disabled": disabled})


UserArgument = Annotated[str, typer.Argument(metavar="USER", help="Username or id (`nordfed hub list users`).")]


@hub_app.command("disable-user")
def disable_user(
    user: UserArgument,
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Disable a user who left (root or an organization admin of its organization): her tokens stop working at
    once, logins are refused and her unfinished tasks are cancelled, so no node runs them. Her finished tasks and
    results stay on record; `enable-user` lets her log in again (cancelled tasks stay cancelled)."""
    out = _set_user(user, True, url, username, password)
    typer.echo(f"user {out['username']!r} (id {out['id']}) disabled: tokens revoked, unfinished tasks cancelled")


@hub_app.command("enable-user")
def enable_user(
    user: UserArgument,
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Enable a disabled user again: she may log in again."""
    out = _set_user(user, False, url, username, password)
    typer.echo(f"user {out['username']!r} (id {out['id']}) enabled")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    from nordfed.cli.hub_list import list_app  # it builds on this module's login helpers

    hub_app.add_typer(list_app, name="list")
    app.add_typer(hub_app, name="hub")
