"""Covariate entries from the records the SQL returns, and the sparse matrix from the entries.

A block of entries holds parallel arrays ``k`` (matrix row) and ``code`` (index into the block's few distinct
covariate ids) and, for continuous covariates, ``value``. Ids are encoded once per domain so the final column
numbering only touches the distinct ids, never the records. A block may keep only the entries with
``day >= since``, so every window of a domain shares the same record arrays (no copy per window). Entries of one
row and covariate may repeat (a concept recorded twice); building the matrix merges them by the covariate's rule
(:data:`ANY`, :data:`COUNT`, :data:`LAST`, :data:`VALUE`) after counting sorts, so no comparison sort or hash
aggregation over the records is needed. The loops over the records are compiled (:mod:`nordfed.features.kernels`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nordfed.features import analyses as A
from nordfed.features import kernels
from nordfed.features.kernels import ANY, COUNT, LAST, VALUE

#: entries from which building the matrix uses two threads
_PARALLEL = 1 << 20
#: matrix rows per chunk (a power of two): a chunk's entries are sorted and merged inside one core's cache
CHUNK_SHIFT = 11
_NO_DAY, _NO_VALUE, _NO_RANK = np.zeros(0, np.int32), np.zeros(0, np.float64), np.zeros(0, np.int64)


@dataclass
class Block:
    k: np.ndarray  # int32
    code: np.ndarray  # int32
    ids: np.ndarray  # int64: covariate id of each code
    value: np.ndarray  # float64; empty: binary (ANY, COUNT)
    rank: np.ndarray  # int64, LAST only: of repeated entries the highest rank's value wins
    day: np.ndarray  # int32; empty: no filter
    since: int
    merge: int
    per_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # kept entries per code
    per_chunk: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # kept entries per row chunk


class Entries:
    """Covariate entries for an ``n_rows``-row matrix; each block is counted per chunk of rows and per code as
    it is added (while later tables are still being scanned)."""

    def __init__(self, n_rows: int):
        self.n_rows = n_rows
        self.blocks: list[Block] = []
        #: measurement units seen, by ``unit_concept_id mod 1000`` (all a value covariate's id keeps of its unit)
        self.units: dict[int, set[int]] = {}
        self.n_chunks = ((n_rows - 1) >> CHUNK_SHIFT) + 1 if n_rows else 0

    def add(self, k: np.ndarray, code: np.ndarray, ids: np.ndarray, value: np.ndarray | None = None, *,
            day: np.ndarray | None = None, since: int = 0, rank: np.ndarray | None = None,
            merge: int | None = None) -> None:
        """Entries ``(k[i], ids[code[i]])`` with ``day[i] >= since`` (``day`` given) and a value that is not NaN.
        ``merge`` defaults to ANY (no ``value``) or VALUE (unique per row and covariate); LAST needs ``rank``."""
        merge = (ANY if value is None else VALUE) if merge is None else merge
        if (value is None) != (merge in (ANY, COUNT)) or (rank is None) != (merge != LAST):
            raise ValueError(f"merge rule {merge} does not fit the arrays given")
        b = Block(np.asarray(k).astype(np.int32, copy=False), np.asarray(code).astype(np.int32, copy=False),
                  np.asarray(ids, dtype=np.int64),
                  _NO_VALUE if value is None else np.asarray(value).astype(np.float64, copy=False),
                  _NO_RANK if rank is None else np.asarray(rank).astype(np.int64, copy=False),
                  _NO_DAY if day is None else np.asarray(day).astype(np.int32, copy=False), int(since), merge)
        if not len(b.k):
            return
        if len(b.code) != len(b.k) or any(len(a) not in (0, len(b.k)) for a in (b.day, b.value, b.rank)):
            raise ValueError("code, day, value and rank must have one element per entry")
        b.per_code = np.zeros(len(b.ids), dtype=np.int64)
        b.per_chunk = np.zeros(self.n_chunks, dtype=np.int64)
        kept = kernels.count_chunks(b.k, b.code, b.day, b.since, b.value, self.n_rows, CHUNK_SHIFT, b.per_chunk,
                                    b.per_code)
        if kept == -1:
            raise ValueError(f"entry rows outside 0 .. {self.n_rows - 1}")
        if kept == -2:
            raise ValueError(f"entry codes outside 0 .. {len(b.ids) - 1}")
        if kept:
            self.blocks.append(b)

    def add_ids(self, k: np.ndarray, covariate_id: np.ndarray, value: np.ndarray | None = None) -> None:
        code, ids = encode(np.asarray(covariate_id, dtype=np.int64))
        self.add(k, code, ids, value)


def encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(code, values)`` with ``values[code] == x``; values distinct (ascending when the range is narrow)."""
    if len(x) == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=x.dtype)
    lo, hi = int(x.min()), int(x.max())
    if hi - lo < 4 * len(x) + 1024:
        # a narrow range (concepts of a domain, ages, years, months, genders): counting beats hashing
        code, values = kernels.dense_codes(x, lo, hi - lo + 1)
        return code, values.astype(x.dtype, copy=False)
    code, values = pd.factorize(x, sort=False)
    return code.astype(np.int32, copy=False), np.asarray(values, dtype=x.dtype)


