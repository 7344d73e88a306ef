"""`nordfed node …`, `nordfed login`/`logout` and `nordfed algorithms`: the network commands (`nordfed task …` are in
:mod:`nordfed.cli.task`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err = Console(stderr=True)

node_app = typer.Typer(help="Run a node next to a site's OMOP CDM.", no_args_is_help=True)


def _fail(msg: str, code: int = 1) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(msg)}", highlight=False, soft_wrap=True)  # one line in logs too
    raise typer.Exit(code)


@node_app.command("start")
def node_start(
    config: Path = typer.Option(..., "--config", "-c", help="node.yaml: hub, api key, CDM, keys and policy."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
) -> None:
    """Start the node: connect to the hub (outbound only) and serve runs allowed by the policy until stopped."""
    from nordfed.node.runtime import NodeRuntime
    from nordfed.policy.node import PolicyError, load_node_config

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "numexpr"):  # numexpr logs its thread count at INFO on import
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        cfg = load_node_config(config)
    except PolicyError as exc:
        _fail(str(exc))
    from nordfed.ledger import LedgerError

    try:
        NodeRuntime(cfg).serve_forever()
    except (RuntimeError, OSError, LedgerError, PolicyError) as exc:  # PolicyError: cdm_url names no CDM
        _fail(str(exc))


node_ledger_app = typer.Typer(help="The node's own audit ledger (state_dir/node.ledger).", no_args_is_help=True)
node_app.add_typer(node_ledger_app, name="ledger")
CONFIG_HELP = "node.yaml of the node whose ledger to read (the node may be running)."


def _node_ledger(config: Path) -> tuple[Path, list[str]]:
    """The ledger path and the node's signing public keys (its writers): its own and its earlier ones."""
    from nordfed.policy.node import PolicyError, load_node_config
    from nordfed.privacy.crypto import SIGN_PUBLIC

    try:
        cfg = load_node_config(config)
    except PolicyError as exc:
        _fail(str(exc))
    pub = cfg.key_dir / SIGN_PUBLIC
    if not pub.is_file():
        _fail(f"{pub}: the node's signing public key is missing; has the node ever started?")
    if not cfg.ledger_path.is_file():
        _fail(f"{cfg.ledger_path}: no ledger yet; the node writes it on its first start")
    return cfg.ledger_path, [pub.read_text().strip(), *cfg.previous_signing_keys]


