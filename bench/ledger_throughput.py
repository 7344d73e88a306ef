"""Ledger throughput: append, verify, export and merge against the bare primitives they are built on.

References measured in the same run: a plain SQLite insert per transaction with the same pragmas (for append),
and a bare PyNaCl sign / verify loop over the same bodies (for append and verify). Prints JSON, then one
summary line.

    .venv/bin/python bench/ledger_throughput.py [--entries 5000] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from nordfed.ledger import Ledger
from nordfed.privacy.crypto import Identity


def _payload(i: int) -> dict:
    return {"task_id": i, "algorithm": "nordfed.km@1.0", "code_hash": f"{i:064x}", "result_sha256": f"{i + 1:064x}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=5000)
    ap.add_argument("--dir", type=Path, default=None, help="Where to put the files (default: a temp dir).")
    args = ap.parse_args()
    n = args.entries
    ident = Identity.generate()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        d = Path(d)
        # reference: one plain INSERT per transaction, same journal settings
        con = sqlite3.connect(d / "plain.db", isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, payload TEXT)")
        t0 = time.perf_counter()
        for i in range(n):
            con.execute("BEGIN IMMEDIATE")
            con.execute("INSERT INTO t VALUES (?, ?)", (i + 1, json.dumps(_payload(i))))
            con.execute("COMMIT")
        t_plain = time.perf_counter() - t0
        con.close()

        bodies = [json.dumps(_payload(i), sort_keys=True).encode() for i in range(n)]
        t0 = time.perf_counter()
        signed = [ident.signing_key.sign(b) for b in bodies]
        t_sign = time.perf_counter() - t0
        vk = ident.signing_key.verify_key
        t0 = time.perf_counter()
        for s in signed:
            vk.verify(s)
        t_nacl_verify = time.perf_counter() - t0

        with Ledger.open(d / "node.ledger", ident) as led:
            t0 = time.perf_counter()
            for i in range(n):
                led.append("run_completed", "oslo", _payload(i))
            t_append = time.perf_counter() - t0
            t0 = time.perf_counter()
            rep = led.verify([ident.signing_public])
            t_verify = time.perf_counter() - t0
            assert rep.ok and rep.count == n, rep.summary()
            t0 = time.perf_counter()
            exported = led.export_since(0)
            t_export = time.perf_counter() - t0
        with Ledger.open(d / "hub.ledger") as hub:
            t0 = time.perf_counter()
            merged = hub.merge(exported, [ident.signing_public])
            t_merge = time.perf_counter() - t0
            assert merged.added == n
        size = (d / "node.ledger").stat().st_size
    out = {
        "entries": n,
        "append_per_s": round(n / t_append), "plain_sqlite_insert_per_s": round(n / t_plain),
        "append_vs_plain_insert": round(t_append / t_plain, 2),
        "append_vs_bare_sign": round(t_append / t_sign, 2),
        "verify_per_s": round(n / t_verify), "verify_vs_bare_nacl_verify": round(t_verify / t_nacl_verify, 2),
        "export_s": round(t_export, 3), "merge_per_s": round(n / t_merge),
        "bytes_per_entry": round(size / n),
    }
    print(json.dumps(out, indent=2))
    print(f"ledger: {out['append_per_s']} appends/s ({out['append_vs_plain_insert']}x a plain sqlite insert), "
          f"{out['verify_per_s']} verified/s ({out['verify_vs_bare_nacl_verify']}x bare Ed25519 verify), "
          f"{out['merge_per_s']} merged/s, {out['bytes_per_entry']} B/entry")


if __name__ == "__main__":
    main()
