"""A whole network on one machine: a hub (uvicorn subprocess on a free loopback port) and one node process per
site, provisioned through the hub API. Used by ``nordfed demo``, the network tests and bench/roundtrip.py.

Every child process is started with a parent-death signal and stopped in :meth:`LocalNetwork.stop`, so
nothing is left behind on errors, Ctrl-C or a killed parent.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from nordfed.client.api import Client
from nordfed.fed.protocol import algorithms, get_algorithm
from nordfed.policy.node import NodeConfig, NodePolicy, write_node_config

CLI = "from nordfed.cli import main; main()"
COUNTRIES = {"DK": "DK", "NO": "NO", "SE": "SE", "FI": "FI", "IS": "IS", "EE": "EE"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def tiny_cdm(url: str, n_persons: int, seed: int = 0) -> str:
    """A minimal CDM (person table only) for tests and the demo when no synthetic generator is available."""
    from nordfed.omop.store import open_cdm

    rng = np.random.default_rng(seed)
    cdm = open_cdm(url, create=True)
    try:
        cdm.insert("person", pd.DataFrame({
            "person_id": np.arange(1, n_persons + 1),
            "gender_concept_id": rng.choice([8507, 8532], size=n_persons),
            "year_of_birth": rng.integers(1930, 2005, size=n_persons),
            "race_concept_id": 0, "ethnicity_concept_id": 0}))
    finally:
        cdm.close()
    return url


def tiny_sites(workdir: Path, persons: Mapping[str, int]) -> dict[str, str]:
    """One :func:`tiny_cdm` DuckDB file per site in ``workdir`` (site → persons): site → CDM URL."""
    return {s: tiny_cdm(f"duckdb:///{workdir / f'{s}.duckdb'}", n, seed=i) for i, (s, n) in enumerate(persons.items())}


@dataclass
class NodeHandle:
    name: str
    id: int
    organization_id: int
    config_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None


@dataclass
class LocalNetwork:
    """Hub + nodes on loopback. ``sites`` maps node name → CDM URL (None: the node serves only ``tables``)."""

    workdir: Path
    sites: Mapping[str, str | None]
    hub_db: str | None = None
    researcher: str = "alice"
    #: algorithms pinned by every node (default: every registered algorithm)
    pinned: Sequence[str] | None = None
    #: last word on each node's policy: f(site, policy dict) -> policy dict
    policy_hook: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None
    poll_timeout_s: float = 30.0
    #: plain tables per node: site → {table name: CSV/Parquet path} (node.yaml ``tables``)
    tables: Mapping[str, Mapping[str, str | Path]] = field(default_factory=dict)
    hub_url: str = ""
    root_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    nodes: dict[str, NodeHandle] = field(default_factory=dict)
    collaboration_id: int = 0
    research_org_id: int = 0
    hub_proc: subprocess.Popen[bytes] | None = None
    client: Client | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir)
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        if self.hub_db is None:
            self.hub_db = f"sqlite:///{self.workdir / 'hub.sqlite'}"

    # ------------------------------------------------------------------ processes
    def _spawn(self, args: list[str], log_path: Path, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(log_path, "ab")  # noqa: SIM115 - handed to the child; closed when we stop it
        try:
            return subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                    start_new_session=True, preexec_fn=_die_with_parent)
        finally:
            log.close()

    def spawn_hub(self) -> None:
        """Start the hub process without waiting for it (see :meth:`wait_hub`)."""
        port = free_port()
        self.hub_url = f"http://127.0.0.1:{port}"
        self.hub_proc = self._spawn(["hub", "start", "--db", str(self.hub_db), "--port", str(port),
                                     "--log-level", "warning"], self.workdir / "logs" / "hub.log",
                                    env={"NORDFED_HUB_ROOT_PASSWORD": self.root_password})

    def wait_hub(self, timeout: float = 60.0) -> None:
        assert self.hub_proc is not None
        log = self.workdir / "logs" / "hub.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.hub_proc.poll() is not None:
                raise RuntimeError(f"hub exited with {self.hub_proc.returncode}; see {log}")
            try:
                if httpx.get(f"{self.hub_url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"hub did not answer within {timeout:g} s; see {log}")

    def start_node(self, name: str) -> None:
        h = self.nodes[name]
        h.proc = self._spawn(["node", "start", "--config", str(h.config_path)], h.log_path)

    def kill_node(self, name: str, sig: int = signal.SIGKILL) -> None:
        h = self.nodes[name]
        if h.proc is not None and h.proc.poll() is None:
            h.proc.send_signal(sig)
            h.proc.wait(timeout=10)
        h.proc = None

    def _stop_proc(self, proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        """Stop nodes first (they hold CDM connections), then the hub."""
        for h in self.nodes.values():
            if h.proc is not None and h.proc.poll() is None:
                h.proc.terminate()
        for h in self.nodes.values():
            self._stop_proc(h.proc)
            h.proc = None
        self._stop_proc(self.hub_proc)
        self.hub_proc = None
        if self.client is not None:
            self.client.close()

    def __enter__(self) -> LocalNetwork:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ provisioning
    def root(self) -> Client:
        return Client(self.hub_url, home=self.workdir / "root-home").login("root", self.root_password)

    def start(self, progress: Callable[[str], None] | None = None) -> None:
        say = progress or (lambda _msg: None)
        if self.hub_proc is None:
            say("starting hub")
            self.spawn_hub()
        self.wait_hub()
        say("provisioning organizations, users, collaboration and nodes")
        self.provision()
        say(f"starting {len(self.nodes)} nodes")
        for name in self.nodes:
            self.start_node(name)
        self.wait_nodes_online()

    def provision(self) -> None:
        root = self.root()
        org_ids: dict[str, int] = {}
        for site in self.sites:
            org = root.request("POST", "/api/organizations",
                               json={"name": f"{site} hospital", "country": COUNTRIES.get(site[:2], "--")})
            org_ids[site] = org["id"]
        self.research_org_id = root.request("POST", "/api/organizations",
                                            json={"name": "Nordic research group", "country": "--"})["id"]
        root.request("POST", "/api/users", json={"username": self.researcher, "password": self.password,
                                                 "organization_id": self.research_org_id, "roles": ["researcher"]})
        collab = root.request("POST", "/api/collaborations", json={
            "name": "Nordic study", "organization_ids": [self.research_org_id, *org_ids.values()]})
        self.collaboration_id = collab["id"]
        self.client = Client(self.hub_url, home=self.workdir / "client-home").login(self.researcher, self.password)
        me = self.client.ensure_keys()
        names = list(self.pinned) if self.pinned is not None else sorted(algorithms())
        pins = [{"name": n, "version": get_algorithm(n).version, "code_hash": get_algorithm(n).code_hash}
                for n in names]
        for site, cdm_url in self.sites.items():
            reg = root.request("POST", "/api/nodes", json={"name": site, "organization_id": org_ids[site],
                                                           "collaboration_id": self.collaboration_id})
            node_dir = self.workdir / "nodes" / site
            node_dir.mkdir(parents=True, exist_ok=True)
            policy: dict[str, Any] = {
                "collaborations": [self.collaboration_id], "organizations": [self.research_org_id],
                "researchers": [{"username": self.researcher, "signing_key": me.signing_public,
                                 "organization_id": self.research_org_id}],
                "algorithms": pins, "min_cell_count": 10, "time_limit_s": 60, "memory_limit_mb": 4096}
            if self.policy_hook is not None:
                policy = self.policy_hook(site, policy)
            tables = {name: Path(path).resolve() for name, path in self.tables.get(site, {}).items()}
            cfg = NodeConfig(hub_url=self.hub_url, api_key=reg["api_key"], name=site, cdm_url=cdm_url,
                             tables=tables, key_dir=node_dir / "keys", poll_timeout_s=self.poll_timeout_s,
                             policy=NodePolicy.model_validate(policy))
            write_node_config(node_dir / "node.yaml", cfg)
            self.nodes[site] = NodeHandle(site, reg["id"], org_ids[site], node_dir / "node.yaml",
                                          self.workdir / "logs" / f"node-{site}.log")
        root.close()

    def wait_nodes_online(self, timeout: float = 60.0, names: Sequence[str] | None = None) -> None:
        """Wait until the nodes published their keys and are long-polling."""
        assert self.client is not None
        want = set(names or self.nodes)
        deadline = time.monotonic() + timeout
        while True:
            for n in want:
                p = self.nodes[n].proc
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"node {n} exited with {p.returncode}; see {self.nodes[n].log_path}")
            nodes = self.client.request("GET", f"/api/collaborations/{self.collaboration_id}/nodes")
            ready = {n["name"] for n in nodes if n.get("signing_key") and n.get("status") == "online"}
            if want <= ready:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"nodes {sorted(want - ready)} did not come online within {timeout:g} s")
            time.sleep(0.1)
