"""Pure numpy: covariate entries from the records the SQL returns, and the sparse matrix from the entries.

An entry block holds parallel arrays ``k`` (matrix row) and ``code`` (index into the block's few distinct
covariate ids) and, for continuous covariates, ``value``. Ids are encoded once per domain so the final
column numbering only touches the distinct ids, never the records. Binary entries may repeat (a concept
recorded twice); building the CSR matrix merges repeats, so no sort or hash aggregation over the records is
needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nordfed.features import analyses as A

try:  # scipy's kernels behind coo.tocsr() and sort_indices(), called directly: on preallocated one-byte data,
    # without re-checking every index, and on row ranges from two threads
    from scipy.sparse._sparsetools import coo_tocsr as _coo_tocsr
    from scipy.sparse._sparsetools import csr_sort_indices as _csr_sort_indices
except ImportError:  # pragma: no cover - another scipy layout: its public methods, one thread
    _coo_tocsr = _csr_sort_indices = None

#: entries from which building the matrix uses two threads
_PARALLEL = 1 << 20


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
        # a narrow range (concepts of a domain, ages, years, months, genders): counting beats hashing; the
        # offsets are made index-sized once, as bincount and take would each convert them otherwise
        offset = x.astype(np.intp)
        offset -= lo
        present = np.bincount(offset, minlength=hi - lo + 1) > 0
        rank = np.cumsum(present, dtype=np.int32) - 1
        return rank.take(offset), (np.flatnonzero(present) + lo).astype(x.dtype)
    code, values = pd.factorize(x, sort=False)
    return code.astype(np.int32, copy=False), np.asarray(values, dtype=x.dtype)


def covariate_ids(entries: Entries) -> np.ndarray:
    """The matrix's columns: the distinct covariate ids of the non-empty blocks, ascending."""
    ids = [b.ids for b in entries.blocks if len(b.k)]
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int64)


def to_csr(entries: Entries, n_rows: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(matrix, covariate_ids)``: columns are the distinct covariate ids, ascending; a binary entry counts once.

    Only the sparsity pattern goes through scipy's counting sort by row and its per-row sort (one byte per entry
    instead of eight: memory traffic, not arithmetic, is the cost at tens of millions of entries); values are
    written afterwards, in one pass, into the final data array. Large inputs sort rows in two threads.
    """
    blocks = [b for b in entries.blocks if len(b.k)]
    cov_ids = covariate_ids(entries)
    if not blocks:
        return sp.csr_matrix((n_rows, 0)), cov_ids
    col_of = [np.searchsorted(cov_ids, b.ids).astype(np.int32) for b in blocks]
    valued = np.zeros(len(cov_ids), dtype=bool)
    for b, col in zip(blocks, col_of, strict=True):
        if b.value is not None:
            valued[col] = True
    if any(valued[col].any() for b, col in zip(blocks, col_of, strict=True) if b.value is None):
        raise ValueError("a covariate has both binary and continuous entries")
    n = sum(len(b.k) for b in blocks)
    threads = 2 if n >= _PARALLEL else 1
    with ThreadPoolExecutor(threads, thread_name_prefix="nordfed-csr") as pool:
        values = pool.submit(_values_by_position, [(b, col) for b, col in zip(blocks, col_of, strict=True)
                                                   if b.value is not None], len(cov_ids))
        # written block by block into the final arrays: no per-block temporaries at this size
        rows, cols = np.empty(n, dtype=np.int32), np.empty(n, dtype=np.int32)
        marks = np.zeros(n, dtype=np.int8)  # 1: a continuous entry (these are unique per row and covariate)
        at = 0
        for b, col in zip(blocks, col_of, strict=True):
            end = at + len(b.k)
            rows[at:end] = b.k
            np.take(col, b.code, out=cols[at:end])
            if b.value is not None:
                marks[at:end] = 1
            at = end
        m = _by_row(rows, cols, marks, (n_rows, len(cov_ids)))
        del rows, cols, marks
        _sort_rows(m, pool if threads > 1 else None)
        m.sum_duplicates()  # merges repeats, now adjacent (a repeated binary entry's marks sum to 0)
        data = np.ones(m.nnz)
        value = values.result()
    if len(value):
        # the continuous entries, in (row, column) order, are exactly the marked pattern positions
        data[np.flatnonzero(m.data)] = value
    out = sp.csr_matrix((data, m.indices, m.indptr), shape=m.shape)
    out.has_canonical_format = True
    return out, cov_ids


def _values_by_position(blocks: list[tuple[Block, np.ndarray]], n_cols: int) -> np.ndarray:
    """The continuous entries' values in (row, column) order."""
    if not blocks:
        return np.zeros(0)
    key = np.concatenate([b.k.astype(np.int64) * n_cols + col.take(b.code) for b, col in blocks])
    value = np.concatenate([b.value for b, _ in blocks if b.value is not None])
    order = np.argsort(key, kind="stable")  # last_values emits by row already: timsort merges a few runs
    key = key.take(order)
    if len(key) > 1 and not (key[1:] != key[:-1]).all():
        raise ValueError("continuous entries repeat a row and covariate")
    return value.take(order)


