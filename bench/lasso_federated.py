"""Federated LASSO logistic regression at scale vs the pooled scikit-learn fit, in one process.

Simulates ``--sites`` sites of ``--rows`` rows and ``--cols`` covariates (a quarter continuous, the rest sparse
0/1), fits the federated model with internal standardisation and scikit-learn's saga on the pooled
standardised rows (same objective: C = 1/(n*lambda), unpenalised intercept), and prints JSON plus a summary:
wall-time ratio federated / pooled (target <= 3) and the largest coefficient gap (target <= 1e-5).

    .venv/bin/python bench/lasso_federated.py [--rows 100000 --cols 200 --sites 3 --lam 0.002 --threads 1]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from nordfed.fed.lasso import fit_lasso
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
                    help="BLAS threads for both fits (1 avoids oversubscription on a shared machine)")
    args = ap.parse_args()
    with threadpool_limits(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    frames, names = simulate(args.rows, args.cols, args.sites)
    fed = InProcessFederation.from_frames(frames)

    t0 = time.perf_counter()
    fit = fit_lasso(fed, names, "y", lam=args.lam)
    t_fed = time.perf_counter() - t0
    b0, b = fit.original()

    t0 = time.perf_counter()
    pooled = pd.concat(frames.values(), ignore_index=True)
    x, y = pooled[names].to_numpy(), pooled["y"].to_numpy()
    mu, sd = x.mean(0), x.std(0)
    ref = LogisticRegression(C=1 / (len(y) * args.lam), l1_ratio=1.0, solver="saga", tol=args.sk_tol,
                             max_iter=10_000).fit((x - mu) / sd, y)
    t_sk = time.perf_counter() - t0
    ref_b = ref.coef_[0] / sd
    ref_b0 = ref.intercept_[0] - ref_b @ mu
    gap_std = float(np.max(np.abs(ref.coef_[0] - b * sd)))  # on the standardised scale (the penalised one)
    gap = float(max(np.max(np.abs(ref_b - b)), abs(ref_b0 - b0)))
    out = {"sites": args.sites, "rows_per_site": args.rows, "covariates": args.cols, "lambda": args.lam,
           "nonzero": int(np.count_nonzero(b)), "federated_seconds": round(t_fed, 3),
           "sklearn_saga_seconds": round(t_sk, 3), "sklearn_n_iter": int(ref.n_iter_[0]),
           "time_ratio": round(t_fed / t_sk, 3), "newton_iterations": fit.iterations, "rounds": fit.rounds,
           "kkt_violation": fit.kkt, "max_coef_gap_original_scale": gap, "max_coef_gap_standardised": gap_std}
    print(json.dumps(out, indent=2))
    ok = "OK" if out["time_ratio"] <= 3 and gap <= 1e-5 else "MISS"
    print(f"lasso_federated: {ok} time ratio {out['time_ratio']:.2f} (target <= 3), coefficient gap {gap:.2e} "
          f"(target <= 1e-5), {fit.rounds} rounds, {out['nonzero']} non-zero of {args.cols}")


if __name__ == "__main__":
    main()
