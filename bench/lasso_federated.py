"""Federated LASSO logistic regression at scale vs the pooled scikit-learn fit: in one process, and with
``--hub`` also through the real network.

Simulates ``--sites`` sites of ``--rows`` rows and ``--cols`` covariates (a quarter continuous, the rest sparse
0/1), fits the federated model with internal standardisation and scikit-learn's saga on the pooled
standardised rows (same objective: C = 1/(n*lambda), unpenalised intercept), and prints JSON plus a summary
line per mode: wall-time ratio federated / pooled (target <= 3) and the largest coefficient gap (target
<= 1e-5).

``--hub`` writes each site's rows to Parquet, starts a hub and one node process per site on loopback (each
node serves its file as its ``default`` table, no CDM), and fits through :class:`HubFederation`. Its wall
time counts every round trip (encrypt, hub, node poll, run, sign, post, decrypt) and the nodes' first read
of their Parquet file; starting the network and warming the node workers (one ping) are reported apart.

    .venv/bin/python bench/lasso_federated.py [--rows 100000 --cols 200 --sites 3 --lam 0.002 --threads 1]
    .venv/bin/python bench/lasso_federated.py --hub [--rows 10000 for a quick run]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from nordfed.fed.lasso import LassoFit, fit_lasso
from nordfed.fed.protocol import InProcessFederation


def simulate(rows: int, cols: int, sites: int, seed: int = 0) -> tuple[dict[str, pd.DataFrame], list[str]]:
    rng = np.random.default_rng(seed)
    n_cont = cols // 4
    names = [f"c{j}" for j in range(n_cont)] + [f"b{j}" for j in range(cols - n_cont)]
    rates = rng.uniform(0.01, 0.3, cols - n_cont)
    effects = np.zeros(cols)
    effects[rng.choice(cols, 20, replace=False)] = rng.normal(0, 0.5, 20)
    frames = {}
    for s in range(sites):
        x = np.empty((rows, cols))
        x[:, :n_cont] = rng.normal(size=(rows, n_cont))
        x[:, n_cont:] = rng.random((rows, cols - n_cont)) < rates
        eta = -1.0 + 0.1 * s + x @ effects
        df = pd.DataFrame(x, columns=names)
        df["y"] = (rng.random(rows) < 1 / (1 + np.exp(-eta))).astype(float)
        frames[f"site{s}"] = df
    return frames, names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows per site")
    ap.add_argument("--cols", type=int, default=200)
    ap.add_argument("--sites", type=int, default=3)
    ap.add_argument("--lam", type=float, default=0.002)
    ap.add_argument("--sk-tol", type=float, default=1e-10, help="saga tolerance of the pooled reference")
    ap.add_argument("--threads", type=int, default=1,
                    help="BLAS threads for every fit and node (1 avoids oversubscription on a shared machine)")
    ap.add_argument("--hub", action="store_true",
                    help="also fit through a real hub and one node process per site serving Parquet tables")
    ap.add_argument("--workdir", type=Path, default=None, help="for --hub: keep Parquet files, configs and logs here")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # inherited by the node processes
        os.environ[var] = str(args.threads)
    with threadpool_limits(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    load_start = [round(v, 2) for v in os.getloadavg()]  # the machine is shared: say how busy it was
    frames, names = simulate(args.rows, args.cols, args.sites)
    fed = InProcessFederation.from_frames(frames)

    t0 = time.perf_counter()
    fit = fit_lasso(fed, names, "y", lam=args.lam)
    t_fed = time.perf_counter() - t0

    t0 = time.perf_counter()
    pooled = pd.concat(frames.values(), ignore_index=True)
    x, y = pooled[names].to_numpy(), pooled["y"].to_numpy()
    mu, sd = x.mean(0), x.std(0)
    ref = LogisticRegression(C=1 / (len(y) * args.lam), l1_ratio=1.0, solver="saga", tol=args.sk_tol,
                             max_iter=10_000).fit((x - mu) / sd, y)
    t_sk = time.perf_counter() - t0
    out = {"sites": args.sites, "rows_per_site": args.rows, "covariates": args.cols, "lambda": args.lam,
           "threads": args.threads, "load_average_1_5_15_start": load_start,
           "sklearn_saga_seconds": round(t_sk, 3), "sklearn_n_iter": int(ref.n_iter_[0]),
           "in_process": _compare(fit, t_fed, t_sk, ref, mu, sd)}
    if args.hub:
        out["hub"] = _hub(args, frames, names, t_sk, ref, mu, sd, fit)
    out["load_average_1_5_15_end"] = [round(v, 2) for v in os.getloadavg()]
    print(json.dumps(out, indent=2))
    load = f"load {load_start[0]} → {out['load_average_1_5_15_end'][0]}"
    for mode in ("in_process", "hub") if args.hub else ("in_process",):
        m = out[mode]
        gap = m["max_coef_gap_original_scale"]
        ok = "OK" if m["time_ratio"] <= 3 and gap <= 1e-5 else "MISS"
        print(f"lasso_federated[{mode}]: {ok} time ratio {m['time_ratio']:.2f} (target <= 3; "
              f"{m['federated_seconds']:.1f} s vs sklearn {t_sk:.1f} s), coefficient gap {gap:.2e} (target <= 1e-5), "
              f"{m['rounds']} rounds, {m['nonzero']} non-zero of {args.cols}, {load}")


def _compare(fit: LassoFit, seconds: float, t_sk: float, ref: LogisticRegression, mu: np.ndarray,
             sd: np.ndarray) -> dict[str, object]:
    """One federated fit against the pooled reference: time ratio and coefficient gaps."""
    b0, b = fit.original()
    ref_b = ref.coef_[0] / sd
    ref_b0 = ref.intercept_[0] - ref_b @ mu
    return {"federated_seconds": round(seconds, 3), "time_ratio": round(seconds / t_sk, 3),
            "nonzero": int(np.count_nonzero(b)), "newton_iterations": fit.iterations, "rounds": fit.rounds,
            "kkt_violation": fit.kkt,
            "max_coef_gap_original_scale": float(max(np.max(np.abs(ref_b - b)), abs(ref_b0 - b0))),
            # on the standardised scale (the penalised one)
            "max_coef_gap_standardised": float(np.max(np.abs(ref.coef_[0] - b * sd)))}


def _hub(args: argparse.Namespace, frames: dict[str, pd.DataFrame], names: list[str], t_sk: float,
         ref: LogisticRegression, mu: np.ndarray, sd: np.ndarray, in_process: LassoFit) -> dict[str, object]:
    """The same fit through a real hub and one node process per site, each serving its rows as Parquet."""
    from nordfed.client import HubFederation
    from nordfed.node.localnet import LocalNetwork

    with tempfile.TemporaryDirectory(prefix="nordfed-lasso-") as tmp:
        wd = args.workdir or Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tables = {}
        for site, frame in frames.items():
            frame.to_parquet(wd / f"{site}.parquet")
            tables[site] = {"default": wd / f"{site}.parquet"}
        t_write = time.perf_counter() - t0

        def limits(_site: str, policy: dict[str, object]) -> dict[str, object]:
            # a round at 100k × 200 takes seconds on a loaded machine; the data alone is ~160 MB per site
            return policy | {"time_limit_s": 600, "memory_limit_mb": 8192}

        pinned = ["nordfed.ping", "nordfed.lasso.moments", "nordfed.lasso.newton"]
        net = LocalNetwork(wd, dict.fromkeys(frames), tables=tables, pinned=pinned, policy_hook=limits)
        t0 = time.perf_counter()
        with net:
            t_net = time.perf_counter() - t0
            assert net.client is not None
            hub_fed = HubFederation(net.client, net.collaboration_id, timeout=1800)
            # a standing node's worker is warm (imports done); wait for that here, not in the first round
            t0 = time.perf_counter()
            hub_fed.run("nordfed.ping", {})
            t_warm = time.perf_counter() - t0
            t0 = time.perf_counter()
            fit = fit_lasso(hub_fed, names, "y", lam=args.lam)
            t_hub = time.perf_counter() - t0
            site_order = hub_fed.sites
    res = _compare(fit, t_hub, t_sk, ref, mu, sd)
    res.update({"parquet_write_seconds": round(t_write, 3), "network_start_seconds": round(t_net, 3),
                "worker_warmup_seconds": round(t_warm, 3),
                "site_order": site_order,
                "max_coef_gap_vs_in_process": float(np.max(np.abs(fit.betas - in_process.betas)))})
    return res


if __name__ == "__main__":
    main()
