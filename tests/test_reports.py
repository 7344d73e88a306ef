"""Report building blocks: cell formatting under disclosure control, table builders, plots and the HTML file."""

from __future__ import annotations

import base64
import io
import math
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from nordfed.fed.cox import CoxResult
from nordfed.fed.evaluation import Evaluation
from nordfed.reports import (
    SUPPRESSED,
    Chart,
    Column,
    LowerBound,
    StudyReport,
    attrition_table,
    calibration_plot,
    coefficient_plot,
    coefficient_table,
    cox_table,
    km_plot,
    risk_group_table,
    roc_plot,
    sites_side_by_side,
    validation_table,
)
from nordfed.reports.plots import _RATIO_TICKS, _axis_label, _spaced_ticks
from nordfed.reports.prediction_plots import calibration_points
from nordfed.reports.tables import format_cell

COUNT = Column("n", "n", "count")


def _texts(table, m=10):
    return [[c.text for c in row] for row in table.cells(m)]


# ------------------------------------------------------------------------------------------ cells
def test_suppressed_count_is_never_zero():
    assert format_cell(None, COUNT).text == "<10"
    assert format_cell(None, COUNT).suppressed
    assert format_cell(None, COUNT, min_cell_count=5).text == "<5"
    assert format_cell(0, COUNT).text == "0" and not format_cell(0, COUNT).suppressed
    assert format_cell(12345, COUNT).text == "12\u202f345"
    assert format_cell(float("nan"), COUNT).text == "–"  # not reported ≠ suppressed
    rate = Column("r", "rate", "percent")
    assert format_cell(SUPPRESSED, rate).text == "suppr." and format_cell(SUPPRESSED, rate).suppressed
    assert format_cell(None, rate).text == "–"
    assert format_cell(0.1234, rate).text == "12.3\u202f%"
    assert format_cell(LowerBound(82, 1), COUNT).text == "≥82†"
    assert format_cell(LowerBound(0, 3), COUNT).suppressed
    ci = Column("a", "AUROC", "estimate_ci")
    assert format_cell((0.71, 0.65, 0.77), ci).text == "0.710 (0.650 to 0.770)"
    assert format_cell((-0.5, None, None), ci).text == "−0.500"
    assert format_cell(0.0004, Column("p", "p", "pvalue")).text == "<0.001"
    assert format_cell((0.2, None), Column("x", "x", "rate_n")).text == "<10"
    with pytest.raises(ValueError, match="unknown kind"):
        Column("x", "x", "money")


# ------------------------------------------------------------------------------------------ tables
def test_attrition_removed_and_missing_vs_suppressed():
    t = attrition_table([{"step": "all", "persons": 1000}, {"step": "prior obs", "persons": 900, "outcomes": None},
                         {"step": "no prior outcome", "persons": 880, "outcomes": 75}])
    assert _texts(t) == [["all", "1\u202f000", "–", "–"], ["prior obs", "900", "100", "<10"],
                         ["no prior outcome", "880", "20", "75"]]


def test_sites_side_by_side_absent_suppressed_and_lower_bound():
    t = sites_side_by_side({"A": [{"sex": "F", "persons": 30}, {"sex": "M", "persons": None}],
                            "B": [{"sex": "F", "persons": 12}]}, "sex", "persons",
                           pooled=[{"sex": "F", "persons": 42}, {"sex": "M", "persons": 0, "sites_suppressed": 1}])
    assert [c.label for c in t.columns] == ["Sex", "A", "B", "Pooled"]
    assert _texts(t) == [["F", "30", "12", "42"], ["M", "<10", "–", "suppr."]]
    t2 = sites_side_by_side({"A": [{"k": 1, "v": 20}], "B": [{"k": 1, "v": None}]}, "k", "v",
                            pooled=[{"k": 1, "v": 20, "sites_suppressed": 1}])
    assert _texts(t2) == [["1", "20", "<10", "≥20†"]]
    assert any("lower bound" in n for n in t2.notes)


