"""Grouped tables released by the sites leave no small count to be found by subtraction from the site's totals.

The demo's leak: DK released its test part's 744 persons / 86 outcomes, and groups 3-4 with 396 / 79, so groups
1-2 held 7 outcomes. Now withheld groups are merged with neighbours (complementary suppression) and released as
spans; these tests check the sites' own answers, the pooled sums against pandas and the report's table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logit

from nordfed.fed.evaluation import evaluate, pooled_table
from nordfed.fed.protocol import InProcessFederation
from nordfed.fed.risk_groups import risk_groups
from nordfed.privacy.disclosure import DisclosurePolicy
from nordfed.reports.group_tables import risk_group_table
from test_lasso_support import simulated

M = 10
CUTS = [0.1, 0.3, 0.6]
MODEL = {"covariates": ["x"], "coef": [1.0], "intercept": 0.0}
# (persons, outcomes) per risk group and site: A and B are the demo's DK and NO (groups 1-2 hold 7 and 7
# outcomes), C has one small group in the middle, D none
SITES = {"A": [(177, 3), (171, 4), (198, 17), (198, 62)], "B": [(173, 2), (163, 5), (164, 13), (147, 46)],
         "C": [(171, 12), (186, 3), (162, 14), (175, 48)], "D": [(150, 11), (150, 20), (150, 30), (150, 60)]}


def _frame(groups: list[tuple[int, int]], seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    bounds = [0.01, *CUTS, 0.99]
    parts = []
    for i, (n, ev) in enumerate(groups):
        p = rng.uniform(bounds[i] + 0.005, bounds[i + 1] - 0.005, n)
        parts.append(pd.DataFrame({"x": logit(p), "y": (np.arange(n) < ev).astype(float), "group": i,
                                   "age": rng.integers(50, 95, n), "sex": rng.choice(["F", "M"], n)}))
    return pd.concat(parts, ignore_index=True).sample(frac=1, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def frames() -> dict[str, pd.DataFrame]:
    return {s: _frame(g, i) for i, (s, g) in enumerate(SITES.items())}


@pytest.fixture(scope="module")
def fed(frames: dict[str, pd.DataFrame]) -> InProcessFederation:
    return InProcessFederation.from_frames(frames, DisclosurePolicy(min_cell_count=M))


def _safe(v: float | None) -> bool:
    return v is None or v == 0 or v >= M


def _check_table(rows: list[dict], spans: list[dict], total_n: int, total_events: int) -> int:
    """Every released number passes, and the totals less the released cells and spans leave 0 or >= M."""
    for r in rows:
        assert _safe(r["n"]) and _safe(r["events"])
        if r["n"] is not None and r["events"] is not None:
            assert _safe(r["n"] - r["events"])
    in_span = set()
    for s in spans:
        a, b = s["groups"]
        assert _safe(s["n"]) and _safe(s["events"]) and _safe(s["n"] - s["events"])
        assert all(rows[i]["events"] is None for i in range(a, b + 1))
        in_span.update(range(a, b + 1))
        # the span's persons less its groups' released persons: withheld persons, 0 or >= M
        assert _safe(s["n"] - sum(rows[i]["n"] or 0 for i in range(a, b + 1)))
    left_n = total_n - sum(r["n"] or 0 for r in rows) - sum(
        s["n"] - sum(rows[i]["n"] or 0 for i in range(s["groups"][0], s["groups"][1] + 1)) for s in spans)
    left_events = total_events - sum(r["events"] or 0 for r in rows) - sum(s["events"] for s in spans)
    assert _safe(left_n) and _safe(left_events)
    return left_events


def test_no_outcome_count_is_left_for_subtraction(fed: InProcessFederation, frames: dict) -> None:
    params = {"model": MODEL, "outcome": "y"}
    totals = fed.run("nordfed.eval.scores", params)
    released = fed.run("nordfed.eval.groups", {**params, "cutoffs": CUTS})
    for site, r in released.items():
        assert totals[site]["events"] == frames[site].y.sum()
        left = _check_table(r["groups"], r.get("spans", []), totals[site]["n"], totals[site]["events"])
        # nothing is unexplained: every outcome is in a released group or a released span
        assert left == 0, site
        assert all(row["n"] == n for row, (n, _) in zip(r["groups"], SITES[site], strict=True))  # persons shown
    assert [s["groups"] for s in released["A"]["spans"]] == [[0, 2]]
    assert [(s["n"], s["events"]) for s in released["A"]["spans"]] == [(546, 24)]
    assert [s["groups"] for s in released["C"]["spans"]] == [[1, 2]] and released["D"]["spans"] == []


def test_federated_risk_groups_equal_pandas_on_the_released_cells(fed: InProcessFederation, frames: dict) -> None:
    rg = risk_groups(fed, MODEL, "y", cutoffs=CUTS)
    pooled = pd.concat(frames.values(), ignore_index=True)
    by_group = pooled.groupby("group").agg(n=("y", "size"), ev=("y", "sum"))
    p = expit(pooled.x)
    assert [r["n"] for r in rg.pooled] == by_group.n.tolist()  # persons per group exact, every site released them
    assert all(r["sites_suppressed"] == 0 for r in rg.pooled)
    # A and B merge groups 1-3, C groups 2-3: the finest common coarsening is groups 1-3, with exact sums
    (span,) = rg.spans["pooled"]
    inside = pooled.group <= 2
    assert span["groups"] == [1, 3] and span["n"] == inside.sum() and span["observed"] == pooled.y[inside].sum()
    assert span["expected"] == pytest.approx(p[inside].sum())
    assert [r["span"] for r in rg.pooled] == [[1, 3]] * 3 + [None]
    assert all(r["observed"] is None and r["observed_rate"] is None for r in rg.pooled[:3])  # null, not 0
    assert rg.pooled[3]["observed"] == by_group.ev[3] and rg.pooled[3]["expected"] == pytest.approx(p[~inside].sum())
    for site, f in frames.items():
        assert span["per_site"][site]["observed"] == f.y[f.group <= 2].sum()
        own = {tuple(s["groups"]): s["observed"] for s in rg.spans["per_site"][site]}
        want = {"A": {(1, 3): f.y[f.group <= 2].sum()}, "B": {(1, 3): f.y[f.group <= 2].sum()},
                "C": {(2, 3): f.y[f.group.isin([1, 2])].sum()}, "D": {}}
        assert own == want[site]
        assert [r["n"] for r in rg.per_site[site]] == f.groupby("group").size().tolist()
    d = rg.to_dict()
    assert d["per_site"]["A"][0]["observed"] is None and d["spans"]["per_site"]["A"][0]["observed"] == 24


def test_hostile_cut_offs_and_labels_release_nothing_below_the_minimum() -> None:
    # cut-offs that isolate 3, 2 and 1 rows, age cuts around a few persons, three persons of a rare sex label
    df, _ = simulated(600, seed=9)
    df.loc[:2, "sex"] = "U"
    model = {"covariates": ["c0", "b0"], "coef": [0.9, 0.6], "intercept": -0.8}
    p = np.sort(expit(-0.8 + 0.9 * df.c0 + 0.6 * df.b0).to_numpy())
    mid = len(p) // 2
    cuts = [float(p[2] + p[3]) / 2, float(p[mid] + p[mid + 1]) / 2, float(p[mid + 2] + p[mid + 3]) / 2,
            float(p[-2] + p[-1]) / 2]
    ages = sorted(df.age)
    fed = InProcessFederation.from_frames({"A": df}, DisclosurePolicy(min_cell_count=M))
    params = {"model": model, "outcome": "y", "cutoffs": cuts, "by": {"age_group": "age", "sex": "sex"},
              "age_cuts": [ages[4] + 1, ages[-3]]}
    r = fed.run("nordfed.eval.groups", params)["A"]
    n, events = len(df), int(df.y.sum())
    assert r["groups"][0]["n"] is None and r["groups"][1]["n"] is None  # 3 rows withheld, and a neighbour
    _check_table(r["groups"], r.get("spans", []), n, events)
    _check_table(r["age_group"]["table"], r["age_group"].get("spans", []), n, events)
    assert "U" not in r["sex"]["labels"] and r["sex"]["withheld"]
    # the 3 withheld rows count as a hidden cell: F or M is withheld too, so total - F - M is not 3
    _check_table(r["sex"]["table"], [], n, events)


def test_count_by_sex_with_three_other_persons() -> None:
    frame = pd.DataFrame({"sex": ["female"] * 40 + ["male"] * 57 + ["other"] * 3})
    out = InProcessFederation.from_frames({"A": frame}).run("nordfed.count", {})["A"]
    assert out["persons"] == 100 and out["by_sex"]["other"] is None
    left = out["persons"] - sum(v for v in out["by_sex"].values() if v is not None)
    assert left == 0 or left >= M  # was 100 - 40 - 57 = 3
    assert out["by_sex"] == {"female": None, "male": 57, "other": None}


def test_pooled_spans_join_overlapping_site_spans() -> None:
    def rows(cells: list[tuple[int | None, int | None]]) -> list[dict]:
        return [{"n": n, "events": e, "expected": None if e is None else e + 0.5} for n, e in cells]

    site_a = rows([(100, None), (100, None), (100, 30), (100, 40)])
    site_b = rows([(100, 20), (None, None), (100, None), (100, 50)])
    spans_a = [{"groups": [0, 1], "n": 200, "events": 12, "expected": 13.0}]
    spans_b = [{"groups": [1, 2], "n": 150, "events": 15, "expected": 16.0}]
    table, spans = pooled_table([site_a, site_b], [spans_a, spans_b])
    assert [s["groups"] for s in spans] == [[0, 2]]
    assert (spans[0]["n"], spans[0]["observed"], spans[0]["expected"]) == (200 + 100 + 100 + 150, 12 + 30 + 20 + 15,
                                                                           13.0 + 30.5 + 20.5 + 16.0)
    assert [r["span"] for r in table] == [[0, 2]] * 3 + [None]
    assert [r["n"] for r in table] == [200, 100, 200, 200] and table[1]["sites_suppressed"] == 1
    assert table[3]["observed"] == 90 and table[0]["observed"] is None


def test_evaluate_age_groups_in_order_with_exact_spans(frames: dict) -> None:
    # a few outcomes among the under-50s at one site: its age groups merge upwards into a span
    frames = {s: f.copy() for s, f in frames.items()}
    a = frames["A"]
    a.loc[a.index[a.y == 1][:4], "age"] = 45
    a.loc[a.index[a.y == 0][:100], "age"] = 45
    fed = InProcessFederation.from_frames(frames, DisclosurePolicy(min_cell_count=M))
    ev = evaluate(fed, MODEL, "y", sex_column=None)
    age = ev.demographics["age_group"]
    assert [r["group"] for r in age] == ["<50", "50-59", "60-69", "70-79", "80+"]  # was sorted as text
    pooled = pd.concat(frames.values(), ignore_index=True)
    band = np.searchsorted([50, 60, 70, 80], pooled.age, side="right")
    assert [r["n"] for r in age] == [int((band == i).sum()) for i in range(5)]
    (span,) = ev.demographic_spans["age_group"]
    first, last = (["<50", "50-59", "60-69", "70-79", "80+"].index(g) for g in span["groups"])
    inside = (band >= first) & (band <= last)
    assert first == 0 and span["observed"] == pooled.y[inside].sum() and span["n"] == inside.sum()
    for i, r in enumerate(age):
        if not first <= i <= last:
            assert r["observed"] == pooled.y[band == i].sum()


def test_report_shows_persons_per_group_and_each_span_once(fed: InProcessFederation) -> None:
    rg = risk_groups(fed, MODEL, "y", cutoffs=CUTS)
    table = risk_group_table(rg.pooled, rg.per_site, spans=rg.spans)
    cells = table.cells(M)
    keys = [c.key for c in table.columns]
    text = [{k: c.text for k, c in zip(keys, row, strict=True)} for row in cells]
    assert [r["group"] for r in text] == ["1", "2", "3", "1–3", "4"]
    assert [r["n"] for r in text][:3] == [f"{n}" for n in (r["n"] for r in rg.pooled[:3])]
    assert text[0]["rate"] == "merged" and text[0]["site:A"] == "merged (177)"
    assert text[1]["site:C"] == "merged (186)" and text[0]["site:C"].endswith("(171)")  # C's group 1 is its own
    together = text[3]
    assert together["bundle"] == "groups 1–3 together" and together["site:A"] == "4.4\u202f% (546)"
    assert together["n"] == f"{rg.spans['pooled'][0]['n']:,}".replace(",", "\u202f")
    assert any("complementary suppression" in n for n in table.notes)


def test_missing_age_is_its_own_group_not_the_oldest(frames: dict) -> None:
    frames = {s: f.copy() for s, f in frames.items()}
    a = frames["A"].astype({"age": float})
    a.loc[a.index[:30], "age"] = np.nan  # 30 persons whose age the site does not know
    frames["A"] = a
    fed = InProcessFederation.from_frames(frames, DisclosurePolicy(min_cell_count=M))
    age = evaluate(fed, MODEL, "y", sex_column=None).demographics["age_group"]
    assert [r["group"] for r in age] == ["<50", "50-59", "60-69", "70-79", "80+", "unknown"]
    pooled = pd.concat(frames.values(), ignore_index=True)
    assert age[4]["n"] == int((pooled.age >= 80).sum()) and age[5]["n"] == 30
    # no site without a missing age: no "unknown" row
    fed = InProcessFederation.from_frames({s: f for s, f in frames.items() if s != "A"},
                                          DisclosurePolicy(min_cell_count=M))
    assert evaluate(fed, MODEL, "y", sex_column=None).demographics["age_group"][-1]["group"] == "80+"
