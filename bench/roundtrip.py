"""Round-trip and dispatch latency of the network on loopback.

1. Round trip: a trivial task (``nordfed.ping``) to 3 real node processes through a real hub (SQLite), measured
   at the researcher (create → long-poll wait → fetch → verify → decrypt). Target p50 ≤ 20 ms, p99 ≤ 100 ms.
2. Transport: the same run update sent over HTTP (PATCH) and over the node channel; wall and hub CPU per update.
3. Dispatch: a PostgreSQL-backed hub with 200 simulated nodes (asyncio clients in this process, not 200 processes)
   waiting for runs on their WebSocket channels as real nodes do (``--transport http``: long-polling
   ``/api/runs/next``); dispatch latency = task created → run received by the node.

Prints JSON, then one summary line. Bounded loops, loopback only.

    .venv/bin/python bench/roundtrip.py [--tasks 200] [--nodes 200] [--dispatch-tasks 10] [--pg postgresql://…]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from websockets.asyncio.client import connect as ws_connect

from nordfed.client import HubFederation
from nordfed.node.localnet import LocalNetwork, tiny_cdm
from nordfed.privacy.crypto import Identity


def _pct(xs: list[float]) -> dict[str, Any]:
    a = np.asarray(xs) * 1000
    return {"n": len(xs), "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p99_ms": round(float(np.percentile(a, 99)), 2), "max_ms": round(float(a.max()), 2)}


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def roundtrip(n_tasks: int, workdir: Path) -> dict[str, Any]:
    sites = {s: tiny_cdm(f"duckdb:///{workdir / f'{s}.duckdb'}", 30, seed=i) for i, s in enumerate(("DK", "NO", "SE"))}
    with LocalNetwork(workdir / "rt", sites, pinned=["nordfed.ping"]) as net:
        assert net.client is not None and net.hub_proc is not None
        fed = HubFederation(net.client, net.collaboration_id, timeout=30)
        for i in range(10):  # warm-up: connections, caches
            fed.run("nordfed.ping", {"echo": i})
        # CPU per task of the hub and of the node processes (without their worker subprocesses), as a reason for
        # the latency: on 2 cores, the hub's share is mostly on the critical path
        pids = {"hub": [net.hub_proc.pid], "nodes": [n.proc.pid for n in net.nodes.values() if n.proc is not None]}
        before = {k: sum(map(_cpu_s, v)) for k, v in pids.items()}
        times = []
        for i in range(n_tasks):
            t0 = time.perf_counter()
            out = fed.run("nordfed.ping", {"echo": i})
            times.append(time.perf_counter() - t0)
            assert all(r["echo"] == i for r in out.values())
        cpu = {f"{k}_cpu_ms_per_task": round((sum(map(_cpu_s, v)) - before[k]) / n_tasks * 1000, 2)
               for k, v in pids.items()}
    return {**_pct(times), **cpu}


async def _dispatch(hub_url: str, root_password: str, n_nodes: int, n_tasks: int, transport: str) -> dict[str, Any]:
    # One keep-alive client per simulated node, like real nodes: one pool of hundreds of connections costs httpcore
    # time quadratic in the concurrent requests, which this process would then report as dispatch latency.
    own: dict[str, httpx.AsyncClient] = {}
    async with httpx.AsyncClient(base_url=hub_url, timeout=60) as http:
        async def call(method: str, path: str, token: str | None = None, **kw) -> httpx.Response:
            client = http
            if token is not None:
                if token not in own:
                    own[token] = httpx.AsyncClient(base_url=hub_url, timeout=60)
                client = own[token]
            r = await client.request(method, path, headers={"Authorization": f"Bearer {token}"} if token else {}, **kw)
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:200]}")
            return r

        root = (await call("POST", "/api/token", json={"username": "root", "password": root_password})).json()
        rt = root["access_token"]
        org = (await call("POST", "/api/organizations", token=rt, json={"name": "Bench", "country": "DK"})).json()
        pw = secrets.token_urlsafe(12)
        await call("POST", "/api/users", token=rt, json={"username": "bench", "password": pw,
                                                         "organization_id": org["id"], "roles": ["researcher"]})
        collab = (await call("POST", "/api/collaborations", token=rt,
                             json={"name": "bench", "organization_ids": [org["id"]]})).json()
        sem = asyncio.Semaphore(8)  # api-key hashing is deliberately slow; do not flood the hub

        async def register(i: int) -> dict:
            async with sem:
                reg = (await call("POST", "/api/nodes", token=rt, json={
                    "name": f"n{i:03d}", "organization_id": org["id"], "collaboration_id": collab["id"]})).json()
                tok = (await call("POST", "/api/token/node", json={"api_key": reg["api_key"]})).json()
                ident = Identity.generate()
                await call("PUT", "/api/nodes/me/keys", token=tok["access_token"], json={
                    "encryption_key": ident.encryption_public, "signing_key": ident.signing_public})
                return {"id": reg["id"], "token": tok["access_token"]}

        nodes = await asyncio.gather(*(register(i) for i in range(n_nodes)))
        user = (await call("POST", "/api/token", json={"username": "bench", "password": pw})).json()["access_token"]
        received: list[tuple[int, float]] = []  # (task id, receipt time)
        created_at: dict[int, float] = {}
        stop = asyncio.Event()
        result_b64 = base64.b64encode(os.urandom(96)).decode()

        errors: list[str] = []
        done: dict[int, int] = {}
        expected: dict[int, int] = {}  # task id → runs
        all_done = asyncio.Event()

        async def channel_poller(node: dict) -> None:
            """A simulated node on its WebSocket channel, as real nodes are."""
            url = hub_url.replace("http://", "ws://") + "/api/runs/channel"
            async with ws_connect(url, additional_headers={"Authorization": f"Bearer {node['token']}"},
                                  compression=None, max_size=None) as ws:
                while not stop.is_set():
                    await ws.send(json.dumps({"op": "next", "timeout": 5}))
                    reply = json.loads(await ws.recv())
                    if reply.get("op") != "run":
                        if reply.get("op") == "error":
                            errors.append(str(reply)[:200])
                        continue
                    run = reply["run"]
                    received.append((run["task_id"], time.perf_counter()))
                    await ws.send(json.dumps({"op": "update", "run_id": run["run_id"], "status": "completed",
                                              "progress": 1.0, "result": result_b64}))
                    ack = json.loads(await ws.recv())
                    if ack.get("op") != "updated":
                        errors.append(str(ack)[:200])
                        continue
                    done[run["task_id"]] = done.get(run["task_id"], 0) + 1
                    if done[run["task_id"]] == expected.get(run["task_id"], len(nodes)):
                        all_done.set()

        async def poller(node: dict) -> None:
            while not stop.is_set():
                try:
                    r = await call("GET", "/api/runs/next", token=node["token"], params={"timeout": 5})
                    if r.status_code == 204:
                        continue
                    now = time.perf_counter()
                    run = r.json()
                    received.append((run["task_id"], now))
                    for attempt in range(3):  # a lost answer must not leave the run active forever
                        try:
                            await call("PATCH", f"/api/runs/{run['run_id']}", token=node["token"],
                                       json={"status": "completed", "progress": 1.0, "result": result_b64})
                            done[run["task_id"]] = done.get(run["task_id"], 0) + 1
                            if done[run["task_id"]] == expected.get(run["task_id"], len(nodes)):
                                all_done.set()
                            break
                        except httpx.HTTPError as exc:
                            errors.append(f"PATCH attempt {attempt + 1}: {type(exc).__name__}: {exc}"[:200])
                except (httpx.HTTPError, RuntimeError) as exc:  # count, back off briefly, keep polling
                    errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(channel_poller(n) if transport == "channel" else poller(n)) for n in nodes]
        await asyncio.sleep(1.0)  # every poller is parked in a long poll
        inp = base64.b64encode(os.urandom(256)).decode()
        rng = random.Random(7)

        async def one_task(targets: list[dict]) -> tuple[int, float]:
            """A task to ``targets``; (task id, seconds until every target completed it)."""
            all_done.clear()
            t0 = time.perf_counter()
            body = {"collaboration_id": collab["id"], "algorithm": "nordfed.ping", "version": "1",
                    "code_hash": "0" * 64, "runs": [{"node_id": n["id"], "input": inp} for n in targets]}
            # the clock starts before the request, so dispatch includes task creation at the hub
            task_id = (await call("POST", "/api/tasks", token=user, json=body)).json()["id"]
            created_at[task_id], expected[task_id] = t0, len(targets)
            if done.get(task_id, 0) < len(targets):  # completion is counted by the simulated nodes
                try:
                    await asyncio.wait_for(all_done.wait(), timeout=180)
                except TimeoutError:
                    raise RuntimeError(f"task {task_id}: not every simulated node completed within 3 min") from None
            took = time.perf_counter() - t0
            w = (await call("GET", f"/api/tasks/{task_id}", token=user)).json()
            assert all(r["status"] == "completed" for r in w["runs"]), "the hub lost a completion"
            return task_id, took

        # a trivial task to 3 of the connected nodes (as the 3-node round trip, with 200 nodes waiting)
        small = [await one_task(rng.sample(nodes, 3)) for _ in range(10 * n_tasks)]
        wall = [(await one_task(nodes))[1] for _ in range(n_tasks)]
        stop.set()
        await asyncio.wait(tasks, timeout=10)
        for t in tasks:
            t.cancel()
        for c in own.values():
            await c.aclose()
        small_ids = {task_id for task_id, _ in small}
        out = {"task_to_3_nodes": _pct([t - created_at[task] for task, t in received if task in small_ids]),
               "task_to_3_nodes_completed": _pct([took for _, took in small]),
               "task_to_all_nodes": _pct([t - created_at[task] for task, t in received
                                          if task in created_at and task not in small_ids])}
        out["poller_errors"] = len(errors)
        if errors:
            out["first_error"] = errors[0]
        out["task_all_nodes_p50_ms"] = round(float(np.percentile(np.asarray(wall) * 1000, 50)), 1)
        return out


def dispatch(pg_base: str, n_nodes: int, n_tasks: int, workdir: Path, transport: str) -> dict[str, Any]:
    import psycopg

    schema = f"nf_bench_{secrets.token_hex(4)}"
    sep = "&" if "?" in pg_base else "?"
    net = LocalNetwork(workdir / "pg", {}, hub_db=f"{pg_base}{sep}schema={schema}")
    try:
        net.spawn_hub()
        net.wait_hub()
        return asyncio.run(_dispatch(net.hub_url, net.root_password, n_nodes, n_tasks, transport))
    finally:
        net.stop()
        with psycopg.connect(pg_base, autocommit=True) as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def update_cost(workdir: Path, n: int, rounds: int = 5) -> dict[str, Any]:
    """One run update (progress + a log line) sent ``n`` times as ``PATCH /api/runs/{id}`` and as a message on the
    node channel, alternately in ``rounds`` blocks: wall time per update at the node and hub CPU per update. Both go
    through the same batched updater, so the difference is the transport."""
    from nordfed.node.channel import HubChannel

    net = LocalNetwork(workdir / "transport", {})
    try:
        net.spawn_hub()
        net.wait_hub()
        assert net.hub_proc is not None
        with httpx.Client(base_url=f"{net.hub_url}/api", timeout=30) as http:
            def call(method: str, path: str, token: str, **kw: Any) -> Any:
                r = http.request(method, path, headers={"Authorization": f"Bearer {token}"}, **kw)
                r.raise_for_status()
                return r.json() if r.content else None

            root = http.post("/token", json={"username": "root", "password": net.root_password}).json()
            rt = root["access_token"]
            org = call("POST", "/organizations", rt, json={"name": "Bench", "country": "DK"})["id"]
            collab = call("POST", "/collaborations", rt, json={"name": "bench", "organization_ids": [org]})["id"]
            reg = call("POST", "/nodes", rt, json={"name": "n", "organization_id": org, "collaboration_id": collab})
            node = http.post("/token/node", json={"api_key": reg["api_key"]}).json()["access_token"]
            call("POST", "/users", rt, json={"username": "r", "password": "bench password 1",
                                              "organization_id": org, "roles": ["researcher"]})
            user = http.post("/token", json={"username": "r", "password": "bench password 1"}).json()["access_token"]
            call("POST", "/tasks", user, json={"collaboration_id": collab, "algorithm": "nordfed.ping", "version": "1",
                                              "code_hash": "0" * 64, "runs": [{"node_id": reg["id"], "input": "AA=="}]})
            channel = HubChannel.open(net.hub_url, node)
            run_id = channel.next(timeout=5)["run_id"]
            body = {"progress": 0.5, "log": "x"}

            def by_http() -> None:
                call("PATCH", f"/runs/{run_id}", node, json=body)

            def by_channel() -> None:
                channel.update(run_id, **body)

            out: dict[str, dict[str, list[float]]] = {"http": {"wall": [], "cpu": []},
                                                      "channel": {"wall": [], "cpu": []}}
            for send in (by_http, by_channel) * 2:  # warm-up
                send()
            for _ in range(rounds):
                for name, send in (("http", by_http), ("channel", by_channel)):
                    cpu0, t0 = _cpu_s(net.hub_proc.pid), time.perf_counter()
                    for _ in range(n):
                        send()
                    out[name]["wall"].append((time.perf_counter() - t0) / n)
                    out[name]["cpu"].append((_cpu_s(net.hub_proc.pid) - cpu0) / n)
            channel.close()
        return {name: {"wall_ms_per_update": round(min(v["wall"]) * 1000, 3),
                       "hub_cpu_ms_per_update": round(float(np.median(v["cpu"])) * 1000, 3)} for name, v in out.items()}
    finally:
        net.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=200, help="round-trip tasks (3 nodes each)")
    ap.add_argument("--nodes", type=int, default=200, help="simulated long-polling nodes")
    ap.add_argument("--dispatch-tasks", type=int, default=10, help="tasks sent to all simulated nodes")
    ap.add_argument("--pg", default=os.environ.get("NORDFED_TEST_POSTGRES_URL", "postgresql://127.0.0.1:5432/test"))
    ap.add_argument("--skip-dispatch", action="store_true")
    ap.add_argument("--skip-transport", action="store_true", help="skip the HTTP vs channel update comparison")
    ap.add_argument("--updates", type=int, default=400, help="run updates per block in the transport comparison")
    ap.add_argument("--transport", choices=("channel", "http"), default="channel",
                    help="simulated nodes on the WebSocket channel (as real nodes) or HTTP long polls")
    args = ap.parse_args()
    wd = Path(tempfile.mkdtemp(prefix="nordfed-bench-"))
    try:
        result = {"roundtrip_3_nodes": roundtrip(args.tasks, wd), "load_avg_1m": os.getloadavg()[0]}
        if not args.skip_transport:
            result["run_update_transport"] = update_cost(wd, args.updates)
        if not args.skip_dispatch:
            result[f"dispatch_{args.nodes}_nodes_pg"] = dispatch(args.pg, args.nodes, args.dispatch_tasks, wd,
                                                                 args.transport)
            result["dispatch_transport"] = args.transport
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    print(json.dumps(result, indent=2))
    rt = result["roundtrip_3_nodes"]
    line = (f"roundtrip 3 nodes: p50 {rt['p50_ms']} ms, p99 {rt['p99_ms']} ms (target 20/100), CPU per task: hub "
            f"{rt['hub_cpu_ms_per_task']} ms, nodes {rt['nodes_cpu_ms_per_task']} ms")
    if "dispatch_" + str(args.nodes) + "_nodes_pg" in result:
        d = result[f"dispatch_{args.nodes}_nodes_pg"]
        few, every = d["task_to_3_nodes"], d["task_to_all_nodes"]
        line += (f"; {args.nodes} nodes on a PostgreSQL hub ({args.transport}): dispatch of a task to 3 of them "
                 f"p50 {few['p50_ms']} / p99 {few['p99_ms']} ms (target p99 100), to all of them "
                 f"p50 {every['p50_ms']} / p99 {every['p99_ms']} ms")
    if "run_update_transport" in result:
        t = result["run_update_transport"]
        line += (f"; one run update: HTTP {t['http']['wall_ms_per_update']} ms "
                 f"(hub CPU {t['http']['hub_cpu_ms_per_update']}), channel {t['channel']['wall_ms_per_update']} ms "
                 f"(hub CPU {t['channel']['hub_cpu_ms_per_update']})")
    line += f"; load {result['load_avg_1m']:.1f}"
    print(line)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