def test_risk_groups_pooled_suppression_hides_rates():
    pooled = [{"group": 1, "bundle": "usual care", "risk_from": 0, "risk_to": 0.05, "n": 0, "observed_rate": None,
               "expected_rate": 0.03, "sites_suppressed": 2},
              {"group": 2, "bundle": "call", "risk_from": 0.05, "risk_to": 1, "n": 300, "observed_rate": 0.1,
               "expected_rate": 0.09, "sites_suppressed": 0}]
    per_site = {"A": [{"n": None, "observed_rate": None}, {"n": 200, "observed_rate": 0.12}],
                "B": [{"n": None, "observed_rate": None}, {"n": 100, "observed_rate": 0.06}]}
    table = risk_group_table(pooled, per_site)
    rows = _texts(table)
    # a site's withheld persons may be a complementary cell of any size: "suppr.", not "<10"
    assert rows[0] == ["1", "usual care", "0.0–5.0\u202f%", "suppr.", "suppr.", "suppr.", "suppr.", "suppr."]
    assert not any("lower bound" in n for n in table.notes)  # no † shown, so no † footnote
    assert rows[1][3:] == ["300", "9.0\u202f%", "10.0\u202f%", "12.0\u202f% (200)", "6.0\u202f% (100)"]
    # one site suppressed: the count is a lower bound and the rates are the other site's, and the notes say so
    partial = [{**pooled[1], "n": 200, "observed_rate": 0.12, "expected_rate": 0.1, "sites_suppressed": 1}]
    table = risk_group_table(partial, {"A": [per_site["A"][1]], "B": [per_site["B"][0]]})
    assert _texts(table)[0][3:6] == ["≥200†", "10.0\u202f%", "12.0\u202f%"]
    assert any("those of the sites that released it" in n for n in table.notes)


def test_validation_table_takes_evaluation_dataclass_and_site_dicts():
    ev = Evaluation(n=500, n_events=60, auroc=0.75, auroc_se=0.03, auroc_ci=(0.69, 0.81), auprc=0.3, brier=0.1,
                    calibration_intercept=0.02, calibration_slope=0.95, ici=0.011, calibration_table=[],
                    per_site={"A": {"n": 300, "events": None, "brier": 0.1, "auroc": 0.7}})
    t = validation_table({"pooled": ev})
    row = dict(zip([c.label for c in t.columns], _texts(t)[0], strict=True))
    assert row["AUROC (95% CI)"] == "0.750 (0.690 to 0.810)"
    assert row["Outcomes"] == "60" and row["Cal. slope"] == "0.95" and row["ICI"] == "0.011"
    assert "E-avg" not in row  # a metric nobody reported gets no empty column
    site = validation_table(ev.per_site)
    assert _texts(site)[0][:4] == ["A", "300", "<10", "0.700"]


def test_cox_and_coefficient_tables():
    cox = CoxResult(covariates=["age", "stage"], coefficients={"age": 0.4, "stage": -0.2},
                    standard_errors={"age": 0.1, "stage": 0.05}, ci_lower={"age": 0.204, "stage": -0.298},
                    ci_upper={"age": 0.596, "stage": -0.102}, z={}, p_values={"age": 6e-5, "stage": 0.04},
                    log_likelihood=-100.0, iterations=4, concordance=0.66, n=400, events=120, ties="efron",
                    strata_by_site=False, variance=[])
    rows = _texts(cox_table(cox))
    assert rows[0] == ["age", "0.400", "0.100", f"{math.exp(0.4):.2f} ({math.exp(0.204):.2f} to "
                       f"{math.exp(0.596):.2f})", "<0.001"]
    assert rows[1][-1] == "0.040"
    t = coefficient_table({"(Intercept)": -2.0, "a": 0.1, "b": -0.9, "c": 0.0})
    assert [r[0] for r in _texts(t)] == ["b", "a"]
    assert _texts(t)[0][2] == f"{math.exp(-0.9):.2f}"
    assert t.notes == ["1 candidate covariate has a zero coefficient and is not shown."]


# ------------------------------------------------------------------------------------------ plots
def _png(chart: Chart) -> Image.Image:
    assert chart.png.startswith(b"\x89PNG")
    img = Image.open(io.BytesIO(chart.png))
    assert img.size == chart.size
    return img


