"""The PLP report's demographic summary: observed vs expected outcome rate by age group and sex, as a table and a
figure, with withheld groups shown as withheld and merged age groups as one rate over all of them.

The end-to-end check runs the one-year mortality study on two small synthetic sites (3000 persons each, the sites
tests/test_study_cli.py uses; about 110 persons in the test part, so the sites merge and withhold cells).
"""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from matplotlib.collections import LineCollection

from nordfed.reports.group_tables import demographic_table
from nordfed.reports.prediction_plots import demographic_plot

STUDIES = Path(__file__).resolve().parents[1] / "studies"
SYN = {"sites": ["DK", "SE"], "persons": 3000, "seed": 5}
NB = "\u202f"


def _row(group: str, n: int | None, events: int | None, expected: float | None, sites_suppressed: int = 0,
         events_suppressed: int = 0, span: list[str] | None = None, n_full: int | None = None) -> dict[str, Any]:
    """A row as :func:`nordfed.fed.evaluation.pooled_table` makes it (rates over the sites that released them)."""
    full = n if n_full is None else n_full
    released = events is not None and not span
    return {"group": group, "n": n, "observed": events, "expected": expected,
            "observed_rate": events / full if released else None,
            "expected_rate": expected / full if released else None,
            "sites_suppressed": sites_suppressed, "sites_events_suppressed": events_suppressed, "span": span}


# <50 and 50-59 released only together; every site withheld 70-79 and sex "U"; one site withheld its men's outcomes
DEMO = {"age_group": [_row("<50", 40, None, None, events_suppressed=2, span=["<50", "50-59"]),
                      _row("50-59", 120, None, None, events_suppressed=2, span=["<50", "50-59"]),
                      _row("60-69", 300, 21, 24.0),
                      _row("70-79", None, None, None, sites_suppressed=2, events_suppressed=2),
                      _row("80+", 210, 40, 35.5)],
        "sex": [_row("female", 330, 30, 31.0), _row("male", 340, 28, 29.5, events_suppressed=1, n_full=300),
                _row("U", None, None, None, sites_suppressed=2, events_suppressed=2)]}
SPANS = {"age_group": [{"groups": ["<50", "50-59"], "n": 160, "observed": 6, "expected": 7.2, "observed_rate": 6 / 160,
                        "expected_rate": 7.2 / 160, "sites_suppressed": 0}]}


# ------------------------------------------------------------------------------------------ table
def test_table_shows_merged_withheld_and_partial_groups_as_the_risk_groups_do() -> None:
    t = demographic_table(DEMO, SPANS)
    assert [c.label for c in t.columns] == ["Characteristic", "Group", "Persons", "Outcomes", "Observed", "Expected"]
    text = [[c.text for c in row] for row in t.cells(10)]
    assert text == [
        ["Age group", "<50", "40", "merged", "merged", "merged"],
        ["", "50-59", "120", "merged", "merged", "merged"],
        ["", "<50 to 50-59 together", "160", "6", f"3.8{NB}%", f"4.5{NB}%"],
        ["", "60-69", "300", "21", f"7.0{NB}%", f"8.0{NB}%"],
        ["", "70-79", "suppr.", "suppr.", "suppr.", "suppr."],  # withheld everywhere: neither 0 nor "<10"
        ["", "80+", "210", "40", f"19.0{NB}%", f"16.9{NB}%"],
        ["Sex", "female", "330", "30", f"9.1{NB}%", f"9.4{NB}%"],
        ["", "male", "340", "≥28†", f"9.3{NB}%", f"9.8{NB}%"],  # the rates of the 300 persons released in full
        ["", "U", "suppr.", "suppr.", "suppr.", "suppr."]]
    cells = t.cells(10)
    assert all(c.suppressed for c in cells[4][2:]) and "merged" in cells[0][3].css
    assert "<50 to 50-59 together" in cells[0][3].title
    notes = " ".join(t.notes)
    assert "complementary suppression" in notes and "does not mean zero" in notes and "lower bound" in notes
    assert "rates of a group marked † are those of the sites that released it" in notes


def test_persons_withheld_at_a_site_inside_a_merged_span_say_nothing_of_rates() -> None:
    rows = [_row("<50", 12, None, None, sites_suppressed=1, events_suppressed=2, span=["<50", "50-59"]),
            _row("50-59", 50, None, None, events_suppressed=2, span=["<50", "50-59"])]
    t = demographic_table({"age_group": rows}, SPANS)
    assert [c.text for c in t.cells()[0]][2:] == ["≥12†", "merged", "merged", "merged"]
    assert any("lower bound" in n for n in t.notes) and not any("marked †" in n for n in t.notes)


def test_table_without_withheld_cells_has_no_suppression_notes() -> None:
    t = demographic_table({"sex": [_row("female", 330, 30, 31.0), _row("male", 340, 28, 29.5)]})
    assert [[c.text for c in row] for row in t.cells()][1] == ["", "male", "340", "28", f"8.2{NB}%", f"8.7{NB}%"]
    assert not any(c.suppressed for row in t.cells() for c in row)
    assert len(t.notes) == 1 and "mean predicted risk" in t.notes[0]


