"""Compiled loops (numba) for covariate extraction.

Each kernel is one pass over the records where numpy needs several (a temporary array per step, and memory
traffic, not arithmetic, is the cost at tens of millions of records). All release the GIL, so the callers split
work between threads by matrix row. Compiled on first use (:func:`nordfed.jit.compiled`).
"""

from __future__ import annotations

import numpy as np

from nordfed.jit import compiled, trailing_zeros

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
def count_chunks(k: np.ndarray, code: np.ndarray, day: np.ndarray, since: int, value: np.ndarray, n_rows: int,
                 shift: int, per_chunk: np.ndarray, per_code: np.ndarray) -> int:
    """``per_chunk[k >> shift] += 1`` and ``per_code[code] += 1`` for each entry kept: ``day >= since`` (``day``
    empty: all) and a value that is not NaN (``value`` empty: binary). Returns how many were kept, or -1 for a
    ``k`` outside ``0 .. n_rows - 1`` and -2 for a ``code`` outside ``per_code`` (the counts are then partial)."""
    kept = 0
    has_day, has_value = len(day) > 0, len(value) > 0
    n_codes = len(per_code)
    for i in range(len(k)):
        # the compiled loops do not check bounds: a bad index would write outside the arrays
        if k[i] < 0 or k[i] >= n_rows:
            return -1
        if code[i] < 0 or code[i] >= n_codes:
            return -2
        # branchless: whether a record is in a short window is a coin toss to the branch predictor
        keep = 1
        if has_day:
            keep &= day[i] >= since
        if has_value:
            keep &= not np.isnan(value[i])
        per_chunk[k[i] >> shift] += keep
        per_code[code[i]] += keep
        kept += keep
    return kept


@compiled
def partition(k: np.ndarray, code: np.ndarray, col_of: np.ndarray, day: np.ndarray, since: int, value: np.ndarray,
              rank: np.ndarray, shift: int, pos: np.ndarray, row: np.ndarray, indices: np.ndarray, data: np.ndarray,
              ranks: np.ndarray) -> None:
    """Write each kept entry (as :func:`count_chunks` keeps them) at its chunk's next position (``pos[k >> shift]``):
    its row within the chunk, column, value (if any) and rank (if any). Blocks given disjoint positions may be
    written by different threads."""
    has_day, has_value, has_rank = len(day) > 0, len(value) > 0, len(rank) > 0
    mask = (1 << shift) - 1
    for i in range(len(k)):
        if has_day and day[i] < since:
            continue
        if has_value and np.isnan(value[i]):
            continue
        r = k[i]
        p = pos[r >> shift]
        pos[r >> shift] = p + 1
        row[p] = r & mask
        indices[p] = col_of[code[i]]
        if has_value:
            data[p] = value[i]
        if has_rank:
            ranks[p] = rank[i]


@compiled
def merge_chunks(chunk_start: np.ndarray, c_lo: int, c_hi: int, shift: int, n_rows: int, row: np.ndarray,
                 indices: np.ndarray, data: np.ndarray, ranks: np.ndarray, mode: np.ndarray,
                 row_len: np.ndarray) -> tuple[int, int]:
    """Turn chunks ``c_lo .. c_hi - 1`` (as :func:`partition` left them) into CSR rows written one after another
    from ``chunk_start[c_lo]``: each row's columns sorted, repeats merged by the column's ``mode``, and its length
    in ``row_len``. Returns ``(end, bad_row)``: where the last row ends, and a row where a VALUE covariate
    repeats (-1: none).

    A chunk is copied into buffers small enough to stay in the core's cache and sorted there by row (a counting
    sort); a row's columns are then set as bits in a bitmap of all columns (with a bitmap of its non-zero words)
    and read back in order: sorted and without repeats in time linear in the row, with no comparison sort. A
    valued column's merged value is kept per column until it is written. The output never overtakes the chunk
    being read (merging only shrinks rows), so it is written in place."""
    size = 1 << shift
    big = 0
    for c in range(c_lo, c_hi):
        big = max(big, chunk_start[c + 1] - chunk_start[c])
    lcol = np.empty(big, dtype=np.int32)
    ldata = np.empty(big, dtype=np.float64)
    lrank = np.empty(big if len(ranks) else 0, dtype=np.int64)
    fill = np.zeros(size + 1, dtype=np.int64)
    n_words = (len(mode) + 63) // 64
    bits = np.zeros(n_words, dtype=np.uint64)
    words = np.zeros((n_words + 63) // 64, dtype=np.uint64)
    value = np.zeros(len(mode), dtype=np.float64)
    for col in range(len(mode)):
        if mode[col] == ANY:
            value[col] = 1.0  # never changes: every column's output is value[col]
    best = np.zeros(len(mode), dtype=np.int64)  # LAST: the rank of the value kept
    one = np.uint64(1)
    w = chunk_start[c_lo]
    for c in range(c_lo, c_hi):
        a, b = chunk_start[c], chunk_start[c + 1]
        r0 = c << shift
        nr = min(size, n_rows - r0)
        fill[:nr + 1] = 0
        for p in range(a, b):
            fill[row[p] + 1] += 1
        for j in range(nr):
            fill[j + 1] += fill[j]
        for p in range(a, b):
            j = row[p]
            q = fill[j]
            fill[j] = q + 1
            col = indices[p]
            lcol[q] = col
            m = mode[col]
            if m >= LAST:
                ldata[q] = data[p]
            if m == LAST:
                lrank[q] = ranks[p]
        # fill[j] is now where row j ends
        q0 = 0
        for j in range(nr):
            for q in range(q0, fill[j]):
                col = lcol[q]
                word = col >> 6
                bit = one << np.uint64(col & 63)
                new = (bits[word] & bit) == 0
                bits[word] |= bit
                words[word >> 6] |= one << np.uint64(word & 63)
                m = mode[col]
                if m == ANY:
                    continue
                if m == COUNT:
                    value[col] = 1.0 if new else value[col] + 1.0
                elif m == LAST:
                    if new or lrank[q] > best[col]:
                        value[col] = ldata[q]
                        best[col] = lrank[q]
                elif not new:  # VALUE
                    return w, r0 + j
                else:
                    value[col] = ldata[q]
            q0 = fill[j]
            start = w
            for high in range(len(words)):
                y = words[high]
                words[high] = 0
                while y:
                    word = (high << 6) + trailing_zeros(y)
                    y &= y - one
                    x = bits[word]
                    bits[word] = 0
                    while x:
                        col = (word << 6) + trailing_zeros(x)
                        x &= x - one
                        indices[w] = col
                        data[w] = value[col]
                        w += 1
            row_len[r0 + j] = w - start
    return w, -1


@compiled
def move_down(indices: np.ndarray, data: np.ndarray, src: int, dst: int, n: int) -> None:
    """Move ``n`` entries from ``src`` to ``dst <= src`` (overlap allowed)."""
    for i in range(n):
        indices[dst + i] = indices[src + i]
        data[dst + i] = data[src + i]