@node_ledger_app.command("verify")
def node_ledger_verify(
    config: Path = typer.Option(..., "--config", "-c", help=CONFIG_HELP),
    checkpoint: list[str] = typer.Option(None, "--checkpoint", help="Published checkpoint SEQ:HASH or JSON file "
                                         "the chain must still contain. Repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Verify the node's ledger under the node's own key: `nordfed ledger verify` with path and key from node.yaml."""
    from nordfed.cli.ledger import verify_cmd

    path, keys = _node_ledger(config)
    verify_cmd(path=path, key=keys, checkpoint=checkpoint or [], as_json=as_json)


@node_ledger_app.command("show")
def node_ledger_show(
    config: Path = typer.Option(..., "--config", "-c", help=CONFIG_HELP),
    tail: int = typer.Option(20, "--tail", "-n", min=0, help="Show the last N entries (0 = all)."),
) -> None:
    """Print the node's ledger entries with their verification status (`nordfed ledger show`)."""
    from nordfed.cli.ledger import show_cmd

    path, _ = _node_ledger(config)
    show_cmd(path=path, tail=tail)


@node_app.command("keys")
def node_keys(
    key_dir: Path = typer.Option(..., "--dir", "-d", help="Folder for the key files (private keys mode 0600)."),
) -> None:
    """Generate a node's (or researcher's) X25519 encryption and Ed25519 signing key pairs; print the public keys."""
    from nordfed.privacy.crypto import Identity

    try:
        ident = Identity.generate()
        ident.save(key_dir)
    except FileExistsError as exc:
        _fail(str(exc))
    console.print(f"keys written to {key_dir}")
    console.print(f"encryption_key: {ident.encryption_public}\nsigning_key: {ident.signing_public}")


@node_app.command("trust")
def node_trust(
    node: str = typer.Argument(..., help="Node name or id."),
    collaboration: int = typer.Option(..., "--collaboration", "-c", help="Collaboration id."),
    signing_key: str = typer.Option(..., "--signing-key", help="The node's new signing.pub, from the site."),
    encryption_key: str | None = typer.Option(None, "--encryption-key",
                                              help="Its new encryption key too, if that changed."),
) -> None:
    """Pin a node's new keys after its operator replaced them: only if the hub publishes exactly the keys the site
    gave you (trust on first use refuses changed keys until then)."""
    from nordfed.client.api import HubError
    from nordfed.privacy.crypto import VerificationError

    c = _client()
    before = c.pinned_nodes()
    try:
        n = c.trust_node(collaboration, node, signing_key.strip(), encryption_key.strip() if encryption_key else None)
    except (HubError, VerificationError, ValueError) as exc:
        _fail(str(exc))
    pins = c.home / "known_nodes.json"
    if _keys(before.get(str(n["id"]))) == _keys(n):
        console.print(f"the keys of node {n['name']} (id {n['id']}) were already pinned in {pins}; nothing changed")
    else:
        console.print(f"pinned the new keys of node {n['name']} (id {n['id']}) in {pins}")


def _keys(node: dict[str, Any] | None) -> tuple[str | None, str | None]:
    return (node or {}).get("signing_key"), (node or {}).get("encryption_key")


def login(
    hub: str = typer.Option(..., "--hub", envvar="NORDFED_HUB_URL", help="Hub URL as `nordfed hub start` prints "
                            "it, e.g. https://hub.example.org (a trailing /api is fine)."),
    # NORDFED_USERNAME and NORDFED_PASSWORD, not the `nordfed hub` commands' NORDFED_HUB_USERNAME/_PASSWORD: an
    # operator who exported root's for those would otherwise log in as root, or send root's password, unasked
    username: str = typer.Option(..., "--username", "-u", envvar="NORDFED_USERNAME"),
    password: str = typer.Option(..., "--password", "-p", envvar="NORDFED_PASSWORD", prompt=True,
                                 hide_input=True, help="Asked for (hidden) when not given."),
    key_dir: Path | None = typer.Option(None, "--key-dir", help="Key folder (default: $NORDFED_HOME/keys/USER)."),
) -> None:
    """Log in to a hub, create your key pairs on first use and publish the public halves."""
    from nordfed.client.api import Client, HubError

    try:
        c = Client(hub, key_dir=key_dir)
    except ValueError as exc:
        _fail(f"--hub: {exc}", 2)
    try:
        c.login(username, password)
        before = c.request("GET", "/api/users/me").get("signing_key")  # what the hub published for her so far
        ident = c.ensure_keys()
    except HubError as exc:
        _fail(str(exc))
    path = c.save_state()
    console.print(f"logged in to {c.hub_url} as {username}; state in {path}")
    console.print(f"your signing key (nodes pin it in their policy): {ident.signing_public}")
    if before and before != ident.signing_public:
        _warn_replaced_keys(username, before, c.key_dir)


def _warn_replaced_keys(username: str, before: str, key_dir: Path | None) -> None:
    """A login from another machine or key folder replaces the keys the hub publishes; the sites do not learn
    that from the hub (they pin her key themselves), so say what changes for her."""
    err.print(
        f"[yellow]warning:[/yellow] the keys in {key_dir} replace those the hub published for {username} (signing "
        f"key {before}). Sites that pin the earlier key refuse your tasks until their node.yaml pins this one "
        "(policy.researchers) and the node restarts: give each site your new signing key. Results of your earlier "
        "tasks open only with the earlier key folder; log in with --key-dir to it to read them.",
        highlight=False, soft_wrap=True,
    )


def logout() -> None:
    """Revoke your token at the hub (it stops working at once) and forget it; your keys stay."""
    from nordfed.client.api import HubError

    c = _client()
    if not c.token:
        console.print(f"not logged in to {c.hub_url}")
        return
    try:
        c.logout()
    except HubError as exc:
        _fail(f"{exc}; the token was not revoked and is kept")
    path = c.save_state()
    console.print(f"logged out of {c.hub_url}; token revoked and removed from {path}")


def _client() -> Any:
    from nordfed.client.api import Client

    try:
        return Client.from_state()
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))


SHORT_HASH = 12  # hex digits of a code hash in tables; --json and node.yaml carry all 64


def algorithm_pins() -> list[dict[str, str]]:
    """Every registered algorithm as a node pins it (name, version, code hash), with its one-paragraph description."""
    import inspect

    from nordfed.fed.protocol import algorithms

    def describe(fn: Any) -> str:
        return " ".join((inspect.getdoc(fn) or "").split("\n\n")[0].split())

    return [{"name": name, "version": a.version, "code_hash": a.code_hash, "description": describe(a.partial)}
            for name, a in sorted(algorithms().items())]


def list_algorithms(
    as_json: bool = typer.Option(False, "--json", help="Print name, version, full code_hash and description as "
                                 "JSON."),
) -> None:
    """List registered algorithms with version and code hash (what a node pins in its policy)."""
    from nordfed.fed.protocol import algorithms

    private = {name for name, a in algorithms().items() if a.dp}
    pins = [{**a, "dp": a["name"] in private} for a in algorithm_pins()]
    if as_json:  # plain print: rich would wrap long strings at the console width
        print(json.dumps(pins, indent=2))
        return
    t = Table(title="algorithms", caption="code hashes shortened; full ones: nordfed algorithms --json. [dp]: "
              "releases under differential privacy when a task asks (params dp: {epsilon})")
    rows = [(a["name"], a["version"], a["code_hash"][:SHORT_HASH] + "…", escape("[dp] " * a["dp"] + a["description"]))
            for a in pins]
    columns = ("name", "version", "code_hash")
    widths = [max(len(col), *(len(r[i]) for r in rows)) for i, col in enumerate(columns)]
    for col, width in zip(columns, widths, strict=True):
        t.add_column(col, width=width, no_wrap=True)  # never cut: a hash that wraps is unreadable
    # what is left of the width (3 = padding and border per column), one line per algorithm
    t.add_column("description", no_wrap=True, overflow="ellipsis",
                 width=max(11, console.width - sum(w + 3 for w in widths) - 4))
    for row in rows:
        t.add_row(*row)
    console.print(t)


