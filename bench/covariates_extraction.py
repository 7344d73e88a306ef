"""Benchmark: covariate extraction on DuckDB relative to one scan of the same rows, with peak RSS.

    .venv/bin/python bench/covariates_extraction.py                      # 20 000 persons from nordfed.synth
    .venv/bin/python bench/covariates_extraction.py --persons 1000000    # the target size (SQL generator)
    .venv/bin/python bench/covariates_extraction.py --persons 1000000 --db /tmp/cdm1m.duckdb  # keep / reuse data

Data: ``nordfed.synth`` up to 50 000 persons (``--source synth`` forces it), otherwise a generator in SQL with
FeatureExtraction-like density (conditions, drugs with an ingredient hierarchy, procedures, measurements) around
each person's index date (700 days before to 100 after). The reference reads the same columns of the same tables
(person_id included) once inside DuckDB (the target's yardstick); also shown: reading the same columns out as
Arrow batches, what any client of the rows pays. All are timed alternately ``--repeat`` times, best of each, by
wall clock and by process CPU time (all threads: DuckDB's in all; the extraction also overlaps its scans with its
compiled loops in a worker thread and builds the matrix rows in two threads). CPU is split into user and system
time: system time is mostly page faults on fresh memory, which vary with the machine far more than the work
does; the median wall times and the load average show how busy the machine was. Prints one JSON document and a
summary line. Targets: extraction ≤ 3× the scan, peak RSS ≤ 2 GB (data generation runs in a child process).
``floor_ratio`` is the best wall ratio the extraction's CPU time allows with every core busy all the time.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nordfed.features.covariates import CovariateSettings, extract_covariates
from nordfed.omop.store import CDM, open_cdm

#: the columns the extraction reads, per table (the scan reads exactly these)
TABLES = {
    "person": "person_id, gender_concept_id, year_of_birth",
    "condition_occurrence": "person_id, condition_concept_id, condition_start_date",
    "drug_exposure": "person_id, drug_concept_id, drug_exposure_start_date, drug_exposure_end_date",
    "procedure_occurrence": "person_id, procedure_concept_id, procedure_date",
    "measurement": "person_id, measurement_id, measurement_concept_id, measurement_date, value_as_number, "
                   "unit_concept_id",
}


def index_date_sql(person_id: str) -> str:
    """Each person's index date, a pure function of the id so a reused database gets the same population;
    the events are generated 700 days before to 100 days after it, as around a real cohort entry."""
    return f"(DATE '2012-01-01' + CAST(hash({person_id}) % 3000 AS INTEGER))"


def generate_sql(cdm: CDM, persons: int, seed: int) -> None:
    """Synthetic CDM rows written by DuckDB itself (fast at a million persons)."""
    con = cdm.raw_connection
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    con.execute(f"""INSERT INTO person (person_id, gender_concept_id, year_of_birth, race_concept_id,
        ethnicity_concept_id) SELECT i, CASE WHEN random() < 0.5 THEN 8507 ELSE 8532 END,
        1930 + CAST(floor(random() * 70) AS INTEGER), 0, 0 FROM range(1, {persons + 1}) t(i)""")
    con.execute("""INSERT INTO observation_period SELECT person_id, person_id, DATE '2005-01-01',
        DATE '2022-12-31', 32817 FROM person""")

    def events(table: str, per: int, cols: str, values: str) -> None:
        con.execute(f"""INSERT INTO {table} ({cols}) SELECT row_number() OVER (), person_id, {values}
            FROM (SELECT p.person_id, {index_date_sql("p.person_id")} + CAST(floor(random() * 800) AS INTEGER) - 700
                  AS day FROM person p, range({per}) r) e""")

    events("condition_occurrence", 10, "condition_occurrence_id, person_id, condition_concept_id, "
           "condition_start_date, condition_type_concept_id", "1000 + CAST(floor(random() * 2000) AS INTEGER), day, 0")
    events("drug_exposure", 5, "drug_exposure_id, person_id, drug_concept_id, drug_exposure_start_date, "
           "drug_exposure_end_date, drug_type_concept_id",
           "50000 + CAST(floor(random() * 1000) AS INTEGER), day, day + 30, 0")
    events("procedure_occurrence", 3, "procedure_occurrence_id, person_id, procedure_concept_id, procedure_date, "
           "procedure_type_concept_id", "20000 + CAST(floor(random() * 500) AS INTEGER), day, 0")
    events("measurement", 8, "measurement_id, person_id, measurement_concept_id, measurement_date, value_as_number, "
           "unit_concept_id, measurement_type_concept_id",
           "30000 + CAST(floor(random() * 50) AS INTEGER), day, random() * 10, 8713, 0")
    # drugs roll up to 200 ingredients (and themselves); ingredients are RxNorm Ingredient concepts
    con.execute("""INSERT INTO concept SELECT 40000 + i, 'ingredient ' || i, 'Drug', 'RxNorm', 'Ingredient', 'S',
        CAST(i AS VARCHAR), DATE '1970-01-01', DATE '2099-12-31', NULL FROM range(200) t(i)""")
    con.execute("""INSERT INTO concept_ancestor SELECT 40000 + (i % 200), 50000 + i, 1, 1 FROM range(1000) t(i)""")


def one_scan_sql() -> str:
    """Read every row and column the extraction touches once (the reference)."""
    parts = [f"SELECT count(*) AS n, sum(hash({cols})) AS h FROM {t}" for t, cols in TABLES.items()]
    return "SELECT sum(n) AS n, sum(h) AS h FROM (" + " UNION ALL ".join(parts) + ") s"


def fetch_rows(cdm: CDM) -> int:
    """Read the same columns of every row out of DuckDB as Arrow batches (what any client reading the rows pays;
    shown beside the target, which is relative to the scan inside DuckDB)."""
    n = 0
    for table, cols in TABLES.items():
        rel = cdm.raw_connection.sql(f"SELECT {cols} FROM {table}")
        reader = rel.to_arrow_reader(1 << 17) if hasattr(rel, "to_arrow_reader") else rel.fetch_arrow_reader(1 << 17)
        n += sum(batch.num_rows for batch in reader)
    return n


def _generate(url: str, source: str, persons: int, seed: int) -> None:
    """Write the bench CDM (run in a child process so its memory does not count in the extraction's peak RSS)."""
    if source == "synth":
        import nordfed.synth as synth

        synth.write(synth.generate("DK", persons, seed), url)
        return
    with open_cdm(url, create=True) as cdm:
        generate_sql(cdm, persons, seed)


def population(cdm: CDM, source: str) -> pd.DataFrame:
    """One index date per person: the generator's (SQL) or a fixed offset into observation (synth)."""
    if source == "sql":
        sql = (f"SELECT person_id AS subject_id, {index_date_sql('person_id')} AS cohort_start_date "
               "FROM person ORDER BY person_id")
    else:
        sql = ("SELECT person_id AS subject_id, max(observation_period_start_date) + 2900 AS "
               "cohort_start_date FROM observation_period GROUP BY person_id ORDER BY person_id")
    pop = cdm.query(sql)
    pop.insert(0, "row_id", np.arange(1, len(pop) + 1, dtype=np.int64))
    return pop


@dataclass
class Timing:
    wall: float
    user: float
    sys: float
    result: Any = None

    def cpu(self) -> float:
        return self.user + self.sys


def timed(run: Callable[[], Any]) -> Timing:
    """Wall clock and process CPU time (user and system, all threads) of one call."""
    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    result = run()
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    return Timing(time.perf_counter() - t0, c1.ru_utime - c0.ru_utime, c1.ru_stime - c0.ru_stime, result)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--persons", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--source", choices=("auto", "sql", "synth"), default="auto")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs (best is reported)")
    ap.add_argument("--db", type=Path, help="keep the generated CDM here and reuse it when it exists")
    args = ap.parse_args(argv)
    source = args.source
    if source == "auto":
        # the synthetic generator is realistic but slow; large runs use the SQL generator
        source = "synth" if importlib.util.find_spec("nordfed.synth") and args.persons <= 50_000 else "sql"
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "bench.duckdb"
        url = f"duckdb:///{path.resolve()}"
        t0 = time.perf_counter()
        if not path.exists():
            child = mp.get_context("spawn").Process(target=_generate, args=(url, source, args.persons, args.seed))
            child.start()
            child.join()
            if child.exitcode:
                raise SystemExit(f"generating {path} failed (exit code {child.exitcode})")
        gen_s = time.perf_counter() - t0
        cdm = open_cdm(url)
        pop = population(cdm, source)
        rows = int(cdm.scalar(one_scan_sql().replace("sum(h) AS h", "0 AS h")))
        load = [round(os.getloadavg()[0], 2)]
        scan: list[Timing] = []
        fetch: list[Timing] = []
        extract: list[Timing] = []
        nnz = ncov = 0
        for _ in range(args.repeat):
            scan.append(timed(lambda: cdm.query(one_scan_sql())))
            fetch.append(timed(lambda: fetch_rows(cdm)))
            extract.append(timed(lambda: extract_covariates(cdm, pop, CovariateSettings())))
            data = extract[-1].result
            nnz, ncov = int(data.matrix.nnz), len(data.covariate_ids)
            extract[-1].result = data = None
        load.append(round(os.getloadavg()[0], 2))
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        best_scan, best_extract = min(scan, key=Timing.cpu), min(extract, key=Timing.cpu)
        wall_scan, wall_extract = min(t.wall for t in scan), min(t.wall for t in extract)
        out = {
            "persons": len(pop), "source": source, "cdm_rows": rows, "generate_s": round(gen_s, 2),
            "scan_s": round(wall_scan, 3), "extract_s": round(wall_extract, 3),
            "ratio": round(wall_extract / wall_scan, 2), "fetch_s": round(min(t.wall for t in fetch), 3),
            "ratio_to_fetch": round(wall_extract / min(t.wall for t in fetch), 2),
            "scan_cpu_s": round(best_scan.cpu(), 3),
            "extract_cpu_s": round(best_extract.cpu(), 3), "cpu_ratio": round(best_extract.cpu() / best_scan.cpu(), 2),
            "scan_user_s": round(best_scan.user, 3), "scan_sys_s": round(best_scan.sys, 3),
            "extract_user_s": round(best_extract.user, 3), "extract_sys_s": round(best_extract.sys, 3),
            "user_ratio": round(best_extract.user / best_scan.user, 2),
            # the best wall ratio the extraction's CPU seconds allow with every core busy all the time: the target
            # is out of reach while this is above it, however well the work is spread over the cores
            "floor_ratio": round(best_extract.cpu() / (os.cpu_count() or 1) / wall_scan, 2),
            "scan_median_s": round(statistics.median(t.wall for t in scan), 3),
            "extract_median_s": round(statistics.median(t.wall for t in extract), 3),
            "nonzeros": nnz, "covariates": ncov, "cpus": os.cpu_count(),
            "duckdb_threads": int(cdm.scalar("SELECT current_setting('threads')")), "load_avg_1m": load,
            "peak_rss_mb": round(peak_mb, 1), "target_ratio": 3.0, "target_rss_mb": 2048,
        }
        cdm.close()
    print(json.dumps(out, indent=2))
    ok = out["ratio"] <= 3.0 and out["peak_rss_mb"] <= 2048
    print(f"covariates_extraction: {out['persons']} persons, {rows} rows: extraction {out['extract_s']} s = "
          f"{out['ratio']}x one scan ({out['scan_s']} s), {out['ratio_to_fetch']}x reading the rows out "
          f"({out['fetch_s']} s); CPU {out['cpu_ratio']}x (user {out['user_ratio']}x), so at best "
          f"{out['floor_ratio']}x on {out['cpus']} cores; "
          f"peak RSS {out['peak_rss_mb']} MB "
          f"[{'OK' if ok else 'ABOVE TARGET'}]")
    return 0


if __name__ == "__main__":
    pd.set_option("mode.copy_on_write", True)
    sys.exit(main())
