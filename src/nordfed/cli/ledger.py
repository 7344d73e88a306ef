"""`nordfed ledger …`: verify, show, export, merge and checkpoint a node's or the hub's ledger file; pull the hub
copy of a node's ledger and compare it with the node's own (`verify NODE_LEDGER --against PULLED.jsonl`); close an
epoch of that copy after the node was reinstalled (`restart`).

Exit codes: 0 intact / done, 1 the chain is broken or two copies fork, 2 the input cannot be used.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from nordfed.ledger import Checkpoint, Ledger, Problem

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)  # one message per line, greppable

ledger_app = typer.Typer(help="Verify, inspect and replicate the tamper-evident ledger.", no_args_is_help=True)

KEY_HELP = "Trusted writer key: base64 Ed25519 verify key or a signing.pub file. Repeat for several writers."
CP_HELP = "Published checkpoint the chain must still contain: SEQ:HASH or a checkpoint JSON file. Repeatable."


def _fail(msg: str, code: int = 2) -> NoReturn:
    err.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(code)


def _text_or_file(value: str) -> str:
    p = Path(value)
    return p.read_text().strip() if len(value) < 4096 and p.is_file() else value.strip()


def _keys(values: list[str] | None) -> list[str] | None:
    from nacl.signing import VerifyKey

    from nordfed.privacy.crypto import VerificationError, _public

    if not values:
        return None
    keys = []
    for v in values:
        key = _text_or_file(v)
        try:
            _public(key, VerifyKey, f"--key {v}")
        except VerificationError as exc:
            _fail(str(exc))
        keys.append(key)
    return keys


def _checkpoints(values: list[str] | None) -> list[Checkpoint]:
    from nordfed.ledger import Checkpoint, LedgerFormatError
    from nordfed.privacy.crypto import VerificationError

    out = []
    for v in values or []:
        try:
            cp = Checkpoint.parse(_text_or_file(v))
            cp.signed_by()  # a countersigned checkpoint must carry only valid signatures
        except (LedgerFormatError, VerificationError) as exc:
            _fail(f"--checkpoint {v}: {exc}")
        out.append(cp)
    return out


def _open(path: Path, identity_dir: Path | None = None) -> Ledger:
    from nordfed.ledger import Ledger, LedgerError
    from nordfed.privacy.crypto import Identity

    try:
        ident = Identity.load(identity_dir) if identity_dir else None
        return Ledger.open(path, ident, create=False)
    except (LedgerError, FileNotFoundError, PermissionError) as exc:
        _fail(str(exc))


def _row_of(d: Any) -> tuple[Any, ...]:
    """An entry as JSON (an export line, the hub's answer) → a stored row, payload as JSON text as the file keeps it."""
    from nordfed.ledger.entry import FIELDS

    d = d if isinstance(d, dict) else {}
    return tuple(json.dumps(d.get(f), sort_keys=True, separators=(",", ":")) if f == "payload" else d.get(f)
                 for f in FIELDS)


def _rows(path: Path) -> list[tuple[Any, ...]]:
    """Stored rows of a ledger file, or of a JSON-lines copy (`export`, `pull`), as they are, for verification."""
    try:
        with open(path, "rb") as fh:
            sqlite = fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        sqlite = True  # let the ledger say what is wrong with the path
    if sqlite:
        with _open(path) as led:
            return led.rows()
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    rows.append(_row_of(json.loads(line)))
                except ValueError as exc:
                    _fail(f"{path}, line {lineno}: neither a ledger file nor JSON lines ({exc})")
    return sorted(rows, key=lambda r: r[0] if isinstance(r[0], int) else 0)


def _differing(mine: Any, other: Any) -> str:
    """" in payload, …": which fields of two versions of an entry differ; an entry edited without re-hashing keeps
    its entry_hash, so the two hashes alone would read the same."""
    if not isinstance(mine, dict) or not isinstance(other, dict):
        return ""
    fields = [k for k in sorted(mine.keys() | other.keys()) if mine.get(k) != other.get(k)]
    return f" in {', '.join(fields)}" if fields else ""


def compare_copies(mine: list[tuple[Any, ...]], other: list[tuple[Any, ...]], name: str) -> list[Problem]:
    """Entries of the ``other`` copy (the hub's) that this one lacks or holds differently; entries this copy has
    beyond the other's head are not problems (not replicated yet)."""
    from nordfed.ledger import LedgerFormatError, Problem
    from nordfed.ledger.verify import parse_row

    def canon(row: tuple[Any, ...]) -> Any:
        try:
            return parse_row(row).to_dict()
        except LedgerFormatError:
            return row

    have = {r[0]: r for r in mine if isinstance(r[0], int)}
    problems: list[Problem] = []
    missing: list[int] = []
    for r in other:
        seq = r[0]
        if not isinstance(seq, int):
            continue
        if seq not in have:
            missing.append(seq)
        elif canon(have[seq]) != canon(r):
            fields = _differing(canon(have[seq]), canon(r))
            problems.append(Problem(seq, "fork", f"differs from entry {seq} of {name}{fields} "
                                    f"(here {str(have[seq][6])[:12]}…, there {str(r[6])[:12]}…)"))
    if missing:  # one problem per run of consecutive missing entries
        start = prev = missing[0]
        for seq in [*missing[1:], None]:
            if seq is not None and seq == prev + 1:
                prev = seq
                continue
            what = f"entry {start}" if start == prev else f"entries {start}..{prev}"
            problems.append(Problem(start, "truncated", f"{what} of {name} missing here"))
            if seq is not None:
                start = prev = seq
    return sorted(problems, key=lambda p: p.seq)


@ledger_app.command("verify")
def verify_cmd(
    path: Path = typer.Argument(..., help="Ledger file (SQLite) or a JSON-lines copy (`export`, `pull`)."),
    key: list[str] = typer.Option(None, "--key", "-k", help=KEY_HELP),
    checkpoint: list[str] = typer.Option(None, "--checkpoint", "-c", help=CP_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    against: Annotated[Path | None, typer.Option(
        "--against", help="Another copy of the same chain (the hub's, from `nordfed ledger pull`): report its "
        "entries that this one lacks (truncated) or holds differently (fork), by seq.")] = None,
) -> None:
    """Check every entry's hash, signature, order and links (and the checkpoints); exit 1 naming the first break."""
    from nordfed.ledger import VerifyReport, verify_rows

    keys, cps = _keys(key), _checkpoints(checkpoint)
    rows, other = _rows(path), []
    rep = verify_rows(rows, keys, cps)
    if against is not None:
        other = _rows(against)
        extra = compare_copies(rows, other, str(against))
        rep = VerifyReport(rep.count, rep.head, sorted([*rep.problems, *extra], key=lambda p: p.seq), rep.signers,
                           rep.pinned)
    if as_json:
        print(json.dumps({"ok": rep.ok, "count": rep.count, "head": str(rep.head) if rep.head else None,
                          "pinned": rep.pinned, "signers": rep.signers,
                          "against": {"path": str(against), "count": len(other)} if against is not None else None,
                          "problems": [{"seq": p.seq, "reason": p.reason, "detail": p.detail} for p in rep.problems]}))
    elif rep.ok:
        same = f"; agrees with all {len(other)} entries of {against}" if against is not None else ""
        console.print(f"[green]{path}: {rep.summary()}{same}[/green]")
        if not rep.pinned:
            err.print("[yellow]warning:[/yellow] no --key given: a forger who re-signs the whole chain with their own "
                      f"key would pass; signers seen: {', '.join(rep.signers) or 'none'}")
    else:
        err.print(f"[red]{path}: {rep.summary()}[/red]")
        for p in rep.problems[1:10]:
            err.print(f"  also {p}")
    raise typer.Exit(0 if rep.ok else 1)


def _short(value: object) -> object:
    """Long hex digests shortened for display, like git does."""
    if isinstance(value, str) and len(value) >= 40 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    return value


@ledger_app.command("show")
def show_cmd(
    path: Path = typer.Argument(..., help="Ledger file (SQLite)."),
    tail: int = typer.Option(20, "--tail", "-n", min=0, help="Show the last N entries (0 = all)."),
) -> None:
    """Print entries as a table, each marked with its verification status."""
    from nordfed.ledger import LedgerFormatError
    from nordfed.ledger.verify import parse_row

    with _open(path) as led:
        rows = led.rows()
        rep = led.verify()
    status = {p.seq: p.reason for p in rep.problems}
    table = Table(title=str(path), caption=rep.summary())
    for col in ("seq", "time (UTC)", "kind", "actor", "payload", "hash", "signer", "status"):
        table.add_column(col, overflow="fold", no_wrap=col in ("seq", "kind", "status"))
    shown = rows[-tail:] if tail else rows
    last = shown[0][0] - 1 if shown and isinstance(shown[0][0], int) else None
    for row in shown:
        if isinstance(row[0], int) and last is not None and row[0] > last + 1:
            gone = f"entry {last + 1}" if row[0] == last + 2 else f"entries {last + 1}..{row[0] - 1}"
            table.add_row(f"{last + 1}", "", "", "", f"[red]{gone} missing[/red]", "", "", "[red]gap[/red]")
        last = row[0] if isinstance(row[0], int) else last
        try:
            e = parse_row(row)
            payload = json.dumps({k: _short(v) for k, v in e.payload.items()}, sort_keys=True, ensure_ascii=False)
            ts = e.ts[:19].replace("T", " ")
            cells = [str(e.seq), ts, e.kind, e.actor, payload, e.entry_hash[:12], e.signer[:12]]
        except LedgerFormatError:
            cells = [str(row[0]), str(row[1]), str(row[2]), str(row[3]), str(row[4])[:80], str(row[6])[:12],
                     str(row[7])[:12]]
        bad = status.get(row[0] if isinstance(row[0], int) else -1)
        table.add_row(*cells, f"[red]{bad}[/red]" if bad else "[green]ok[/green]")
    console.print(table)


@ledger_app.command("export")
def export_cmd(
    path: Path = typer.Argument(..., help="Ledger file (SQLite)."),
    since: int = typer.Option(0, "--since", min=0, help="Export entries after this sequence number."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Write the entries after --since as JSON lines (for `nordfed ledger merge` on another copy)."""
    from nordfed.ledger import LedgerError, dump_jsonl

    with _open(path) as led:
        try:
            entries = led.export_since(since)
        except LedgerError as exc:
            _fail(f"{exc}; run `nordfed ledger verify {path}`", 1)
    if out is None:
        dump_jsonl(entries, sys.stdout)
        return
    tmp = out.with_name(out.name + ".tmp")  # nothing half-written: rename into place when complete
    with open(tmp, "w", encoding="utf-8") as fh:
        n = dump_jsonl(entries, fh)
    tmp.replace(out)
    err.print(f"{n} entries written to {out}")


@ledger_app.command("merge")
def merge_cmd(
    path: Path = typer.Argument(..., help="This copy of the ledger (created if missing)."),
    export: Path = typer.Argument(..., help="JSON lines from `nordfed ledger export` of another copy."),
    key: list[str] = typer.Option(None, "--key", "-k", help=KEY_HELP),
) -> None:
    """Add another copy's entries that extend this one (all or nothing); exit 1 if the copies fork."""
    from nordfed.ledger import Ledger, LedgerError, LedgerFork, LedgerFormatError, load_jsonl

    keys = _keys(key)
    try:
        entries = load_jsonl(export)
    except (OSError, LedgerFormatError) as exc:
        _fail(str(exc))
    try:
        with Ledger.open(path) as led:
            rep = led.merge(entries, keys)
    except LedgerFork as exc:
        _fail(str(exc), 1)
    except LedgerError as exc:
        _fail(str(exc))
    console.print(f"{path}: {rep.added} added, {rep.present} already present, head {rep.head}")


@ledger_app.command("checkpoint")
def checkpoint_cmd(
    path: Path = typer.Argument(..., help="Ledger file (SQLite)."),
    confirm: str | None = typer.Option(None, "--confirm", help="Countersign this published checkpoint "
                                       "(SEQ:HASH or JSON file) instead of the current head."),
    key_dir: Path | None = typer.Option(None, "--key-dir", help="Countersign with the key pair in this folder."),
) -> None:
    """Print the head (or a confirmed checkpoint) as checkpoint JSON, countersigned when --key-dir is given."""
    from nordfed.ledger import LedgerError, LedgerFork

    with _open(path, key_dir) as led:
        cp = _checkpoints([confirm])[0] if confirm else led.checkpoint()
        if cp is None:
            _fail(f"{path}: the ledger is empty")
        if confirm:
            rep = led.verify(checkpoints=[cp])
            if not rep.ok:
                _fail(f"{path} does not confirm checkpoint {cp}: {rep.first}", 1)
        if key_dir is not None:
            try:
                cp = led.countersign(cp)
            except LedgerFork as exc:
                _fail(str(exc), 1)
            except LedgerError as exc:
                _fail(str(exc))
    print(json.dumps(cp.to_dict(), sort_keys=True))


NODE_HELP = "Node name or id."
COLLAB_HELP = "Collaboration of the node, when nodes of several collaborations share its name."


@contextmanager
def _hub_client() -> Iterator[Any]:
    """The logged-in client of `nordfed login`; hub refusals and unreachable hubs (a HubError too) end the
    command (exit 2)."""
    from nordfed.client.api import Client, HubError

    try:
        client = Client.from_state()
    except FileNotFoundError as exc:
        _fail(str(exc))
    try:
        yield client
    except HubError as exc:
        _fail(str(exc))
    finally:
        client.close()


@ledger_app.command("pull")
def pull_cmd(
    node: str = typer.Option(..., "--node", "-n", help=NODE_HELP),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write to this file instead of stdout."),
    collaboration: int | None = typer.Option(None, "--collaboration", help=COLLAB_HELP),
    epoch: int | None = typer.Option(None, "--epoch", min=1, help="Epoch of the hub copy (default: the current "
                                     "one; earlier ones were closed by `nordfed ledger restart`)."),
) -> None:
    """Fetch one epoch of the hub copy of a node's ledger as JSON lines (as `export` writes), each entry verified
    under the signing keys the node has registered; compare it with the node's own: `nordfed ledger verify
    NODE_LEDGER --against FILE`."""
    from nordfed.ledger import verify_rows

    with _hub_client() as client:
        info = _find_node(client, node, collaboration)
        copy = client.node_ledger_copy(int(info["id"]), epoch)
    entries = copy["entries"]
    keys = [k["signing_key"] for k in copy["signing_keys"]]
    rep = verify_rows([_row_of(d) for d in entries], keys or None)
    lines = "".join(json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n" for d in entries)
    if out is None:
        sys.stdout.write(lines)
    else:
        tmp = out.with_name(out.name + ".tmp")  # nothing half-written: rename into place when complete
        tmp.write_text(lines, encoding="utf-8")
        tmp.replace(out)
    where = f" to {out}" if out is not None else ""
    msg = (f"{len(entries)} entries of node {info['name']} (id {info['id']}), epoch {copy['epoch']} of "
           f"{copy['epochs']}{where}: hub copy {rep.summary()}")
    if rep.ok:
        err.print(msg)
    else:
        err.print(f"[red]{msg}[/red]")
    raise typer.Exit(0 if rep.ok else 1)


@ledger_app.command("restart")
def restart_cmd(
    node: str = typer.Option(..., "--node", "-n", help=NODE_HELP),
    collaboration: int | None = typer.Option(None, "--collaboration", help=COLLAB_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Close the current epoch of a node's hub ledger copy (root or an admin of the node's organization), after the
    node was reinstalled with a fresh ledger: the hub refuses its new chain as a fork until then. The closed epoch
    stays readable (`pull --epoch N`); the node pushes its new chain into the next one at its next try."""
    with _hub_client() as client:
        info = _find_node(client, node, collaboration)
        if not yes:
            typer.confirm(f"Close the current epoch of the hub ledger copy of node {info['name']} (id {info['id']})? "
                          "It stays readable but the node's next chain starts a new epoch", abort=True)
        done = client.restart_node_ledger(int(info["id"]))
    console.print(f"closed epoch {done['epoch']} of node {info['name']} (id {info['id']}) at entry {done['head_seq']} "
                  f"({done['head_hash'][:12]}…); the node pushes its new chain into epoch {done['epoch'] + 1} at its "
                  "next try (within 5 minutes, or when it restarts)")


def _find_node(client: Any, node: str, collaboration: int | None) -> dict[str, Any]:
    if node.isdigit():
        return client.request("GET", f"/api/nodes/{int(node)}")
    params = {"collaboration_id": collaboration} if collaboration is not None else {}
    found = [n for n in client.request("GET", "/api/nodes", params=params) if n["name"] == node]
    if not found:
        _fail(f"no node named {node!r} among the nodes you can see")
    if len(found) > 1:
        ids = ", ".join(f"{n['id']} (collaboration {n['collaboration_id']})" for n in found)
        _fail(f"several nodes are named {node!r}: {ids}; pass --collaboration or the id")
    return found[0]


def register(app: typer.Typer) -> None:
    app.add_typer(ledger_app, name="ledger")
