"""Benchmark: long-poll dispatch latency of the hub with many parked nodes.

A hub runs as a real `nordfed hub start` subprocess; ``--nodes`` simulated nodes (async httpx in this process) park
on ``GET /api/runs/next`` and complete each run at once. Measured from just before ``POST /api/tasks`` to the
moment the node's long poll returns the run:

- single: a task to one node while all the others stay parked (``--rounds`` times);
- fanout: one task to every node (``--fanout`` times), latency per node;
- round trip: POST task → node gets it → PATCH completed → ``/wait`` returns, for the single tasks.

Reference within the run: the p50 of ``GET /api/health`` (the HTTP floor on this machine). Prints one JSON object
and a one-line summary. Targets: dispatch p99 ≤ 100 ms with 200 nodes on PostgreSQL.

    .venv/bin/python bench/hub_dispatch.py [--db postgresql://127.0.0.1:5432/test] [--nodes 200] [--rounds 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from nordfed.hub.server import free_port

ROOT_PASSWORD = "bench-root-password"
PASSWORD = "bench-password-1"
INPUT = "QUFBQQ=="


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux), a load-independent cost measure."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_hub(db: str, port: int, log) -> subprocess.Popen:
    cli = "from nordfed.cli import app; app()"
    cmd = [sys.executable, "-c", cli, "hub", "start", "--db", db, "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(
        cmd, env={**os.environ, "NORDFED_HUB_ROOT_PASSWORD": ROOT_PASSWORD}, stdout=log, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("hub exited during start")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit("hub did not start")


def setup(base: str, n_nodes: int) -> tuple[str, int, list[tuple[int, str]]]:
    """Organization, collaboration, researcher and ``n_nodes`` nodes; returns researcher token, collab, node tokens."""
    http = httpx.Client(base_url=base, timeout=60)
    root = http.post("/token", json={"username": "root", "password": ROOT_PASSWORD}).json()["access_token"]
    h = {"Authorization": f"Bearer {root}"}
    org = http.post("/organizations", json={"name": "Bench", "country": "NO"}, headers=h).json()["id"]
    collab = http.post("/collaborations", json={"name": "bench", "organization_ids": [org]}, headers=h).json()["id"]
    http.post(
        "/users",
        headers=h,
        json={"username": "res", "password": PASSWORD, "organization_id": org, "roles": ["researcher"]},
    )
    researcher = http.post("/token", json={"username": "res", "password": PASSWORD}).json()["access_token"]

    def node(i: int) -> tuple[int, str]:
        body = {"name": f"node{i}", "organization_id": org, "collaboration_id": collab}
        created = http.post("/nodes", json=body, headers=h).json()
        return created["id"], http.post("/token/node", json={"api_key": created["api_key"]}).json()["access_token"]

    with ThreadPoolExecutor(4) as pool:
        nodes = list(pool.map(node, range(n_nodes)))
    return researcher, collab, nodes


async def run_bench(
    base: str, researcher: str, collab: int, nodes: list[tuple[int, str]], rounds: int, fanout: int, hub_pid: int
) -> dict:
    # One keep-alive client per simulated node, like real nodes: a single pool of hundreds of connections costs
    # httpcore time quadratic in the number of concurrent requests, which would be measured as dispatch latency.
    client = httpx.AsyncClient(base_url=base, timeout=60)
    node_clients = {i: httpx.AsyncClient(base_url=base, timeout=60) for i, _ in nodes}
    received: dict[int, dict[int, float]] = {}
    arrived: dict[int, asyncio.Event] = {}
    expected: dict[int, int] = {}
    stop = asyncio.Event()
    errors: list[int] = []

    async def node_loop(node_id: int, token: str) -> None:
        h = {"Authorization": f"Bearer {token}"}
        own = node_clients[node_id]
        while not stop.is_set():
            try:
                r = await own.get("/runs/next", params={"timeout": 20}, headers=h)
            except httpx.TransportError:  # like a real node: reconnect and poll again
                errors.append(node_id)
                continue
            if r.status_code != 200:
                continue
            now = time.perf_counter()
            run = r.json()
            got = received.setdefault(run["task_id"], {})
            got[node_id] = now
            if len(got) >= expected.get(run["task_id"], 1):
                arrived.setdefault(run["task_id"], asyncio.Event()).set()
            patch = {"status": "completed", "result": INPUT}
            for _ in range(3):
                try:
                    await own.patch(f"/runs/{run['run_id']}", json=patch, headers=h)
                    break
                except httpx.TransportError:
                    errors.append(node_id)

    pollers = [asyncio.create_task(node_loop(i, t)) for i, t in nodes]
    await asyncio.sleep(2.0)  # every node parked
    rh = {"Authorization": f"Bearer {researcher}"}

    health = []
    for _ in range(50):
        t0 = time.perf_counter()
        await client.get("/health")
        health.append(time.perf_counter() - t0)

    async def task_to(targets: list[int]) -> tuple[int, float]:
        body = {
            "collaboration_id": collab,
            "algorithm": "bench",
            "version": "1",
            "code_hash": "h",
            "runs": [{"node_id": n, "input": INPUT} for n in targets],
        }
        t0 = time.perf_counter()
        r = await client.post("/tasks", json=body, headers=rh)
        r.raise_for_status()
        task_id = r.json()["id"]
        expected[task_id] = len(targets)
        event = arrived.setdefault(task_id, asyncio.Event())
        if len(received.get(task_id, {})) >= len(targets):
            event.set()
        await asyncio.wait_for(event.wait(), 60)
        return task_id, t0

    single, round_trip = [], []
    cpu0 = cpu_seconds(hub_pid)
    for _ in range(rounds):
        node_id = random.choice(nodes)[0]
        task_id, t0 = await task_to([node_id])
        single.append(received[task_id][node_id] - t0)
        waited = await client.get(f"/tasks/{task_id}/wait", params={"timeout": 30}, headers=rh)
        assert waited.json()["status"] == "completed", waited.text
        round_trip.append(time.perf_counter() - t0)
        await asyncio.sleep(0.05)
    cpu_single = (cpu_seconds(hub_pid) - cpu0) / max(rounds, 1)
    cpu0, own0 = cpu_seconds(hub_pid), time.process_time()
    fan = []
    for _ in range(fanout):
        task_id, t0 = await task_to([n for n, _ in nodes])
        fan.extend(t - t0 for t in received[task_id].values())
        await client.get(f"/tasks/{task_id}/wait", params={"timeout": 60}, headers=rh)
        await asyncio.sleep(0.5)
    cpu_fan = (cpu_seconds(hub_pid) - cpu0) / max(fanout * len(nodes), 1)
    # the simulated nodes share this process and the machine's cores with the hub: their cost is part of the picture
    own_fan = (time.process_time() - own0) / max(fanout * len(nodes), 1)
    stop.set()
    for p in pollers:
        p.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)
    await client.aclose()
    for c in node_clients.values():
        await c.aclose()
    return {
        "health_p50_ms": pct(health, 50),
        "single_dispatch_ms": {"p50": pct(single, 50), "p99": pct(single, 99), "max": max(single) * 1000},
        "single_round_trip_ms": {"p50": pct(round_trip, 50), "p99": pct(round_trip, 99)},
        "fanout_dispatch_ms": {"p50": pct(fan, 50), "p99": pct(fan, 99), "max": max(fan) * 1000} if fan else None,
        "client_transport_errors": len(errors),
        "hub_cpu_ms_per_single_round_trip": cpu_single * 1000,
        "hub_cpu_ms_per_fanout_run": cpu_fan * 1000,
        "sim_nodes_cpu_ms_per_fanout_run": own_fan * 1000,
        "load_avg_1m": os.getloadavg()[0],
        "single_p50_over_health_p50": statistics.median(single) / statistics.median(health),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=None, help="hub database URL (default: a temporary SQLite file)")
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=50, help="single-node tasks")
    ap.add_argument("--fanout", type=int, default=5, help="tasks to every node")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="hub-bench-")
    schema = None
    db = args.db or f"sqlite:///{tmp}/hub.sqlite"
    if db.startswith("postgres"):
        schema = f"hub_bench_{uuid.uuid4().hex[:8]}"
        db = f"{db}{'&' if '?' in db else '?'}schema={schema}"
    port = free_port()
    with open(f"{tmp}/hub.log", "wb") as log:
        proc = start_hub(db, port, log)
        try:
            base = f"http://127.0.0.1:{port}/api"
            t0 = time.perf_counter()
            researcher, collab, nodes = setup(base, args.nodes)
            setup_s = time.perf_counter() - t0
            result = asyncio.run(run_bench(base, researcher, collab, nodes, args.rounds, args.fanout, proc.pid))
        finally:
            proc.terminate()
            proc.wait(15)
            if schema:
                import psycopg

                with psycopg.connect(args.db.split("?")[0], autocommit=True) as con:
                    con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    dialect = "postgresql" if schema else "sqlite"
    out = {
        "bench": "hub_dispatch",
        "db": dialect,
        "nodes": args.nodes,
        "rounds": args.rounds,
        "fanout_rounds": args.fanout,
        "setup_s": round(setup_s, 1),
        **result,
    }
    print(json.dumps(out, indent=2))
    s, f = result["single_dispatch_ms"], result["fanout_dispatch_ms"] or {"p50": float("nan"), "p99": float("nan")}
    print(
        f"hub dispatch, {args.nodes} parked nodes on {dialect}: single p50 {s['p50']:.1f} ms p99 {s['p99']:.1f} ms"
        f" ({result['single_p50_over_health_p50']:.1f}x health p50 {result['health_p50_ms']:.1f} ms); "
        f"fan-out to all p50 {f['p50']:.1f} ms p99 {f['p99']:.1f} ms; hub CPU per single round trip "
        f"{result['hub_cpu_ms_per_single_round_trip']:.1f} ms, "
        f"per fanned-out run {result['hub_cpu_ms_per_fanout_run']:.1f} ms (simulated nodes "
        f"{result['sim_nodes_cpu_ms_per_fanout_run']:.1f} ms); load {result['load_avg_1m']:.1f}"
    )


if __name__ == "__main__":
    main()
