"""Pure numpy: covariate entries from the records the SQL returns, and the sparse matrix from the entries.

An entry block holds parallel arrays ``k`` (matrix row) and ``code`` (index into the block's few distinct
covariate ids) and, for continuous covariates, ``value``. Ids are encoded once per domain so the final
column numbering only touches the distinct ids, never the records. Binary entries may repeat (a concept
recorded twice); building the CSR matrix sums repeats, which are then set back to 1, so no sort or hash
aggregation over the records is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nordfed.features import analyses as A


@dataclass
class Block:
    k: np.ndarray
    code: np.ndarray
    ids: np.ndarray  # covariate id of each code
    value: np.ndarray | None = None  # None: binary


@dataclass
class Entries:
    """Covariate entries collected from all analyses."""

    blocks: list[Block] = field(default_factory=list)

    def add(self, k: np.ndarray, code: np.ndarray, ids: np.ndarray, value: np.ndarray | None = None) -> None:
        """Continuous entries (``value`` given) must be unique per ``(k, ids[code])``."""
        self.blocks.append(Block(np.asarray(k), np.asarray(code), np.asarray(ids, dtype=np.int64),
                                 None if value is None else np.asarray(value, dtype=np.float64)))

    def add_ids(self, k: np.ndarray, covariate_id: np.ndarray, value: np.ndarray | None = None) -> None:
        code, ids = encode(np.asarray(covariate_id, dtype=np.int64))
        self.add(k, code, ids, value)


def encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(code, values)`` with ``values[code] == x``; values distinct (order unspecified)."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=x.dtype)
    lo, hi = int(x.min()), int(x.max())
    if hi - lo < 4 * len(x) + 1024:
        # a narrow range (ages, years, months, genders): counting beats hashing
        present = np.bincount(x - lo, minlength=hi - lo + 1) > 0
        rank = np.cumsum(present, dtype=np.int32) - 1
        return rank[x - lo], (np.flatnonzero(present) + lo).astype(x.dtype)
    code, values = pd.factorize(x, sort=False)
    return code.astype(np.int32, copy=False), np.asarray(values, dtype=x.dtype)


def to_csr(entries: Entries, n_rows: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(matrix, covariate_ids)``: columns are the distinct covariate ids, ascending."""
    blocks = [b for b in entries.blocks if len(b.k)]
    cov_ids = np.unique(np.concatenate([b.ids for b in blocks])) if blocks else np.zeros(0, dtype=np.int64)
    binary_col = np.ones(len(cov_ids), dtype=bool)
    for b in blocks:
        if b.value is not None:
            binary_col[np.searchsorted(cov_ids, b.ids)] = False
    # written block by block into the final arrays: no per-block temporaries at this size
    n = sum(len(b.k) for b in blocks)
    rows, cols = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.int32)
    data = np.empty(n)  # binary entries' values are set after summing repeats: no need to initialise them
    at = 0
    for b in blocks:
        end = at + len(b.k)
        rows[at:end] = b.k
        np.take(np.searchsorted(cov_ids, b.ids).astype(np.int32), b.code, out=cols[at:end])
        if b.value is not None:
            data[at:end] = b.value
        at = end
    m = sp.coo_matrix((data, (rows, cols)), shape=(n_rows, len(cov_ids))).tocsr()  # sums repeats
    del rows, cols, data
    m.data[binary_col[m.indices]] = 1.0
    return m, cov_ids


