"""Leave-one-site-out validation of a PLP study keeps the held-out sites it could validate when one cannot be (a
refusal, too few rows), and the report says which one and why."""

from __future__ import annotations

import numpy as np
import pytest

from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from nordfed.privacy.disclosure import DisclosurePolicy
from nordfed.studies.plp import OUTCOME, _leave_one_site_out
from nordfed.studies.report import _external
from test_lasso_support import simulated

COLS = ["c0", "c1", "c3", "b0", "b2"]


def _federation(sizes: dict[str, int]) -> InProcessFederation:
    df, _ = simulated(sum(sizes.values()), seed=5)
    df = df.rename(columns={"y": OUTCOME})
    cuts = np.cumsum([0, *sizes.values()])
    frames = {s: df.iloc[a:b].reset_index(drop=True) for s, a, b in zip(sizes, cuts[:-1], cuts[1:], strict=True)}
    return InProcessFederation.from_frames(frames, DisclosurePolicy(min_cell_count=10))


def test_the_report_shows_the_sites_it_could_hold_out_and_says_why_not_the_others() -> None:
    fed = _federation({"A": 1500, "B": 1200, "C": 900})
    res = _leave_one_site_out(fed, COLS, None, lam=0.01, alpha=1.0)
    assert all("evaluation" in r for r in res.values())
    res["C"] = {"trained_on": ["A", "B"], "error": "evaluating at C: C: refused: too few rows"}
    rows, rocs, notes = _external({"external": res})
    assert set(rocs) == {"A", "B"} and list(rows) == ["A (trained on B, C)", "B (trained on A, C)"]
    assert notes == ["C held out (trained on A, B): not available: evaluating at C: C: refused: too few rows"]


def test_when_no_site_can_be_held_out_the_study_says_why_for_each() -> None:
    # B is too small to train on alone (its outcome classes are below the minimum cell count) or to validate on
    fed = _federation({"A": 1500, "B": 14})
    with pytest.raises(AlgorithmError) as exc:
        _leave_one_site_out(fed, COLS, None, lam=0.01, alpha=1.0)
    assert "held out A: training on B: " in exc.value.message and "held out B: " in exc.value.message

