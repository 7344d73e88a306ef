"""JSON-lines exchange of ledger entries between replicas (what `nordfed ledger export` writes)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from nordfed.ledger.entry import Entry, LedgerFormatError


def dump_jsonl(entries: Iterable[Entry], fh: TextIO) -> int:
    """Write one canonical JSON object per line; returns the number written."""
    n = 0
    for e in entries:
        fh.write(json.dumps(e.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n")
        n += 1
    return n


def load_jsonl(path: str | Path) -> list[Entry]:
    """Read an export; a bad line raises LedgerFormatError naming file, line and field."""
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                out.append(Entry.from_dict(json.loads(line)))
            except (ValueError, LedgerFormatError) as exc:
                raise LedgerFormatError(f"{path}, line {lineno}: {exc}") from exc
    return out