# ------------------------------------------------------------------------------------------ figure
def _series(ax: Any, label: str) -> np.ndarray:
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return np.asarray(line.get_ydata(), float)


def test_figure_draws_spans_over_their_groups_and_leaves_withheld_groups_out() -> None:
    chart = demographic_plot(DEMO, SPANS, min_cell_count=10)
    assert chart.size[0] > 600 and chart.png.startswith(b"\x89PNG")
    age, sex = chart.figure.axes
    assert [t.get_text() for t in age.get_xticklabels()] == ["<50", "50-59", "60-69", "70-79", "80+"]
    assert [t.get_text() for t in sex.get_xticklabels()] == ["female", "male†", "U"]
    obs, exp = _series(age, "observed"), _series(age, "expected (mean predicted risk)")
    # the merged groups and the withheld one have no point of their own: gaps, not zeros
    assert np.isnan(obs[[0, 1, 3]]).all() and np.isnan(exp[[0, 1, 3]]).all()
    assert obs[[2, 4]] == pytest.approx([21 / 300, 40 / 210]) and exp[2] == pytest.approx(24 / 300)
    # the span's rate is one bar over both its groups
    bars = [seg for c in age.collections if isinstance(c, LineCollection) for seg in c.get_segments()
            if len(seg) == 2 and seg[0][1] == seg[1][1]]
    over = sorted((round(s[0][0], 2), round(s[1][0], 2), round(s[0][1], 4)) for s in bars)
    assert over == [(-0.3, 1.3, round(6 / 160, 4)), (-0.3, 1.3, round(7.2 / 160, 4))]
    assert [t.get_text() for t in age.texts] == ["merged", "suppr."]
    assert [t.get_text() for t in sex.texts] == ["suppr."]
    assert _series(sex, "observed")[2] != _series(sex, "observed")[2]  # "U" is NaN
    assert "70-79" in chart.suppressed[0] and "not zero" in chart.suppressed[0] and "U" in chart.suppressed[1]
    assert chart.alt.startswith("Observed vs expected by age group and sex.")
    assert "<50 to 50-59 together observed 3.8 %, expected 4.5 %" in chart.alt and "withheld: 70-79" in chart.alt
    assert any("†" in n for n in chart.notes)


def test_figure_of_age_groups_only_and_nothing_to_draw() -> None:
    chart = demographic_plot({"age_group": DEMO["age_group"]}, SPANS, "By age")
    assert len(chart.figure.axes) == 1 and chart.alt.startswith("By age.") and "Sex" not in chart.alt
    with pytest.raises(ValueError, match="no demographic table"):
        demographic_plot({"age_group": [], "sex": []})


# ------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    from nordfed.studies import run_study

    tmp = tmp_path_factory.mktemp("demographics")
    doc = yaml.safe_load((STUDIES / "crc_1y_mortality.yaml").read_text())
    doc["target"] = str(STUDIES / doc["target"])
    doc["synthetic"] = {**SYN, "dir": str(tmp / "sites")}
    doc["evaluation"] = {"leave_one_site_out": False}  # the internal (test part) evaluation is what is shown
    doc["model"] = {**doc["model"], "n_lambda": 5, "cv_folds": 2}
    doc["disclosure"]["min_cell_count"] = 5
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    results, html, js = run_study(path, tmp / "out" / "report.html")
    assert json.loads(js.read_text())["internal"]["demographics"]
    return results, html.read_text(encoding="utf-8")


def test_study_report_has_the_demographic_summary_after_the_risk_groups(small_run: tuple[dict, str]) -> None:
    results, html = small_run
    titles = [unescape(h) for h in re.findall(r'<section class="part" id="[^"]+">\s*<h2>([^<]+)</h2>', html)]
    assert titles.index("Demographic summary") == titles.index("Risk groups") + 1
    part = unescape(html.split('id="demographic-summary"')[1].split("<section")[0])
    assert "on the test part, pooled over sites" in part
    assert 'alt="Observed vs expected by age group and sex, internal validation.' in part
    assert "Demographic summary, internal validation" in part
    ev = results["internal"]
    for name, label in (("age_group", "Age group"), ("sex", "Sex")):
        assert f">{label}</td>" in part
        for row in ev["demographics"][name]:
            assert f">{row['group']}</td>" in part
            if row["observed_rate"] is not None and not row["sites_events_suppressed"]:
                assert f">{100 * row['observed_rate']:.1f}{NB}%</td>" in part
    for sp in ev["demographic_spans"].get("age_group", []):
        first, last = sp["groups"]
        assert f">{first if first == last else f'{first} to {last}'} together</td>" in part
    withheld = [r for rows in ev["demographics"].values() for r in rows if r["observed"] is None and not r["span"]]
    assert bool(withheld) == ("suppr.</td>" in part)
