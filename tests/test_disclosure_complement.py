"""Complementary suppression: cells that partition a released total never give a small count away by subtraction.

Property tests draw random tables (numpy seeds; hypothesis is not a dependency) and check the rule's promises."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nordfed.privacy.disclosure import (
    DisclosurePolicy,
    hidden_spans,
    suppress_cells_of_total,
    suppress_part,
    suppress_steps,
)


def _short(total: np.ndarray, m: int) -> bool:
    return bool(((total > 0) & (total < m)).any())


def _table(rng: np.random.Generator, m: int) -> np.ndarray:
    """Cells x counts with many zeros, small and large counts mixed."""
    k, c = int(rng.integers(1, 9)), int(rng.integers(1, 4))
    kind = rng.choice(3, size=(k, c), p=[0.25, 0.3, 0.45])
    return np.where(kind == 0, 0, np.where(kind == 1, rng.integers(1, m, (k, c)), rng.integers(m, 8 * m, (k, c))))


def test_two_small_cells_get_a_complementary_cell() -> None:
    # 3 and 4 both withheld left 50 and 30 released: the total minus those was 7, below the minimum
    out = suppress_cells_of_total({"a": 50, "b": 3, "c": 4, "d": 30}, DisclosurePolicy())
    assert out == {"a": 50, "b": None, "c": None, "d": None}


def test_several_counts_per_cell_and_the_hidden_argument() -> None:
    pol = DisclosurePolicy()
    # events 7 in "b": the smallest cell with events joins it, not the empty-of-events "a"
    out = suppress_cells_of_total({"a": (0, 15), "b": (7, 90), "c": (40, 60), "d": (25, 400)}, pol)
    assert out == {"a": (0, 15), "b": None, "c": None, "d": (25, 400)}
    # a cell withheld for another reason (a rare label's rows) counts as hidden from the start
    assert suppress_cells_of_total({"x": 40, "y": 60, "rest": 3}, pol, hidden=["rest"]) == \
        {"x": None, "y": 60, "rest": None}
    with pytest.raises(ValueError, match="strategy"):
        suppress_cells_of_total({"a": 1}, pol, "largest")


def test_adjacent_keeps_hidden_groups_contiguous() -> None:
    pol = DisclosurePolicy()
    # (events, non-events) per ordered group: groups 0 and 1 hold 3 and 4 events, 7 together
    cells = {0: (3, 170), 1: (4, 160), 2: (17, 181), 3: (62, 136)}
    out = suppress_cells_of_total(cells, pol, "adjacent")
    assert [k for k, v in out.items() if v is None] == [0, 1, 2]
    assert hidden_spans(list(cells.values()), [v is None for v in out.values()], pol) == [(0, 2)]


@pytest.mark.parametrize("strategy", ["smallest", "adjacent"])
@pytest.mark.parametrize("m", [3, 10, 25])
def test_random_tables_leave_no_small_remainder(strategy: str, m: int) -> None:
    pol = DisclosurePolicy(min_cell_count=m)
    rng = np.random.default_rng(m)
    for _ in range(400):
        vals = _table(rng, m)
        out = suppress_cells_of_total({i: tuple(map(int, r)) for i, r in enumerate(vals)}, pol, strategy)
        hidden = np.array([out[i] is None for i in range(len(vals))])
        primary = ((vals > 0) & (vals < m)).any(axis=1)
        assert not (primary & ~hidden).any()  # no small cell released
        if not primary.any():
            assert not hidden.any()  # nothing small, nothing hidden
            continue
        released = {i: out[i] for i in range(len(vals)) if not hidden[i]}
        assert all(out[i] == tuple(vals[i]) for i in released)
        # the total minus the released cells: 0 or at least the minimum, unless every cell is hidden
        assert hidden.all() or not _short(vals[hidden].sum(axis=0), m)
        if strategy == "adjacent":
            spans = hidden_spans(vals, hidden, pol)
            covered = np.zeros(len(vals), bool)
            for a, b in spans:
                assert not _short(vals[a:b + 1].sum(axis=0), m)  # each span may be released on its own
                assert hidden[a:b + 1].all() and not covered[a:b + 1].any()
                covered[a:b + 1] = True
            # every hidden cell lies in a span unless the whole table's total falls short
            assert (covered == hidden).all() or (hidden.all() and _short(vals.sum(axis=0), m))


def test_no_cells_nothing_to_hide() -> None:
    # a site with an empty table (no observation periods): nothing released, nothing hidden
    assert suppress_cells_of_total({}, DisclosurePolicy()) == {}
    assert hidden_spans([], [], DisclosurePolicy()) == []


@pytest.mark.parametrize("m", [2, 5, 10])
def test_attrition_chains_leave_no_small_step_between_released_counts(m: int) -> None:
    rng = np.random.default_rng(m)
    for _ in range(400):
        k = int(rng.integers(1, 7))
        removed = np.where(rng.random(k) < 0.5, rng.integers(0, m, k), rng.integers(m, 5 * m, k))
        end = int(rng.integers(0, 20 * m))
        chain = (end + np.r_[0, np.cumsum(removed)])[::-1].tolist()  # each step keeps part of the one before
        out = suppress_steps(chain, DisclosurePolicy(min_cell_count=m))
        shown = [(i, v) for i, v in enumerate(out) if v is not None]
        assert all(v == chain[i] and (v == 0 or v >= m) for i, v in shown)
        for (i, a), (j, b) in itertools.pairwise(shown):
            # first against last is released elsewhere anyway (cohort size, population rows)
            assert a - b == 0 or a - b >= m or (i, j) == (0, len(chain) - 1)
        assert (out[0] is None) == (0 < chain[0] < m) and (out[-1] is None) == (0 < chain[-1] < m)
        if all(d == 0 or d >= m for d in -np.diff(chain)) and not any(0 < v < m for v in chain):
            assert out == chain  # nothing small: nothing withheld


def test_a_part_of_a_released_total_passes_on_both_sides() -> None:
    pol = DisclosurePolicy(min_cell_count=10)
    assert suppress_part(95, 100, pol) is None and suppress_part(5, 100, pol) is None
    assert suppress_part(90, 100, pol) == 90 and suppress_part(100, 100, pol) == 100 and suppress_part(0, 100, pol) == 0
