"""Column buffers for one chunk of persons: generators append numpy arrays, :func:`Events.frame` joins them.

Dates are int32 days since 1970-01-01 until the very end; persons are chunk-local indices (0..n-1) and visits
are row numbers of the chunk's visit buffer, so generators never deal with identifiers.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

import numpy as np

EPOCH = dt.date(1970, 1, 1)

#: every buffer column and its fill value when a part leaves it out (NaN for floats, -1 for "NULL" integers)
COLUMNS: dict[str, dict[str, Any]] = {
    "visit": {"person": None, "start": None, "end": None, "concept": None, "planted": 0},
    "condition": {"person": None, "start": None, "end": -1, "concept": None, "visit": -1, "source_concept": -1,
                  "planted": 0},
    "drug": {"person": None, "start": None, "end": None, "concept": None, "days_supply": -1, "quantity": np.nan,
             "visit": -1, "planted": 0},
    "procedure": {"person": None, "start": None, "concept": None, "visit": -1, "planted": 0},
    "measurement": {"person": None, "start": None, "concept": None, "value": np.nan, "unit": -1, "visit": -1,
                    "range_low": np.nan, "range_high": np.nan, "planted": 0},
    "observation": {"person": None, "start": None, "concept": None, "value": np.nan, "value_concept": -1,
                    "visit": -1, "planted": 0},
}


def day(d: dt.date) -> int:
    return (d - EPOCH).days


def uniform_days(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A uniform integer day in [lo, hi] for each pair (hi >= lo)."""
    lo = np.asarray(lo, dtype=np.int64)
    span = np.asarray(hi, dtype=np.int64) - lo + 1
    return lo + np.floor(rng.random(lo.shape) * span).astype(np.int64)


def choose(rng: np.random.Generator, options: tuple[tuple[int, float], ...], n: int) -> np.ndarray:
    """n draws from weighted ``options`` ((value, weight), ...)."""
    values = np.array([o[0] for o in options], dtype=np.int64)
    weights = np.array([o[1] for o in options], dtype=float)
    return values[rng.choice(len(values), size=n, p=weights / weights.sum())]


class Events:
    """Append-only column buffers for the clinical tables of one chunk."""

    def __init__(self) -> None:
        self._parts: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
        self._rows: dict[str, int] = defaultdict(int)

    def add(self, table: str, **cols: Any) -> np.ndarray:
        """Append rows; returns their row numbers in this buffer (used to link events to visits)."""
        spec = COLUMNS[table]
        unknown = set(cols) - set(spec)
        if unknown:
            raise KeyError(f"{table} buffer has no column(s) {sorted(unknown)}")
        n = len(cols["person"])
        part = {}
        for name, fill in spec.items():
            value = cols.get(name, fill)
            if value is None:
                raise KeyError(f"{table} rows need {name}")
            arr = np.asarray(value)
            part[name] = np.broadcast_to(arr, (n,)) if arr.ndim == 0 else arr
            if len(part[name]) != n:
                raise ValueError(f"{table}.{name}: {len(part[name])} values for {n} rows")
        first = self._rows[table]
        if n:
            self._parts[table].append(part)
            self._rows[table] += n
        return np.arange(first, first + n, dtype=np.int64)

    def count(self, table: str) -> int:
        return self._rows[table]

    def frame(self, table: str) -> dict[str, np.ndarray]:
        """The buffer as one array per column (empty arrays when nothing was added)."""
        spec = COLUMNS[table]
        parts = self._parts.get(table, [])
        out = {}
        for name, fill in spec.items():
            if not parts:
                out[name] = np.empty(0, dtype=float if isinstance(fill, float) else np.int64)
            else:
                out[name] = np.concatenate([p[name] for p in parts])
        return out