def demographics(entries: Entries, k: np.ndarray, gender: np.ndarray, year_of_birth: np.ndarray, year: np.ndarray,
                 month: np.ndarray, analyses: Sequence[int]) -> None:
    """Gender (known only), 5-year age group at index, index year and index month."""
    if A.GENDER in analyses:
        known = gender != 0
        entries.add_ids(k[known], gender[known].astype(np.int64) * 1000 + A.GENDER)
    if A.AGE_GROUP in analyses:
        entries.add_ids(k, ((year - year_of_birth) // 5).astype(np.int64) * 1000 + A.AGE_GROUP)
    if A.INDEX_YEAR in analyses:
        entries.add_ids(k, year.astype(np.int64) * 1000 + A.INDEX_YEAR)
    if A.INDEX_MONTH in analyses:
        entries.add_ids(k, month.astype(np.int64) * 1000 + A.INDEX_MONTH)


def windows(entries: Entries, k: np.ndarray, code: np.ndarray, concepts: np.ndarray, day: np.ndarray,
            starts: Sequence[tuple[int, int]]) -> None:
    """Presence of each concept (``concepts[code]``) in each ``(start_day, analysis_id)`` window; the records
    all end at the window end."""
    ids = concepts.astype(np.int64) * 1000
    low = int(day.min()) if len(day) else 0
    for start, analysis_id in starts:
        if start <= low:  # every record (the widest window, usually): no copy
            entries.add(k, code, ids + analysis_id)
            continue
        inside = np.flatnonzero(day >= start)
        entries.add(k.take(inside), code.take(inside), ids + analysis_id)


def roll_up(code: np.ndarray, concepts: np.ndarray, ancestor: np.ndarray,
            descendant: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Records coded ``concepts[code]`` rolled up to the groups (``ancestor``) their concept belongs to:
    ``(record, group_code, groups)``, one output row per record and group (``record`` None: one each)."""
    order = np.argsort(descendant, kind="stable")
    desc, anc = descendant[order], ancestor[order]
    lo = np.searchsorted(desc, concepts, side="left")
    n = np.searchsorted(desc, concepts, side="right") - lo
    # the groups of each distinct concept, laid out concept after concept
    member = np.repeat(lo, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    group_code, groups = encode(anc[member])
    if (n == 1).all():
        return None, group_code[code], groups
    per = n[code]
    record = np.repeat(np.arange(len(code)), per)
    first = (np.cumsum(n) - n)[code]
    # position of each output row inside its record's run of groups
    offset = np.arange(len(record)) - np.repeat(np.cumsum(per) - per, per)
    return record, group_code[np.repeat(first, per) + offset], groups


def last_values(entries: Entries, k: np.ndarray, concept_id: np.ndarray, unit: np.ndarray, day: np.ndarray,
                measurement_id: np.ndarray, value: np.ndarray, start_day: int, analysis_id: int) -> None:
    """The last non-missing value per row, concept and unit in the window (latest day, then highest id);
    ``covariate_id = concept_id * 1e6 + (unit mod 1000) * 1000 + analysis_id`` as in FeatureExtraction."""
    # arrays here are as long as the records: in-place arithmetic spares fresh memory (page faults dominate)
    if not len(day):
        return
    keep = day >= start_day
    keep &= ~np.isnan(value)
    if not keep.all():
        rows = np.flatnonzero(keep)
        if not len(rows):
            return
        k, concept_id, unit = k.take(rows), concept_id.take(rows), unit.take(rows)
        day, measurement_id, value = day.take(rows), measurement_id.take(rows), value.take(rows)
    del keep
    pair = concept_id.astype(np.int64)
    pair *= 1000
    pair += unit % 1000
    code, pairs = encode(pair)
    del pair
    ids = pairs * 1000 + analysis_id
    group = k.astype(np.int64)
    group *= len(ids)
    group += code
    dmin = int(day.min())
    span = int(day.max()) - dmin + 1
    if (int(group.max()) + 1) * span >= 2**62:  # keys too wide for one int64: sort by each
        order = np.lexsort((measurement_id, day, group))
        g = group.take(order)
        last = order.take(np.flatnonzero(np.append(g[1:] != g[:-1], True)))
        entries.add(k.take(last), code.take(last), ids, value.take(last))
        return
    key = group * span
    key += day
    key -= dmin
    order = np.argsort(key, kind="stable")  # records come roughly by person: timsort's best case
    key_sorted = key.take(order)
    g = group.take(order)
    ends = np.flatnonzero(np.append(g[1:] != g[:-1], True))
    last = order.take(ends)
    # where a group's last day holds several values (rare), the highest measurement_id wins
    tied = ends[(ends > 0) & (key_sorted.take(np.maximum(ends - 1, 0)) == key_sorted.take(ends))]
    if len(tied):
        starts = np.searchsorted(key_sorted, key_sorted.take(tied), side="left")
        n = tied - starts + 1
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        candidates = order.take(np.repeat(starts, n) + offset)
        by_id = candidates.take(np.lexsort((measurement_id.take(candidates), np.repeat(np.arange(len(n)), n))))
        last[np.searchsorted(ends, tied)] = by_id.take(np.cumsum(n) - 1)
    entries.add(k.take(last), code.take(last), ids, value.take(last))