def test_calibration_points_wilson_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    pts = calibration_points([{"bin": 1, "n": 120, "observed": 17, "expected": 15.2},
                              {"bin": 2, "n": None, "observed": None, "expected": None},
                              {"bin": 3, "n": 80, "observed": 0, "expected": 1.0}])
    lo, hi = proportion_confint(17, 120, method="wilson")
    assert pts[0]["observed"] == pytest.approx(17 / 120) and pts[0]["expected"] == pytest.approx(15.2 / 120)
    assert (pts[0]["lower"], pts[0]["upper"]) == pytest.approx((lo, hi), abs=1e-9)
    assert pts[1]["suppressed"] and pts[1]["observed"] is None
    assert pts[2]["observed"] == 0.0 and not pts[2]["suppressed"]  # a released zero is a real zero


def test_plots_render_pngs_and_name_suppression():
    t = np.linspace(0, 1, 50)
    roc = roc_plot({"pooled": {"fpr": t, "tpr": np.sqrt(t), "auroc": 0.8, "auroc_ci": (0.75, 0.85)},
                    "Site <A>": {"fpr": t, "tpr": t**0.7, "auroc": 0.7}})
    assert "pooled AUROC 0.8" in roc.alt
    table = [{"bin": i + 1, "n": 100, "observed": 5 + 3 * i, "expected": 4.0 + 3 * i} for i in range(10)]
    table[3] = {"bin": 4, "n": None, "observed": None, "expected": None}
    cal = calibration_plot(table, intercept=0.1, slope=0.9, ici=0.01)
    assert cal.suppressed and "Bins 4" in cal.suppressed[0] and "not zero" in cal.suppressed[0]
    km = km_plot({"g1": {"times": [1, 5, 9], "survival": [0.9, 0.8, 0.6], "ci_lower": [0.8, 0.7, 0.5],
                         "ci_upper": [0.95, 0.9, 0.7]}}, at_risk_times=[0, 5, 10], at_risk={"g1": [40, 25, None]})
    assert km.suppressed and "<10" in km.suppressed[0]
    coef = coefficient_plot({"x": 0.5, "y": -0.3, "z": 0.0}, ci={"x": (0.3, 0.7)}, truth={"x": 0.6},
                            odds_ratios=True)
    for chart in (roc, cal, km, coef):
        img = _png(chart)
        assert min(img.size) > 200
        assert chart.css_width == round(img.size[0] * 96 / 144)
    with pytest.raises(ValueError, match="numbers at risk"):
        km_plot({"g1": {"times": [1], "survival": [0.9]}}, at_risk_times=[0, 5], at_risk={"g1": [40]})
    with pytest.raises(ValueError, match="fpr"):
        roc_plot([{"label": "a", "fpr": [0, 1], "tpr": [0, 0.5, 1]}])
    with pytest.raises(ValueError, match="all coefficients are zero"):
        coefficient_plot({"a": 0.0})


def test_odds_ratio_ticks_keep_their_labels_apart():
    # the CRC study's odds ratios span about 0.5 to 9: 0.67 and 0.8, and 1.25 and 1.5, touched on that axis
    for lo, hi in ((0.45, 9.0), (0.2, 25.0), (0.75, 1.6)):
        candidates = [t for t in _RATIO_TICKS if lo <= t <= hi]
        ticks = _spaced_ticks(candidates, lo, hi)
        assert 1.0 in ticks and len(ticks) >= 3 and set(ticks) <= set(candidates)
        assert min(np.diff(np.log(ticks))) >= np.log(hi / lo) / 10, (lo, hi, ticks)


def test_axis_labels_keep_what_tells_covariates_apart():
    # the CRC study's two C-reactive protein values differ only in their unit, at the end of a long name
    crp = "measurement value (last), long term: C reactive protein [Mass/volume] in Serum or Plasma"
    labels = {_axis_label(f"{crp} ({unit})", 60) for unit in ("milligram per liter", "milligram per deciliter")}
    assert len(labels) == 2 and all(len(label) <= 60 and "C reactive" in label for label in labels)
    assert _axis_label("age group: 70 - 74", 60) == "age group: 70 - 74"
    assert _axis_label("condition occurrence, short term: Heart failure", 60) == "condition, short: Heart failure"
    long = "x" * 100
    assert _axis_label(long, 60) == "x" * 59 + "…"


