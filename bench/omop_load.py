"""Benchmark: `nordfed omop load` (every value checked, one transaction) versus DuckDB's own CSV import of the
same files without checks, and validate + DQ on the loaded site.

    .venv/bin/python bench/omop_load.py                     # 20 000 persons from nordfed.synth
    .venv/bin/python bench/omop_load.py --persons 100000

The reference is ``INSERT INTO t SELECT * FROM read_csv(...)`` into a fresh CDM in the same run (DuckDB's
C++ reader, no row-level diagnostics). Prints one JSON document and a summary line with the time ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from nordfed.omop import dq
from nordfed.omop.loader import load_folder
from nordfed.omop.schema import schema
from nordfed.omop.store import open_cdm
from nordfed.omop.validate import validate
from nordfed.synth import generate

CLINICAL = ("person", "observation_period", "visit_occurrence", "condition_occurrence", "drug_exposure",
            "procedure_occurrence", "measurement", "observation", "death")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--persons", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    out: dict = {"persons": args.persons}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        csv_dir = root / "csv"
        csv_dir.mkdir()
        site = generate("SE", args.persons, args.seed, notes=False)
        rows = 0
        for name in CLINICAL:
            df = site.tables[name]
            df.to_csv(csv_dir / f"{name.upper()}.csv", index=False)
            rows += len(df)
        out["rows"] = rows
        out["csv_mb"] = round(sum(p.stat().st_size for p in csv_dir.iterdir()) / 1e6, 1)

        t = time.perf_counter()
        load_folder(csv_dir, f"duckdb:///{root / 'nordfed.duckdb'}")
        out["load_s"] = round(time.perf_counter() - t, 3)

        ref = open_cdm(f"duckdb:///{root / 'ref.duckdb'}", create=True)
        t = time.perf_counter()
        with ref.transaction():
            for name in CLINICAL:
                cols = ", ".join(f'"{c}"' for c in site.tables[name].columns)
                types = ", ".join(f"'{c}': '{schema()[name].field(c).kind.replace('text', 'varchar')}'"
                                  for c in site.tables[name].columns).replace("'float'", "'double'").replace(
                    "'datetime'", "'timestamp'")
                ref.execute(f'INSERT INTO "{name}" ({cols}) SELECT {cols} FROM read_csv('
                            f"'{csv_dir / (name.upper() + '.csv')}', header = true, columns = {{{types}}})")
        out["reference_load_s"] = round(time.perf_counter() - t, 3)
        ref.close()

        cdm = open_cdm(f"duckdb:///{root / 'nordfed.duckdb'}")
        t = time.perf_counter()
        report = validate(cdm)
        out["validate_s"] = round(time.perf_counter() - t, 3)
        out["validate_findings"] = len(report.findings)
        t = time.perf_counter()
        res = dq.run_checks(cdm)
        out["dq_s"] = round(time.perf_counter() - t, 3)
        out["dq_checks"] = len(res)
        out["dq_failing"] = int((res["status"] == "fail").sum())
    out["load_ratio_vs_reference"] = round(out["load_s"] / out["reference_load_s"], 2)
    out["rows_per_s"] = round(out["rows"] / out["load_s"])
    json.dump(out, sys.stdout, indent=2)
    print(f"\nomop load: {out['rows']:,} rows in {out['load_s']} s ({out['rows_per_s']:,} rows/s), "
          f"{out['load_ratio_vs_reference']}× DuckDB read_csv; validate {out['validate_s']} s, "
          f"dq {out['dq_s']} s ({out['dq_checks']} checks)")


if __name__ == "__main__":
    main()