def _by_row(rows: np.ndarray, cols: np.ndarray, marks: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """The entries grouped by row (scipy's counting sort); columns not yet sorted, repeats kept."""
    if _coo_tocsr is None or len(rows) >= 2**31:
        pattern = sp.coo_matrix((marks, (rows, cols)), shape=shape)
        pattern.has_canonical_format = True  # no sum here (it would sort too): done by the caller
        return pattern.tocsr()
    indptr, indices, data = np.empty(shape[0] + 1, dtype=np.int32), np.empty_like(cols), np.empty_like(marks)
    _coo_tocsr(shape[0], shape[1], len(rows), rows, cols, marks, indptr, indices, data)
    return sp.csr_matrix((data, indices, indptr), shape=shape)


def _sort_rows(m: sp.csr_matrix, pool: ThreadPoolExecutor | None) -> None:
    """Sort each row's column indices in place, the two halves of the entries in two threads (scipy's sort
    releases the GIL but only sorts a whole matrix: its kernel is called directly, on each half's rows)."""
    if _csr_sort_indices is None or pool is None:
        m.sort_indices()
        return
    cut = int(np.searchsorted(m.indptr, m.nnz // 2))
    parts = [pool.submit(_csr_sort_indices, hi - lo, m.indptr[lo:hi + 1], m.indices, m.data)
             for lo, hi in ((0, cut), (cut, m.shape[0])) if hi > lo]
    for part in parts:
        part.result()
    m.has_sorted_indices = True


def demographics(entries: Entries, k: np.ndarray, gender: np.ndarray, year_of_birth: np.ndarray, year: np.ndarray,
                 month: np.ndarray, analyses: Sequence[int]) -> None:
    """Gender (known only), 5-year age group at index, index year and index month."""

    def add(k: np.ndarray, concept: np.ndarray, analysis_id: int) -> None:
        code, concepts = encode(concept)  # the few distinct values, before they become wide ids
        entries.add(k, code, concepts.astype(np.int64) * 1000 + analysis_id)

    if A.GENDER in analyses:
        known = np.flatnonzero(gender != 0)
        add(k.take(known), gender.take(known), A.GENDER)
    if A.AGE_GROUP in analyses:
        add(k, (year - year_of_birth) // 5, A.AGE_GROUP)
    if A.INDEX_YEAR in analyses:
        add(k, year, A.INDEX_YEAR)
    if A.INDEX_MONTH in analyses:
        add(k, month, A.INDEX_MONTH)


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


def counts(entries: Entries, k: np.ndarray, code: np.ndarray, concepts: np.ndarray, day: np.ndarray,
           starts: Sequence[tuple[int, int]]) -> None:
    """Number of records of each concept (``concepts[code]``) per row in each ``(start_day, analysis_id)``
    window, FeatureExtraction's ``COUNT(*)`` of the records overlapping it; the records all reach the window end."""
    if not len(k):
        return
    ids = concepts.astype(np.int64) * 1000
    low = int(day.min())
    for start, analysis_id in starts:
        inside = None if start <= low else np.flatnonzero(day >= start)
        kk, cc = (k, code) if inside is None else (k.take(inside), code.take(inside))
        if not len(kk):
            continue
        key = kk.astype(np.int64)
        key *= len(concepts)
        key += cc
        pair, n = np.unique(key, return_counts=True)
        entries.add((pair // len(concepts)).astype(np.int32), (pair % len(concepts)).astype(np.int32),
                    ids + analysis_id, n.astype(np.float64))


def roll_up(code: np.ndarray, concepts: np.ndarray, ancestor: np.ndarray,
            descendant: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Records coded ``concepts[code]`` rolled up to the groups (``ancestor``) their concept belongs to:
    ``(record, group_code, groups)``, one output row per record and group (``record`` None: one each; a record
    whose concept is in no group has none)."""
    order = np.argsort(descendant, kind="stable")
    desc, anc = descendant[order], ancestor[order]
    lo = np.searchsorted(desc, concepts, side="left")
    n = np.searchsorted(desc, concepts, side="right") - lo
    # the groups of each distinct concept, laid out concept after concept
    member = np.repeat(lo, n) + np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
    group_code, groups = encode(anc[member])
    if (n <= 1).all():
        # at most one group per drug (FeatureExtraction's groups nest, but a vocabulary subset may not)
        of = np.full(len(concepts), -1, dtype=np.int32)
        of[n == 1] = group_code
        per_record = of.take(code)
        if (n == 1).all():
            return None, per_record, groups
        record = np.flatnonzero(per_record >= 0)  # a drug in no group: the record is dropped
        return record, per_record.take(record), groups
    per = n[code]
    record = np.repeat(np.arange(len(code)), per)
    first = (np.cumsum(n) - n)[code]
    # position of each output row inside its record's run of groups
    offset = np.arange(len(record)) - np.repeat(np.cumsum(per) - per, per)
    return record, group_code[np.repeat(first, per) + offset], groups


def charlson(entries: Entries, n_rows: int, k: np.ndarray, code: np.ndarray, concepts: np.ndarray, day: np.ndarray,
             cat: np.ndarray, weight: np.ndarray, cat_concept: np.ndarray) -> None:
    """FeatureExtraction's Charlson index per row from its condition records on or before index (``day <= 0``;
    ``concepts[code]`` as :func:`encode` gives; category ``cat[i]`` of weight ``weight[i]`` has concept
    ``cat_concept[i]``), as :func:`nordfed.features.analyses.charlson_sql` computes it in SQL: the weights of the
    categories present, a milder one's dropped when its severe form is present; rows without any get no entry."""
    before = np.flatnonzero(day <= 0)
    record, cat_code, cats = roll_up(code.take(before), concepts, cat, cat_concept)
    rows = k.take(before) if record is None else k.take(before.take(record))
    present = np.zeros((n_rows, len(cats)), dtype=bool)
    present[rows, cat_code] = True
    weight_of = {int(c): int(w) for c, w in zip(cat.tolist(), weight.tolist(), strict=True)}
    column = {int(c): j for j, c in enumerate(cats.tolist())}
    score = np.zeros(n_rows, dtype=np.int32)
    for c, j in column.items():
        score += present[:, j] * np.int32(weight_of[c])
    for mild, severe in A.CHARLSON_HIERARCHY:
        if mild in column and severe in column:
            score -= (present[:, column[mild]] & present[:, column[severe]]) * np.int32(weight_of[mild])
    hit = np.flatnonzero(present.any(axis=1))
    entries.add_ids(hit.astype(np.int32), np.full(len(hit), 1000 + A.CHARLSON, dtype=np.int64),
                    score.take(hit).astype(np.float64))


def last_values(entries: Entries, k: np.ndarray, code: np.ndarray, concepts: np.ndarray, unit: np.ndarray,
                day: np.ndarray, measurement_id: np.ndarray, value: np.ndarray, start_day: int,
                analysis_id: int) -> None:
    """The last non-missing value per row, concept (``concepts[code]``, as :func:`encode` gives) and unit in the
    window (latest day, then highest id); ``covariate_id = concept_id * 1e6 + (unit mod 1000) * 1000 +
    analysis_id`` as in FeatureExtraction."""
    # arrays here are as long as the records: in-place arithmetic spares fresh memory (page faults dominate)
    if not len(day):
        return
    keep = day >= start_day
    keep &= ~np.isnan(value)
    if not keep.all():
        rows = np.flatnonzero(keep)
        if not len(rows):
            return
        k, code, unit = k.take(rows), code.take(rows), unit.take(rows)
        day, measurement_id, value = day.take(rows), measurement_id.take(rows), value.take(rows)
    del keep
    # (concept, unit) pairs numbered from the concept codes: a narrow range, so counted rather than hashed
    unit_code, units = encode(unit % 1000)
    pair = code.astype(np.int64)
    pair *= len(units)
    pair += unit_code
    del unit_code
    code, pairs = encode(pair)
    del pair
    ids = concepts[pairs // len(units)].astype(np.int64) * 1_000_000 + units[pairs % len(units)] * 1000 + analysis_id
    dmin = int(day.min())
    span = int(day.max()) - dmin + 1
    if (int(k.max()) + 1) * len(ids) * span >= 2**62:  # keys too wide for one int64: sort by each
        group = k.astype(np.int64) * len(ids) + code
        order = np.lexsort((measurement_id, day, group))
        g = group.take(order)
        last = order.take(np.flatnonzero(np.append(g[1:] != g[:-1], True)))
        entries.add(k.take(last), code.take(last), ids, value.take(last))
        return
    # one int64 key per record: (row, pair, day), built in place
    key = k.astype(np.int64)
    key *= len(ids)
    key += code
    key *= span
    key += day
    key -= dmin
    order = np.argsort(key, kind="stable")  # records come roughly by person: timsort's best case
    key = key.take(order)
    group = key // span
    ends = np.flatnonzero(np.append(group[1:] != group[:-1], True))
    del group
    last = order.take(ends)
    # where a group's last day holds several values (rare), the highest measurement_id wins
    same = key[1:] == key[:-1]
    if same.any():
        tied = ends[ends > 0]
        tied = tied[same.take(tied - 1)]
        starts = np.searchsorted(key, key.take(tied), side="left")
        n = tied - starts + 1
        offset = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        candidates = order.take(np.repeat(starts, n) + offset)
        by_id = candidates.take(np.lexsort((measurement_id.take(candidates), np.repeat(np.arange(len(n)), n))))
        last[np.searchsorted(ends, tied)] = by_id.take(np.cumsum(n) - 1)
    entries.add(k.take(last), code.take(last), ids, value.take(last))
