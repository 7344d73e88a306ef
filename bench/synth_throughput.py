"""Benchmark: `nordfed synth` throughput — generate one site and write it to DuckDB, persons per second.

    .venv/bin/python bench/synth_throughput.py                 # 100k persons (target: under 60 s)
    .venv/bin/python bench/synth_throughput.py --million       # also 1M persons (must work; chunked)
    .venv/bin/python bench/synth_throughput.py --no-notes      # without the clinical notes

Prints one JSON document and a one-line summary. Generation and writing are timed separately (generation
in memory with ``generate``; the streamed ``write_site`` path, as the CLI uses it, for the end-to-end time).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from nordfed.omop.store import open_cdm
from nordfed.synth import generate, write_site

TARGET_SECONDS_100K = 60.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run(site: str, persons: int, seed: int, notes: bool, folder: Path) -> dict:
    t0, c0 = time.perf_counter(), _cpu()
    result = generate(site, persons, seed, notes=notes)
    generate_s, generate_cpu = time.perf_counter() - t0, _cpu() - c0
    rows = sum(len(df) for df in result.tables.values())
    del result
    url = f"duckdb:///{folder / f'{site.lower()}_{persons}.duckdb'}"
    t0, c0 = time.perf_counter(), _cpu()
    write_site(site, persons, seed, url, notes=notes)
    end_to_end_s, end_to_end_cpu = time.perf_counter() - t0, _cpu() - c0
    with open_cdm(url) as cdm:
        written = sum(cdm.row_counts().values())
    return {
        "site": site, "persons": persons, "notes": notes, "rows": rows, "rows_written": written,
        "generate_seconds": round(generate_s, 2), "generate_persons_per_s": round(persons / generate_s),
        "generate_cpu_seconds": round(generate_cpu, 2),
        "generate_and_write_seconds": round(end_to_end_s, 2),
        # CPU time of this process: wall time on a loaded machine overstates the cost
        "generate_and_write_cpu_seconds": round(end_to_end_cpu, 2),
        "persons_per_s": round(persons / end_to_end_s), "rows_per_s": round(written / end_to_end_s),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", default="DK")
    ap.add_argument("--persons", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--million", action="store_true", help="also run 1,000,000 persons")
    # notes are on by default, as in `nordfed synth`, so the headline figure is what a user gets
    ap.add_argument("--notes", action=argparse.BooleanOptionalAction, default=True,
                    help="include clinical notes (default: yes, as nordfed synth does)")
    args = ap.parse_args(argv)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [args.persons] + ([1_000_000] if args.million else [])
        for n in sizes:
            runs.append(run(args.site, n, args.seed, args.notes, Path(tmp)))
    first = runs[0]
    ok = first["persons"] != 100_000 or first["generate_and_write_seconds"] < TARGET_SECONDS_100K
    print(json.dumps({"benchmark": "synth_throughput", "target_100k_seconds": TARGET_SECONDS_100K,
                      "meets_target": ok, "runs": runs}, indent=2))
    for r in runs:
        print(f"synth {r['site']} {r['persons']:,} persons{' with notes' if r['notes'] else ''}: "
              f"generate {r['generate_seconds']:.1f} s, generate+write {r['generate_and_write_seconds']:.1f} s "
              f"({r['generate_and_write_cpu_seconds']:.1f} s CPU) "
              f"({r['persons_per_s']:,} persons/s, {r['rows_written']:,} rows, peak RSS {r['peak_rss_mb']:,} MB)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