def covariate_ids(entries: Entries) -> np.ndarray:
    """The matrix's columns: the covariate ids with at least one entry, ascending."""
    ids = [b.ids[b.per_code > 0] for b in entries.blocks]
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.int64)


def to_csr(entries: Entries) -> tuple[sp.csr_matrix, np.ndarray]:
    """``(matrix, covariate_ids)``: columns are :func:`covariate_ids`; repeats of a row and covariate merged by
    the covariate's rule.

    Two passes, each over the entries once (:mod:`nordfed.features.kernels`): :func:`~kernels.partition` writes
    every entry into its chunk of rows (a chunk's size is known from :meth:`Entries.add`); :func:`~kernels.
    merge_chunks` sorts and merges each chunk inside the cache and writes its CSR rows. Writing each entry
    straight to its row instead (a counting sort over all rows) touches a new cache line per entry across the
    whole matrix: at a million rows that took 0.25 s of CPU where the partition takes 0.08 s. Large inputs use
    two threads: blocks split between them for the partition, chunks for the merge.

    Measured slower at a million rows on two cores, and so not done: building the matrix analysis step by step
    while later tables are scanned (DuckDB's scan already keeps both cores busy, and the parts must then be
    concatenated); a counting sort of the whole matrix by column, then by row (its appends to rows come in no order
    the prefetcher can follow; inside one chunk, in cache, the same two sorts are what the merge does); one compiled
    pass from each engine batch straight into pages per chunk of rows, joining, coding (hash table) and windowing
    each record with no record or entry arrays in between (0.66-0.68 s against 0.56-0.60 s in one A/B run, with
    18 % less peak memory: a hash lookup and a page write per entry cost more than the sequential passes they
    replace).
    """
    blocks, n_rows = entries.blocks, entries.n_rows
    cov_ids = covariate_ids(entries)
    if not blocks:
        return sp.csr_matrix((n_rows, 0)), cov_ids
    # a block's ids without entries are absent from cov_ids: they get a column no entry refers to
    col_of = [np.minimum(np.searchsorted(cov_ids, b.ids), len(cov_ids) - 1).astype(np.int32) for b in blocks]
    mode = np.full(len(cov_ids), -1, dtype=np.int8)
    for b, col in zip(blocks, col_of, strict=True):
        cols = col[b.per_code > 0]
        if ((mode[cols] != -1) & (mode[cols] != b.merge)).any():
            raise ValueError("a covariate has entries with two different merge rules (e.g. binary and continuous)")
        mode[cols] = b.merge
    # chunk after chunk; inside a chunk, block after block
    per = np.stack([b.per_chunk for b in blocks], axis=1)
    starts = np.zeros(per.size + 1, dtype=np.int64)
    np.cumsum(per.ravel(), out=starts[1:])
    nnz = int(starts[-1])
    chunk_start = starts[::len(blocks)].copy()
    starts = starts[:-1].reshape(per.shape)
    row = np.empty(nnz, dtype=np.uint16)
    indices, data = np.empty(nnz, dtype=np.int32), np.empty(nnz, dtype=np.float64)
    ranks = np.empty(nnz, dtype=np.int64) if any(b.merge == LAST for b in blocks) else _NO_RANK
    row_len = np.empty(n_rows, dtype=np.int64)

    def partition(which: list[int]) -> None:
        for i in which:
            b = blocks[i]
            kernels.partition(b.k, b.code, col_of[i], b.day, b.since, b.value, b.rank, CHUNK_SHIFT,
                              starts[:, i].copy(), row, indices, data, ranks)

    def merge(c_lo: int, c_hi: int) -> tuple[int, int]:
        return kernels.merge_chunks(chunk_start, c_lo, c_hi, CHUNK_SHIFT, n_rows, row, indices, data, ranks, mode,
                                    row_len)

    if nnz < _PARALLEL:
        partition(list(range(len(blocks))))
        end, bad = merge(0, entries.n_chunks)
    else:
        # blocks to two threads by size, largest first, each to the lighter side
        sides: tuple[list[int], list[int]] = ([], [])
        load = [0, 0]
        for i in sorted(range(len(blocks)), key=lambda i: -len(blocks[i].k)):
            side = int(load[1] < load[0])
            sides[side].append(i)
            load[side] += len(blocks[i].k)
        mid = int(np.searchsorted(chunk_start, nnz // 2))
        with ThreadPoolExecutor(1, thread_name_prefix="nordfed-csr") as pool:
            other = pool.submit(partition, sides[1])
            partition(sides[0])
            other.result()
            upper = pool.submit(merge, mid, entries.n_chunks)
            end, bad = merge(0, mid)
            end2, bad2 = upper.result()
        bad = bad if bad >= 0 else bad2
        # the upper half was merged from its own start: close the gap the merged repeats left
        kernels.move_down(indices, data, int(chunk_start[mid]), end, end2 - int(chunk_start[mid]))
        end += end2 - int(chunk_start[mid])
    if bad >= 0:
        raise ValueError(f"continuous entries repeat a row and covariate (matrix row {bad})")
    row = ranks = _NO_RANK  # released before the matrix is made
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(row_len, out=indptr[1:])
    out = sp.csr_matrix((data[:end], indices[:end], indptr.astype(np.int32) if end < 2**31 else indptr),
                        shape=(n_rows, len(cov_ids)))
    out.has_sorted_indices = True
    out.has_canonical_format = True
    return out, cov_ids


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
        # every record in the window (the widest, usually): no test per entry
        entries.add(k, code, ids + analysis_id, day=None if start <= low else day, since=start)


def counts(entries: Entries, k: np.ndarray, code: np.ndarray, concepts: np.ndarray, day: np.ndarray,
           starts: Sequence[tuple[int, int]]) -> None:
    """Number of records of each concept (``concepts[code]``) per row in each ``(start_day, analysis_id)``
    window, FeatureExtraction's ``COUNT(*)`` of the records overlapping it; the records all reach the window end."""
    ids = concepts.astype(np.int64) * 1000
    low = int(day.min()) if len(day) else 0
    for start, analysis_id in starts:
        entries.add(k, code, ids + analysis_id, day=None if start <= low else day, since=start, merge=COUNT)


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
    window from ``start_day`` (latest day, then highest id); ``covariate_id = concept_id * 1e6 + (unit mod 1000)
    * 1000 + analysis_id`` as in FeatureExtraction."""
    if not len(day):
        return
    # units mod 1000 may collide: two codes then share a covariate id, and building the matrix merges them
    # as repeats (cheaper than the modulo over every record)
    unit_code, units = encode(unit)
    for u in units.tolist():
        entries.units.setdefault(u % 1000, set()).add(int(u))
    units = units % 1000
    if len(concepts) * len(units) >= 2**31:
        raise ValueError("too many measurement concepts and units to number their pairs")
    day_min = int(day.min())
    # a pair's code is concept code * units + unit code: every pair has an id, only the ones with an entry
    # become columns
    code, rank, ok = kernels.pair_codes(code, unit_code, len(units), day, day_min, measurement_id)
    del unit_code
    if not ok:  # ids too wide to pack with the day: rank by a sort instead
        rank = np.empty(len(day), dtype=np.int64)
        rank[np.lexsort((measurement_id, day))] = np.arange(len(day))
    ids = (np.repeat(concepts.astype(np.int64) * 1_000_000, len(units)) + np.tile(units.astype(np.int64) * 1000,
           len(concepts)) + analysis_id)
    entries.add(k, code, ids, value, day=day, since=start_day, rank=rank, merge=LAST)
