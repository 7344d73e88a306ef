"""Compiled loops (numba) for covariate extraction.

Each kernel is one pass over the records where numpy needs several (a temporary array per step, and memory
traffic, not arithmetic, is the cost at tens of millions of records). All release the GIL, so the callers split
work between threads by matrix row. Compiled on first use (:func:`nordfed.jit.compiled`).
"""

from __future__ import annotations

import numpy as np

from nordfed.jit import compiled

#: how repeats of one (row, covariate) merge: ANY (binary: 1), COUNT (how many), LAST (the value of the
#: highest rank), VALUE (unique: a repeat is an error)
ANY, COUNT, LAST, VALUE = 0, 1, 2, 3



@compiled
def join(person: np.ndarray, first: np.ndarray, last: np.ndarray, concept: np.ndarray, k_of: np.ndarray,
         day_of: np.ndarray, offset: int, start: int, end: int, has_start: bool, out_k: np.ndarray,
         out_day: np.ndarray, out_concept: np.ndarray, rows: np.ndarray, at: int) -> int:
    """Records of population persons (``k_of[person - offset] >= 0``) whose window test passes: ``first`` day
    (from index) ``<= end`` and, with ``has_start``, ``last`` day ``>= start`` (``last`` empty: ``first``).
    Writes their row, day (of ``last``) and concept from ``at`` and their positions into ``rows``; returns how
    many. Every record is written and the position advances only for a kept one: no branch to mispredict
    (about half the records are kept), so the outputs need room for one record more than are kept."""
    m = 0
    n_slots = len(k_of)
    same = len(last) == 0
    for i in range(len(person)):
        slot = person[i] - offset
        inside = (slot >= 0) & (slot < n_slots)
        slot = slot if inside else 0
        k = k_of[slot]
        index = day_of[slot]
        day = (first[i] if same else last[i]) - index
        keep = inside & (k >= 0) & (first[i] - index <= end) & ((day >= start) | (not has_start))
        out_k[at + m] = k
        out_day[at + m] = day
        out_concept[at + m] = concept[i]
        rows[m] = i
        m += keep
    return m


@compiled
def dense_codes(x: np.ndarray, lo: int, span: int) -> tuple[np.ndarray, np.ndarray]:
    """``(code, values)`` for ``x`` within ``lo .. lo + span - 1``: ``values`` ascending, ``values[code] == x``."""
    rank = np.zeros(span, dtype=np.int32)
    for i in range(len(x)):
        rank[x[i] - lo] = 1
    n = 0
    for j in range(span):
        if rank[j]:
            rank[j] = n
            n += 1
        else:
            rank[j] = -1
    values = np.empty(n, dtype=np.int64)
    for j in range(span):
        if rank[j] >= 0:
            values[rank[j]] = lo + j
    code = np.empty(len(x), dtype=np.int32)
    for i in range(len(x)):
        code[i] = rank[x[i] - lo]
    return code, values


