"""`nordfed hub list …`: what the hub holds, as far as the login may see it (read-only)."""

from __future__ import annotations

import json
from contextlib import closing
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from nordfed.cli.hub import UserOption, _call, _fail, _logged_in

list_app = typer.Typer(help="List what the hub holds, as far as the login may see it (read-only).",
                       no_args_is_help=True)
HUB_ORGANIZATION_ID = 1  # made with the hub's first root user, before any other organization can exist
ListUrlOption = Annotated[
    str | None, typer.Option("--url", envvar="NORDFED_HUB_URL", help="Hub URL (default: that of your `nordfed "
                             "login`, or http://127.0.0.1:7700 with --password).")
]
ListPasswordOption = Annotated[
    str | None, typer.Option("--password", envvar="NORDFED_HUB_PASSWORD", help="Log in as --username for this "
                             "command only (default: use your `nordfed login`).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the hub's records as JSON.")]


def _reader(url: str | None, username: str, password: str | None) -> Any:
    """A client to read with: a fresh login when a password is given, else the saved `nordfed login`."""
    from nordfed.client.api import Client, hub_base_url

    if password is not None:
        return _logged_in(url or "http://127.0.0.1:7700", username, password)
    try:
        client = Client.from_state()
    except (FileNotFoundError, ValueError) as exc:
        _fail(f"{exc}, or pass --password to log in for this command")
    try:
        wanted = hub_base_url(url) if url else client.hub_url
    except ValueError as exc:
        _fail(f"--url: {exc}", 2)
    if wanted != client.hub_url:
        client.close()
        _fail(f"--url {wanted}: you are logged in to {client.hub_url}; run `nordfed login --hub {wanted}` or pass "
              "--password", 2)
    return client


def _listing(url: str | None, username: str, password: str | None, *paths: str) -> list[Any]:
    with closing(_reader(url, username, password)) as client:
        return [_call(client, "GET", p) for p in paths]


def _show(title: str, columns: list[str], rows: list[list[str]], records: list[dict], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _named(names: dict[int, str], ident: int) -> str:
    return f"{names.get(ident, '?')} ({ident})"


@list_app.command("organizations")
def list_organizations(
    url: ListUrlOption = None, username: UserOption = "root", password: ListPasswordOption = None,
    as_json: JsonOption = False,
) -> None:
    """Organizations. The first is the hub's own, made for its root users; it is no site."""
    (orgs,) = _listing(url, username, password, "/organizations")
    records = [{**o, "hub": o["id"] == HUB_ORGANIZATION_ID} for o in orgs]
    rows = [[str(o["id"]), o["name"], o["country"], "the hub's own (root), no site" * o["hub"]]
            for o in records]
    _show("organizations", ["id", "name", "country", "note"], rows, records, as_json)


@list_app.command("users")
def list_users(
    organization_id: Annotated[int | None, typer.Option("--organization-id", help="Only this organization.")] = None,
    url: ListUrlOption = None, username: UserOption = "root", password: ListPasswordOption = None,
    as_json: JsonOption = False,
) -> None:
    """Users (root sees all, others their own organization's), their roles and whether they published keys."""
    query = f"?organization_id={organization_id}" if organization_id is not None else ""
    users, orgs = _listing(url, username, password, f"/users{query}", "/organizations")
    names = {o["id"]: o["name"] for o in orgs}
    rows = [[str(u["id"]), u["username"], _named(names, u["organization_id"]), ", ".join(u["roles"]),
             "yes" if u.get("signing_key") else "no", "disabled" if u.get("disabled") else "active"] for u in users]
    _show("users", ["id", "username", "organization", "roles", "keys", "state"], rows, users, as_json)


@list_app.command("collaborations")
def list_collaborations(
    url: ListUrlOption = None, username: UserOption = "root", password: ListPasswordOption = None,
    as_json: JsonOption = False,
) -> None:
    """Collaborations you can see, with their member organizations."""
    collabs, orgs = _listing(url, username, password, "/collaborations", "/organizations")
    names = {o["id"]: o["name"] for o in orgs}
    rows = [[str(c["id"]), c["name"], ", ".join(_named(names, i) for i in c["organization_ids"])] for c in collabs]
    _show("collaborations", ["id", "name", "organizations"], rows, collabs, as_json)


@list_app.command("nodes")
def list_nodes(
    collaboration_id: Annotated[int | None, typer.Option("--collaboration-id", help="Only this one's.")] = None,
    organization_id: Annotated[int | None, typer.Option("--organization-id", help="Only this one's.")] = None,
    url: ListUrlOption = None, username: UserOption = "root", password: ListPasswordOption = None,
    as_json: JsonOption = False,
) -> None:
    """Nodes you can see, disabled ones included: status, last contact and whether they published keys."""
    query = "&".join(f"{k}={v}" for k, v in (("collaboration_id", collaboration_id),
                                             ("organization_id", organization_id)) if v is not None)
    nodes, orgs, collabs = _listing(url, username, password, f"/nodes?{query}", "/organizations", "/collaborations")
    org_names = {o["id"]: o["name"] for o in orgs}
    collab_names = {c["id"]: c["name"] for c in collabs}
    rows = [[str(n["id"]), n["name"], _named(org_names, n["organization_id"]),
             _named(collab_names, n["collaboration_id"]), "disabled" if n.get("disabled") else n["status"],
             (n.get("last_seen") or "never")[:16].replace("T", " "), "yes" if n.get("signing_key") else "no"]
            for n in nodes]
    _show("nodes", ["id", "name", "organization", "collaboration", "status", "last seen (UTC)", "keys"], rows,
          nodes, as_json)
