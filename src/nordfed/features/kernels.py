"""Compiled loops (numba) for covariate extraction.

Each kernel is one pass over the records where numpy needs several (a temporary array per step, and memory
traffic, not arithmetic, is the cost at tens of millions of records). All release the GIL, so the callers split
work between threads (by blocks of entries, or by chunks of matrix rows). Compiled on first use
(:func:`nordfed.jit.compiled`).
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

    A chunk is copied into buffers small enough to stay in the core's cache and put in (row, column) order by two
    counting sorts there, by column and then (stably) by row, so repeats are neighbours. A bitmap of each row's
    columns, read back bit by bit, took 1.4x the CPU at a million rows (its loops end on data-dependent
    branches; these run a known number of times). The output never overtakes the chunk being read (merging
    only shrinks rows), so it is written in place."""
    size = 1 << shift
    n_cols = len(mode)
    big = 0
    for c in range(c_lo, c_hi):
        big = max(big, chunk_start[c + 1] - chunk_start[c])
    lcol = np.empty(big, dtype=np.int32)
    lrow = np.empty(big, dtype=np.int32)
    ldata = np.empty(big, dtype=np.float64)
    lrank = np.empty(big if len(ranks) else 0, dtype=np.int64)
    by_col = np.empty(big, dtype=np.int32)
    order = np.empty(big, dtype=np.int32)
    at_col = np.zeros(n_cols + 1, dtype=np.int32)
    at_row = np.zeros(size + 1, dtype=np.int32)
    w = chunk_start[c_lo]
    for c in range(c_lo, c_hi):
        a, n = chunk_start[c], chunk_start[c + 1] - chunk_start[c]
        r0 = c << shift
        nr = min(size, n_rows - r0)
        at_col[:] = 0
        at_row[:nr + 1] = 0
        for i in range(n):
            col = indices[a + i]
            r = row[a + i]
            lcol[i] = col
            lrow[i] = r
            at_col[col + 1] += 1
            at_row[r + 1] += 1
            m = mode[col]
            if m >= LAST:
                ldata[i] = data[a + i]
            if m == LAST:
                lrank[i] = ranks[a + i]
        for j in range(n_cols):
            at_col[j + 1] += at_col[j]
        for j in range(nr):
            at_row[j + 1] += at_row[j]
        for i in range(n):
            q = at_col[lcol[i]]
            at_col[lcol[i]] = q + 1
            by_col[q] = i
        for q in range(n):
            i = by_col[q]
            s = at_row[lrow[i]]
            at_row[lrow[i]] = s + 1
            order[s] = i
        # at_row[j] is now where row j ends in ``order``
        for j in range(nr):
            start = w
            prev = -1
            best = np.int64(0)  # LAST: the rank of the value kept
            for s in range(at_row[j - 1] if j else 0, at_row[j]):
                i = order[s]
                col = lcol[i]
                m = mode[col]
                if col != prev:
                    prev = col
                    indices[w] = col
                    data[w] = 1.0 if m <= COUNT else ldata[i]
                    if m == LAST:
                        best = lrank[i]
                    w += 1
                elif m == COUNT:
                    data[w - 1] += 1.0
                elif m == LAST:
                    if lrank[i] > best:
                        data[w - 1] = ldata[i]
                        best = lrank[i]
                elif m == VALUE:
                    return w, r0 + j
            row_len[r0 + j] = w - start
    return w, -1


@compiled
def move_down(indices: np.ndarray, data: np.ndarray, src: int, dst: int, n: int) -> None:
    """Move ``n`` entries from ``src`` to ``dst <= src`` (overlap allowed)."""
    for i in range(n):
        indices[dst + i] = indices[src + i]
        data[dst + i] = data[src + i]