@compiled
def pair_codes(code: np.ndarray, unit_code: np.ndarray, n_units: int, day: np.ndarray, day_min: int,
               record_id: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(pair, rank, ok)``: ``code * n_units + unit_code`` and ``(day - day_min) << 43 | record_id``, which
    orders records by day, then id (``ok`` False: an id outside ``0 .. 2**43 - 1``, the ranks are not usable)."""
    pair = np.empty(len(code), dtype=np.int32)
    rank = np.empty(len(code), dtype=np.int64)
    ok = True
    for i in range(len(code)):
        pair[i] = code[i] * n_units + unit_code[i]
        rid = record_id[i]
        if rid < 0 or rid >= np.int64(1) << 43:
            ok = False
        rank[i] = (np.int64(day[i] - day_min) << 43) | rid
    return pair, rank, ok


@compiled
def count_rows(k: np.ndarray, code: np.ndarray, day: np.ndarray, since: int, value: np.ndarray, counts: np.ndarray,
               per_code: np.ndarray) -> int:
    """``counts[k] += 1`` and ``per_code[code] += 1`` for each entry kept: ``day >= since`` (``day`` empty: all)
    and a value that is not NaN (``value`` empty: binary). Returns how many were kept."""
    kept = 0
    has_day, has_value = len(day) > 0, len(value) > 0
    for i in range(len(k)):
        if has_day and day[i] < since:
            continue
        if has_value and np.isnan(value[i]):
            continue
        counts[k[i]] += 1
        per_code[code[i]] += 1
        kept += 1
    return kept


@compiled
def scatter(k: np.ndarray, code: np.ndarray, col_of: np.ndarray, day: np.ndarray, since: int, value: np.ndarray,
            rank: np.ndarray, lo: int, hi: int, fill: np.ndarray, indices: np.ndarray, data: np.ndarray,
            ranks: np.ndarray) -> None:
    """Write the kept entries of rows ``lo .. hi - 1`` at their row's next free position (``fill``): column,
    value (if any) and rank (if any). Threads given disjoint row ranges never write the same place."""
    has_day, has_value, has_rank = len(day) > 0, len(value) > 0, len(rank) > 0
    for i in range(len(k)):
        r = k[i]
        if r < lo or r >= hi:
            continue
        if has_day and day[i] < since:
            continue
        if has_value and np.isnan(value[i]):
            continue
        p = fill[r]
        fill[r] = p + 1
        indices[p] = col_of[code[i]]
        if has_value:
            data[p] = value[i]
        if has_rank:
            ranks[p] = rank[i]


#: de Bruijn multiplier and table: the index of a word's lowest set bit in two operations, without a branch
_DE_BRUIJN = np.uint64(0x03F79D71B4CB0A89)
_BIT_INDEX = np.zeros(64, dtype=np.int64)
for _i in range(64):
    _BIT_INDEX[(((1 << _i) * int(_DE_BRUIJN)) & (2**64 - 1)) >> 58] = _i


@compiled
def _lowest_bit(x: np.uint64) -> int:
    return _BIT_INDEX[((x & (~x + np.uint64(1))) * _DE_BRUIJN) >> np.uint64(58)]


@compiled
def merge_rows(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, ranks: np.ndarray, mode: np.ndarray,
               lo: int, hi: int, row_len: np.ndarray) -> tuple[int, int]:
    """Sort each row of ``lo .. hi - 1`` by column and merge repeats by the column's ``mode``, writing the rows
    one after another from ``indptr[lo]``. Returns ``(end, bad_row)``: where the last row ends, and a row
    where a VALUE covariate repeats (-1: none).

    A row's columns are set as bits in a bitmap of all columns (with a bitmap of its non-zero words) and read
    back in order: sorted and without repeats in time linear in the row, with no comparison sort. A valued
    column's merged value is kept per column until it is written."""
    n_words = (len(mode) + 63) // 64
    bits = np.zeros(n_words, dtype=np.uint64)
    words = np.zeros((n_words + 63) // 64, dtype=np.uint64)
    value = np.zeros(len(mode), dtype=np.float64)
    best = np.zeros(len(mode), dtype=np.int64)  # LAST: the rank of the value kept
    one = np.uint64(1)
    w = indptr[lo]
    for r in range(lo, hi):
        for i in range(indptr[r], indptr[r + 1]):
            c = indices[i]
            word = c >> 6
            bit = one << np.uint64(c & 63)
            new = (bits[word] & bit) == 0
            if new:
                bits[word] |= bit
                words[word >> 6] |= one << np.uint64(word & 63)
            m = mode[c]
            if m == COUNT:
                value[c] = 1.0 if new else value[c] + 1.0
            elif m == LAST:
                if new or ranks[i] > best[c]:
                    value[c] = data[i]
                    best[c] = ranks[i]
            elif m == VALUE:
                if not new:
                    return w, r
                value[c] = data[i]
        start = w
        for high in range(len(words)):
            y = words[high]
            words[high] = 0
            while y:
                word = (high << 6) + _lowest_bit(y)
                y &= y - one
                x = bits[word]
                bits[word] = 0
                while x:
                    c = (word << 6) + _lowest_bit(x)
                    x &= x - one
                    indices[w] = c
                    data[w] = 1.0 if mode[c] == ANY else value[c]
                    w += 1
        row_len[r] = w - start
    return w, -1


@compiled
def move_down(indices: np.ndarray, data: np.ndarray, src: int, dst: int, n: int) -> None:
    """Move ``n`` entries from ``src`` to ``dst <= src`` (overlap allowed)."""
    for i in range(n):
        indices[dst + i] = indices[src + i]
        data[dst + i] = data[src + i]
