"""Benchmark: data-quality checks, one query per table (as ``run_checks`` runs them) against one query per check
(as DataQualityDashboard runs them), on DuckDB and, with ``--postgres``, on PostgreSQL, on the same synthetic site.

Both ways use the same checks (:func:`nordfed.omop.dq.applicable_checks`), so the counts must agree check by
check; the times are the best of ``--repeat`` alternating runs. The PostgreSQL site is
the schema ``nf_bench_dq_<persons>_<seed>`` (written once, kept for reruns). Prints JSON and a summary line.

    .venv/bin/python bench/dq.py --persons 100000 --postgres postgresql://127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from nordfed.omop import dq
from nordfed.omop.store import CDM, CDMError, open_cdm


def per_check(cdm: CDM, checks: list[dq.Check]) -> list[tuple[int, int]]:
    """Every check's (rows, failing) by a query of its own, its conditions in WHERE as DQD writes them (a
    per-concept check filters its concept, so an index on the concept column can serve it)."""
    out = []
    for c in checks:
        where = c.where if c.per_concept is None else f'{c.where} AND t."{c.per_concept}" = {c.concept_id}'
        joins = "".join(f" {j}" for j in c.joins)
        r = cdm.query(f'SELECT count(*) AS n, sum(CASE WHEN {c.fail} THEN 1 ELSE 0 END) AS f '
                      f'FROM "{c.table}" t{joins} WHERE {where}')
        out.append((int(r["n"].iat[0]), 0 if r["f"].isna().iat[0] else int(r["f"].iat[0])))
    return out


def per_table(cdm: CDM, checks: list[dq.Check]) -> list[tuple[int, int]]:
    got = dq.run_checks(cdm, checks=checks)
    return list(zip(got["n_rows"].astype(int), got["n_fail"].astype(int), strict=True))


def site(url: str, persons: int, seed: int, truth: Path) -> None:
    """The synthetic DK site at ``url``, written unless it holds these persons already (its truth is not used)."""
    from nordfed.synth import write_site

    try:
        with open_cdm(url) as cdm:
            if "person" in cdm.table_names() and cdm.scalar("SELECT count(*) FROM person") == persons:
                return
    except CDMError:
        pass
    write_site("DK", persons, seed, url, truth_path=truth, notes=False)


def measure(url: str, repeat: int) -> dict[str, object]:
    with open_cdm(url) as cdm:
        checks = dq.applicable_checks(cdm)
        best = {"per_table": float("inf"), "per_check": float("inf")}
        counts = {}
        for _ in range(repeat):
            for name, run in (("per_table", per_table), ("per_check", per_check)):
                t = time.perf_counter()
                counts[name] = run(cdm, checks)
                best[name] = min(best[name], time.perf_counter() - t)
    return {"checks": len(checks), "tables": len({c.table for c in checks}),
            "per_table_s": round(best["per_table"], 3), "per_check_s": round(best["per_check"], 3),
            "speedup": round(best["per_check"] / best["per_table"], 2),
            "same_counts": counts["per_table"] == counts["per_check"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--persons", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--postgres", help="PostgreSQL server URL (e.g. postgresql://127.0.0.1:5432/test)")
    args = ap.parse_args()
    out: dict[str, object] = {"persons": args.persons}
    with tempfile.TemporaryDirectory() as tmp:
        duck = f"duckdb:///{Path(tmp) / 'dk.duckdb'}"
        site(duck, args.persons, args.seed, Path(tmp) / "dk.truth.json")
        out["duckdb"] = measure(duck, args.repeat)
        if args.postgres:
            sep = "&" if "?" in args.postgres else "?"
            pg = f"{args.postgres}{sep}schema=nf_bench_dq_{args.persons}_{args.seed}"
            site(pg, args.persons, args.seed, Path(tmp) / "pg.truth.json")
            out["postgres"] = measure(pg, args.repeat)
    print(json.dumps(out, indent=2))
    parts = [f"{k} {v['per_table_s']} s per table vs {v['per_check_s']} s per check ({v['speedup']}x, "
             f"{v['checks']} checks, counts {'equal' if v['same_counts'] else 'DIFFER'})"
             for k, v in out.items() if isinstance(v, dict)]
    print(f"dq: {args.persons} persons: " + "; ".join(parts))
    return 0 if all(v["same_counts"] for v in out.values() if isinstance(v, dict)) else 1


if __name__ == "__main__":
    raise SystemExit(main())
