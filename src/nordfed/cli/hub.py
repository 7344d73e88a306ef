"""`nordfed hub …`: run the hub server, bootstrap its first root user, upgrade its database schema."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console

hub_app = typer.Typer(help="Run the nordfed hub (coordination server) and administer it.", no_args_is_help=True)
err = Console(stderr=True)
T = TypeVar("T")

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
        typer.Option(envvar="NORDFED_HUB_ROOT_PASSWORD", help="Create user 'root' with this password if missing."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve the hub API (one uvicorn worker; long polls are coordinated in-process)."""
    from nordfed.hub.app import create_app
    from nordfed.hub.server import GracefulServer, uvicorn_config

    if (ssl_certfile is None) != (ssl_keyfile is None):
        _fail("--ssl-certfile and --ssl-keyfile go together", 2)
    for path in (ssl_certfile, ssl_keyfile):
        if path is not None and not path.is_file():
            _fail(f"{path}: no such file", 2)
    app = _on_database(db, "open", lambda: create_app(db, root_password=root_password), refused=2)
    tls = {"ssl_certfile": str(ssl_certfile), "ssl_keyfile": str(ssl_keyfile)} if ssl_certfile else {}
    scheme = "https" if tls else "http"
    err.print(f"nordfed hub on {scheme}://{host}:{port}/api (docs at /docs), database {db}")
    GracefulServer(uvicorn_config(app, host, port, log_level=log_level, **tls)).run()


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
UrlOption = Annotated[str, typer.Option("--url", envvar="NORDFED_HUB_URL", help="Hub base URL.")]
UserOption = Annotated[str, typer.Option("--username", envvar="NORDFED_HUB_USERNAME", help="Administrator name.")]
PasswordOption = Annotated[
    str, typer.Option("--password", envvar="NORDFED_HUB_PASSWORD", prompt=True, hide_input=True, help="Its password.")
]


def _admin_call(url: str, username: str, password: str, path: str, body: dict) -> dict:
    import httpx

    try:
        with httpx.Client(base_url=f"{url.rstrip('/')}/api", timeout=60) as http:
            login = http.post("/token", json={"username": username, "password": password})
            if login.status_code != 200:
                _fail(f"login as {username!r} failed: {_detail(login)}")
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            response = http.post(path, json=body, headers=headers)
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the hub at {url}: {exc}")
    if response.status_code >= 400:
        _fail(f"POST /api{path} refused ({response.status_code}): {_detail(response)}")
    return response.json()


def _detail(response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:500]


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
    role: Annotated[list[str], typer.Option("--role", help="Role (repeatable): researcher, viewer, ...")],
    new_password: Annotated[
        str,
        typer.Option("--new-password", prompt=True, hide_input=True, confirmation_prompt=True, help="Its password."),
    ],
    url: UrlOption = "http://127.0.0.1:7700",
    username: UserOption = "root",
    password: PasswordOption = ...,
) -> None:
    """Create a user (root, or an organization admin in its own organization)."""
    body = {"username": new_username, "password": new_password, "organization_id": organization_id, "roles": role}
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
    err.print(f"node {node['name']!r} registered (id {node['id']}); its api key, shown only now:")
    typer.echo(node["api_key"])


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(hub_app, name="hub")