@node_app.command("init")
def node_init(
    hub: str = typer.Option(..., "--hub", envvar="NORDFED_HUB_URL", help="Hub URL as `nordfed hub start` prints it."),
    site: str = typer.Option(..., "--site", help="The node's name, as registered (`nordfed hub register-node`)."),
    cdm: str = typer.Option(..., "--cdm", help="The site's OMOP CDM, e.g. duckdb:///dk.duckdb or "
                            "postgresql://host:5432/db?schema=cdm (a relative DuckDB path is made absolute)."),
    out: Path = typer.Option(Path("node.yaml"), "--out", "-o", help="File to write; key_dir 'keys' is next to it."),
    api_key_env: str = typer.Option("NORDFED_NODE_API_KEY", "--api-key-env", metavar="VAR",
                                    help="Environment variable the node reads its api key from."),
    api_key_file: str | None = typer.Option(None, "--api-key-file", metavar="PATH", help="Read the api key from "
                                            "this file instead (relative to the node.yaml's folder)."),
    collaboration: list[int] = typer.Option(None, "--collaboration", "-c", help="Allow this collaboration id "
                                            "(repeatable; default: none until you edit the file)."),
    organization: list[int] = typer.Option(None, "--organization", help="Allow researchers of this organization "
                                           "id (repeatable)."),
    researcher: list[str] = typer.Option(None, "--researcher", metavar="USER:SIGNING_KEY", help="Pin a "
                                         "researcher's signing key, as their `nordfed login` printed it (repeatable)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a commented node.yaml for a site to review: every algorithm of this nordfed pinned by name, version and
    code hash, the policy's defaults, and the api key read from the environment or a file (never written)."""
    from nordfed.client.api import hub_base_url
    from nordfed.policy.node import PinnedAlgorithm, node_config_template

    try:
        hub_url = hub_base_url(hub)  # the node appends /api itself
    except ValueError as exc:
        _fail(f"--hub: {exc}", 2)
    if out.exists() and not force:
        _fail(f"{out} exists; pass --force to overwrite it", 2)
    pins = [(PinnedAlgorithm(name=a["name"], version=a["version"], code_hash=a["code_hash"]), a["description"])
            for a in algorithm_pins()]
    text = node_config_template(
        hub_url, site, _absolute_duckdb(cdm), pins, api_key_env=None if api_key_file else api_key_env,
        api_key_file=api_key_file, collaborations=collaboration or [], organizations=organization or [],
        researchers=[_researcher(r) for r in researcher or []])
    _check_template(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    console.print(f"wrote {out}: {len(pins)} algorithms pinned, the policy's defaults", highlight=False)
    missing = [w for w, v in (("collaborations", collaboration), ("organizations", organization),
                              ("researchers", researcher)) if not v]
    if missing:
        console.print(f"edit policy {', '.join(missing)} in {out} (empty lists allow nobody)", highlight=False)
    key = f"the api key in {out.parent / api_key_file}" if api_key_file else f"{api_key_env}=<api key>"
    console.print(f"then start the node with {key}: nordfed node start --config {out}", highlight=False,
                  soft_wrap=True)


def _absolute_duckdb(url: str) -> str:
    """A relative ``duckdb:///path`` made absolute: the node resolves it against its own working folder, which is
    rarely the one the site ran `node init` in."""
    prefix = "duckdb:///"
    path = url[len(prefix):] if url.startswith(prefix) else ""
    if not path or path.startswith("/") or path.startswith(":memory:"):
        return url
    return prefix + str(Path(path).resolve())


def _researcher(text: str) -> Any:
    from pydantic import ValidationError

    from nordfed.policy.node import PinnedResearcher

    username, sep, key = text.partition(":")
    try:
        if not sep:
            raise ValueError("expected USER:SIGNING_KEY")
        return PinnedResearcher(username=username.strip(), signing_key=key.strip())
    except (ValidationError, ValueError) as exc:
        _fail(f"--researcher {text!r}: {exc}", 2)


def _check_template(text: str) -> None:
    """Refuse to write a file the node would refuse (the api key aside, which is only read at node start)."""
    import yaml
    from pydantic import ValidationError

    from nordfed.policy.node import NodeConfig

    raw = yaml.safe_load(text)
    raw.pop("api_key_env", None)
    raw.pop("api_key_file", None)
    try:
        NodeConfig.model_validate({**raw, "api_key": "x" * 32})
    except ValidationError as exc:
        _fail("the node would refuse this configuration: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), 2)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(node_app, name="node")
    app.command("login")(login)
    app.command("logout")(logout)
    app.command("algorithms")(list_algorithms)