# ------------------------------------------------------------------------------------------ HTML
class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.h2: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False if tag == "h2" else self._in_h2

    def handle_data(self, data):
        if self._in_h2 and data.strip():
            self.h2.append(data.strip())


HOSTILE = '<script>alert("x")</script>'
ATTR = '"><img src=x onerror=alert(1)>'


def _hostile_report() -> StudyReport:
    rep = StudyReport(f"Study {HOSTILE}", subtitle=ATTR,
                      metadata={"study": HOSTILE, "sites": [f"Site {ATTR}", "B"],
                                "algorithms": {HOSTILE: "1.0 (sha256:abc)"}})
    rep.add_headline("AUROC", "0.75", HOSTILE)
    s = rep.add_section(f"Cohort {HOSTILE}")
    s.add_text(f"First paragraph {HOSTILE}.\n\nSecond paragraph.")
    s.add_table(sites_side_by_side({f"Site {ATTR}": [{"concept": HOSTILE, "persons": None}],
                                    "B": [{"concept": HOSTILE, "persons": 0}]}, "concept", "persons"),
                caption=HOSTILE)
    s.add_figure(coefficient_plot({HOSTILE: 0.4, "b": -0.2}), caption=HOSTILE)
    rep.add_section("Second").add_note(ATTR)
    return rep


def test_html_escapes_hostile_strings_and_is_self_contained(tmp_path):
    html = _hostile_report().write(tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script" not in html and "onerror=alert(1)>" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    p = _Collect()
    p.feed(html)
    tags = [t for t, _ in p.tags]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    imgs = [a for t, a in p.tags if t == "img"]
    assert len(imgs) == 1 and imgs[0]["src"].startswith("data:image/png;base64,")
    assert base64.b64decode(imgs[0]["src"].split(",", 1)[1]).startswith(b"\x89PNG")
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from the network
    assert "@import" not in html and "url(" not in html


def test_html_sections_summary_and_suppressed_cells(tmp_path):
    rep = _hostile_report()
    html = rep.render()
    p = _Collect()
    p.feed(html)
    assert p.h2[:1] == ["Headline numbers"]
    assert f"Cohort {HOSTILE}" in p.h2 and "Second" in p.h2 and "Provenance" in p.h2
    ids = [a.get("id") for t, a in p.tags if t == "section" and a.get("id")]
    assert ids == ["cohort-script-alert-x-script", "second"]
    assert [a["href"] for t, a in p.tags if t == "a"] == ["#" + i for i in ids]
    # the suppressed cell is "<10" with the suppressed class, the released zero stays "0"
    assert re.search(r'<td class="num suppressed" title="[^"]*">&lt;10</td>', html)
    assert '<td class="num">0</td>' in html
    assert "This report contains 1 suppressed table cell." in html
    assert html.count('class="card"') == 1 and "Minimum cell count</th><td>10" in html


def test_write_is_atomic_and_checks_inputs(tmp_path):
    rep = StudyReport("x")
    with pytest.raises(ValueError, match="add a section first"):
        rep.add_text("orphan")
    s = rep.add_section("A")
    with pytest.raises(TypeError, match="Table"):
        s.add_table({"not": "a table"})
    with pytest.raises(ValueError, match="not a PNG"):
        s.add_figure(b"GIF89a")
    from nordfed.reports import Table

    s.add_table(Table([Column("a", "AUROC", "estimate_ci")], [{"a": "not a triple"}]))
    target = tmp_path / "r.html"
    with pytest.raises(ValueError):
        rep.write(target)
    assert list(tmp_path.iterdir()) == []  # no report and no temp file left behind
    with pytest.raises(FileNotFoundError, match="does not exist"):
        StudyReport("y").write(tmp_path / "missing" / "r.html")
    ok = StudyReport("z", metadata={"synthetic": True})
    ok.add_section("Only").add_text("hello")
    out = ok.write(target)
    assert out.stat().st_mode & 0o777 == 0o644
    assert "Synthetic data" in out.read_text(encoding="utf-8")
