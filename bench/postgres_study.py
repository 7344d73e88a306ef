"""Benchmark: the CRC prediction study on PostgreSQL against the same study on DuckDB (the same synthetic rows).

Writes (or reuses) 3 synthetic sites twice: DuckDB files and PostgreSQL schemas ``nf_bench_crc_<site>_<persons>``
on the server at ``--postgres`` (default ``$NORDFED_TEST_POSTGRES_URL``, else ``postgresql://127.0.0.1:5432/test``),
runs studies/crc_1y_mortality.yaml in process on each, and reports both wall times, their ratio and whether the
results agree (cohort size, pooled AUROC, the model's coefficients). The PostgreSQL sites use a ``scratch`` schema
for work tables (see README). Prints JSON and a one-line summary.

    .venv/bin/python bench/postgres_study.py --persons 20000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITES = ["DK", "NO", "SE"]


def postgres_sites(base: str, persons: int, seed: int, folder: Path) -> dict[str, str]:
    """site -> PostgreSQL CDM URL, written once per (persons, seed)."""
    from nordfed.omop.store import CDMError, open_cdm
    from nordfed.synth import write_site

    urls = {}
    sep = "&" if "?" in base else "?"
    for site in SITES:
        schema = f"nf_bench_crc_{site.lower()}_{persons}_{seed}"
        url = f"{base}{sep}schema={schema}"
        try:
            with open_cdm(url) as cdm:
                ready = "person" in cdm.table_names() and cdm.scalar("SELECT count(*) FROM person") == persons
        except CDMError:
            ready = False
        if not ready:
            print(f"writing {site} to PostgreSQL schema {schema}", file=sys.stderr)
            with open_cdm(url, create=True) as cdm:
                cdm.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            write_site(site, persons, seed, url, truth_path=folder / f"pg_{site.lower()}.truth.json", notes=False)
        urls[site] = f"{url}&scratch=nf_bench_scratch"
    return urls


def run(doc: dict, sites: dict[str, str]) -> tuple[float, dict]:
    from nordfed.studies.plp import run_plp
    from nordfed.studies.sites import open_sites
    from nordfed.studies.spec import parse_spec

    spec = parse_spec({**doc, "sites": sites}, ROOT / "studies" / "crc_1y_mortality.yaml")
    t0 = time.perf_counter()
    with open_sites(spec) as opened:
        res = run_plp(spec, opened.federation, {})
    return time.perf_counter() - t0, res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--persons", type=int, default=20_000, help="persons per site (default 20000)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--postgres", default=os.environ.get("NORDFED_TEST_POSTGRES_URL")
                    or "postgresql://127.0.0.1:5432/test")
    ap.add_argument("--dir", type=Path, default=ROOT / "bench" / "results" / "pg_crc_sites")
    args = ap.parse_args(argv)

    from nordfed.studies.sites import synthesise
    from nordfed.studies.spec import Synthetic

    args.dir.mkdir(parents=True, exist_ok=True)
    duck = synthesise(Synthetic(sites=SITES, persons=args.persons, seed=args.seed, dir=str(args.dir)), args.dir,
                      progress=lambda m: print(m, file=sys.stderr))
    pg = postgres_sites(args.postgres, args.persons, args.seed, args.dir)
    doc = yaml.safe_load((ROOT / "studies" / "crc_1y_mortality.yaml").read_text())
    doc.pop("synthetic")
    run(doc, duck)  # once to warm compiled kernels and the file cache, as the PostgreSQL server's cache is warm
    t_duck, r_duck = run(doc, duck)
    t_pg, r_pg = run(doc, pg)
    coef_duck, coef_pg = np.array(r_duck["model"]["coef"]), np.array(r_pg["model"]["coef"])
    same = (r_duck["internal"]["n"] == r_pg["internal"]["n"]
            and r_duck["model"]["covariates"] == r_pg["model"]["covariates"]
            and abs(r_duck["internal"]["auroc"] - r_pg["internal"]["auroc"]) < 1e-9)
    out = {
        "persons_per_site": args.persons, "cohort": r_pg["model"]["n"] + r_pg["internal"]["n"],
        "test_n": r_pg["internal"]["n"], "test_events": r_pg["internal"]["n_events"],
        "duckdb_s": round(t_duck, 2), "postgres_s": round(t_pg, 2), "ratio": round(t_pg / t_duck, 2),
        "auroc_duckdb": r_duck["internal"]["auroc"], "auroc_postgres": r_pg["internal"]["auroc"],
        "max_abs_coef_diff": float(np.max(np.abs(coef_duck - coef_pg))) if same and len(coef_pg) else None,
        "same_results": same,
    }
    print(json.dumps(out, indent=2))
    print(f"postgres_study: CRC study on 3 x {args.persons} persons: PostgreSQL {t_pg:.1f} s vs DuckDB {t_duck:.1f} s "
          f"= {out['ratio']}x; results {'identical' if same else 'DIFFER'} (AUROC {out['auroc_postgres']:.4f}, "
          f"max coefficient difference {out['max_abs_coef_diff']})")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
