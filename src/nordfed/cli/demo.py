"""`nordfed demo`: a whole network on this machine, one federated characterization study through it."""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
DEMO_SITES = ("DK", "NO", "SE")


def _make_sites(workdir: Path, persons: int) -> dict[str, str]:
    """Synthetic DK/NO/SE CDMs (nordfed.synth); a person-only CDM when the generator is unavailable."""
    urls = {s: f"duckdb:///{workdir / f'{s.lower()}.duckdb'}" for s in DEMO_SITES}
    try:
        from nordfed.synth import generate, write
    except ImportError:
        from nordfed.node.localnet import tiny_cdm

        return {s: tiny_cdm(u, persons, seed=i) for i, (s, u) in enumerate(urls.items())}
    for i, (s, u) in enumerate(urls.items()):
        write(generate(s, persons=persons, seed=i + 1), u)
    return urls


def _table(df: Any, title: str, limit: int = 20) -> Table:
    t = Table(title=title)
    for c in df.columns:
        t.add_column(str(c), justify="right" if df[c].dtype.kind in "iuf" or str(df[c].dtype) == "Int64" else "left")
    for row in df.head(limit).itertuples(index=False):
        t.add_row(*("–" if v is None or (isinstance(v, float) and v != v) or str(v) == "<NA>" else str(v)
                    for v in row))
    return t


def _study(fed: Any) -> None:
    from nordfed.fed.characterization import characterize

    tables = characterize(fed, top_n=5)
    console.print(_table(tables.per_site["persons"], "persons per site"))
    console.print(_table(tables.pooled["persons"], "persons, pooled"))
    age = tables.pooled["age_sex"].pivot(index=["age_low", "age_group"], columns="sex", values="persons")
    age = age.reset_index().drop(columns="age_low").rename_axis(columns=None)
    console.print(_table(age, "pooled persons by age at first observation and sex (–: under 10 at every site)"))
    for d in ("condition", "drug"):
        if d in tables.pooled:
            console.print(_table(tables.pooled[d], f"top {d} concepts, pooled", limit=5))


def demo(
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave hub and nodes up; stop with Ctrl-C."),
    persons: int = typer.Option(2000, "--persons", min=20, max=1_000_000, help="Synthetic persons per site."),
    workdir: Path | None = typer.Option(None, "--workdir", help="Keep everything here (default: a temp folder)."),
) -> None:
    """Synthesise DK/NO/SE sites, start a hub and three nodes, run a federated characterization through them."""
    from nordfed.client import HubFederation
    from nordfed.node.localnet import LocalNetwork

    own_dir = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="nordfed-demo-")) if workdir is None else workdir
    wd.mkdir(parents=True, exist_ok=True)
    if any(wd.glob("*.duckdb")) or (wd / "hub.sqlite").exists():
        console.print(f"[red]error:[/red] {wd} already holds a demo; choose an empty --workdir")
        raise typer.Exit(1)

    def _term(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, _term)
    t0 = time.monotonic()
    net = LocalNetwork(wd, {})
    try:
        with console.status("starting hub, synthesising sites …") as status:
            net.spawn_hub()  # boots while the sites are generated
            net.sites = _make_sites(wd, persons)
            status.update("provisioning and starting nodes …")
            net.start(progress=status.update)
        console.print(f"network up in {time.monotonic() - t0:.1f} s: hub {net.hub_url}, nodes {', '.join(net.nodes)}")
        assert net.client is not None
        fed = HubFederation(net.client, net.collaboration_id, timeout=120)
        t1 = time.monotonic()
        with console.status("running the federated characterization through the hub …"):
            _study(fed)
        console.print(f"study done in {time.monotonic() - t1:.1f} s (total {time.monotonic() - t0:.1f} s); "
                      "every result was signed by its node and end-to-end encrypted to the researcher")
        if keep_running:
            console.print(f"\n[bold]network is up[/bold] — hub {net.hub_url} (API docs {net.hub_url}/docs)\n"
                          f"  dashboard {net.hub_url}/dashboard (log in as {net.researcher} / {net.password})\n"
                          f"  NORDFED_HOME={wd / 'cli-home'} nordfed login --hub {net.hub_url} "
                          f"--username {net.researcher} --password {net.password}\n"
                          f"  (new keys must be pinned in nodes/*/node.yaml; or use the demo researcher's home: "
                          f"NORDFED_HOME={wd / 'client-home'})\n"
                          f"  collaboration id {net.collaboration_id}; logs in {wd / 'logs'}; Ctrl-C stops everything")
            net.client.save_state()
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        console.print("interrupted; stopping the network")
    except Exception as exc:
        console.print(f"[red]demo failed:[/red] {exc} (logs in {wd / 'logs'})")
        own_dir = False  # keep the logs
        raise typer.Exit(1) from None
    finally:
        net.stop()
        signal.signal(signal.SIGTERM, old)
        if own_dir:
            shutil.rmtree(wd, ignore_errors=True)


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.command("demo")(demo)
