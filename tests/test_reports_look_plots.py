"""What a reader sees in the study reports: labels that say what was measured, legible numbers in figures,
suppressed cells that look suppressed, and no text drawn over other text."""

from __future__ import annotations

import itertools

import numpy as np
from matplotlib.colors import to_rgb

from nordfed.reports import PlpResults, coefficient_plot, km_plot, plp_report, risk_group_table, roc_plot
from nordfed.reports.plots import Chart


# ------------------------------------------------------------------------------------------ helpers
def _luminance(color) -> float:
    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(c) for c in to_rgb(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast_on_white(color) -> float:
    """WCAG contrast ratio of ``color`` against white (4.5 is the minimum for small text)."""
    return 1.05 / (_luminance(color) + 0.05)


def _drawn_texts(chart: Chart) -> list:
    """Every text the reader sees: titles, axis and tick labels (of ticks in view), legends, annotations."""
    out = list(chart.figure.texts)
    for ax in chart.figure.axes:
        out += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            out += [t.label1 for t in axis.get_major_ticks() if min(lo, hi) <= t.get_loc() <= max(lo, hi)]
        if ax.get_legend() is not None:
            out += [ax.get_legend().get_title(), *ax.get_legend().get_texts()]
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def _overlaps(chart: Chart) -> list[tuple[str, str]]:
    """Pairs of visible texts whose drawn boxes intersect (by more than a pixel each way)."""
    chart.figure.canvas.draw()  # lay the figure out at its own resolution before measuring
    renderer = chart.figure.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _drawn_texts(chart)]
    out = []
    for (a, ba), (b, bb) in itertools.combinations(boxes, 2):
        w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
        h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
        if w > 1 and h > 1:
            out.append((a, b))
    return out


def _curve(s_end: float, n: int = 40) -> dict:
    t = np.arange(1, n + 1) * 9.0
    s = np.linspace(1.0, s_end, n)
    return {"times": t, "survival": s, "ci_lower": s - 0.02, "ci_upper": np.minimum(s + 0.02, 1.0)}


# ------------------------------------------------------------------------------------------ tables
def test_risk_group_suppressed_at_a_site_is_not_shown_as_absent():
    # the study runner's shape: a site that withheld a group's persons reports n null with sites_suppressed 1
    withheld = {"group": 1, "n": None, "observed": None, "observed_rate": None, "sites_suppressed": 1}
    pooled = [{"group": 1, "bundle": "standard pathway", "risk_from": 0.0, "risk_to": 0.03, "n": None,
               "observed_rate": None, "expected_rate": None, "sites_suppressed": 2},
              {"group": 2, "bundle": "prehab", "risk_from": 0.03, "risk_to": 1.0, "n": 300, "observed_rate": 0.2,
               "expected_rate": 0.19, "sites_suppressed": 0}]
    per_site = {"DK": [withheld, {"n": 160, "observed_rate": 0.21, "sites_suppressed": 0}],
                "SE": [withheld, {"n": 140, "observed_rate": 0.19, "sites_suppressed": 0}]}
    table = risk_group_table(pooled, per_site)
    cells = table.cells(10)
    site_cols = [i for i, c in enumerate(table.columns) if c.key.startswith("site:")]
    for i in site_cols:
        assert cells[0][i].text == "suppr." and cells[0][i].suppressed  # was "–", read as "nobody there"
    assert [cells[1][i].text for i in site_cols] == ["21.0\u202f% (160)", "19.0\u202f% (140)"]
    assert any("does not mean the group is empty" in n for n in table.notes)
    # a group a site genuinely has nobody in is still "–"
    empty = risk_group_table(pooled[1:], {"DK": [{"n": 0, "observed_rate": None, "sites_suppressed": 0}]})
    assert empty.cells(10)[0][-1].text == "–"


# ------------------------------------------------------------------------------------------ apparent performance
def _plp(on: str) -> PlpResults:
    t = np.linspace(0, 1, 30)
    cal = [{"bin": i + 1, "n": 100, "observed": 4 + 3 * i, "expected": 4.5 + 3 * i} for i in range(5)]
    ev = {"n": 500, "n_events": 60, "auroc": 0.8, "auroc_ci": (0.75, 0.85), "calibration_slope": 1.1,
          "calibration_intercept": 0.0, "calibration_table": cal, "on": on, "test_fraction": 0.25 if on else 0}
    return PlpResults(internal=ev, internal_roc={"pooled": {"fpr": t, "tpr": np.sqrt(t), "auroc": 0.8}},
                      external={"DK (trained on SE)": {"auroc": 0.78}, "temporal: trained before 2019": {"auroc": 0.7}})


def _figure_titles(rep) -> list[str]:
    titles = []
    for s in rep.sections:
        for b in s.blocks:
            charts = [b.payload] if b.kind == "figure" else [c for c, _ in b.payload] if b.kind == "figures" else []
            titles += [ax.get_title() for c in charts for ax in c.figure.axes if ax.get_title()]
    return titles


def test_apparent_performance_is_labelled_on_every_number_and_figure():
    rep = plp_report(_plp("training rows"), "t")
    labels = {h.label: h for h in rep.headlines}
    assert "AUROC (apparent)" in labels and "optimistic" in labels["AUROC (apparent)"].detail
    assert "Calibration slope (apparent)" in labels
    titles = _figure_titles(rep)
    assert any(t.startswith("ROC") and "apparent" in t for t in titles), titles
    assert any(t.startswith("Calibration") and "apparent" in t for t in titles), titles
    html = rep.render()
    assert "pooled (apparent)" in html and 'class="note">On the persons the model was fitted on' in html
    # held-out evaluation keeps its labels
    held_out = plp_report(_plp("test part"), "t")
    assert "AUROC (internal)" in {h.label for h in held_out.headlines}
    assert not any("apparent" in t for t in _figure_titles(held_out))


def test_external_auroc_range_says_what_it_spans():
    rep = plp_report(_plp("test part"), "t")
    ext = next(h for h in rep.headlines if h.label == "AUROC across sites and time")  # a temporal split is in it
    assert ext.value == "0.700–0.780" and "(DK, temporal)" in ext.detail  # not three sites: one site and a period


# ------------------------------------------------------------------------------------------ Kaplan-Meier
def test_km_numbers_at_risk_are_dark_and_tied_to_their_curve():
    curves = {"I-II": _curve(0.93), "III": _curve(0.9), "IV": _curve(0.78)}
    at_risk = {"I-II": [4050, 3949, 3783], "III": [2778, 2648, None], "IV": [1513, 1386, 1187]}
    chart = km_plot(curves, at_risk_times=[0, 180, 360], at_risk=at_risk, legend_title="Stage")
    table_ax = chart.figure.axes[1]
    numbers = [t for t in table_ax.texts if t.get_text()[:1].isdigit() or t.get_text().startswith("<")]
    assert sorted(t.get_text() for t in numbers) == sorted(
        [str(v) if v is not None else "<10" for vals in at_risk.values() for v in vals])
    # palette orange (#E69F00) as small text on white has a contrast of 2.2: unreadable for many
    assert all(_contrast_on_white(t.get_color()) >= 4.5 for t in table_ax.texts)
    labels = [t.get_text() for t in table_ax.texts if not t.get_text()[:1].isdigit()]
    assert {"I-II", "III", "IV"} <= set(labels)
    # each row starts with a line in its curve's colour
    row_colors = {to_rgb(line.get_color()) for line in table_ax.lines}
    curve_colors = {to_rgb(line.get_color()) for line in chart.figure.axes[0].lines}
    assert row_colors == curve_colors and len(row_colors) == 3
    assert chart.figure.axes[0].get_legend().get_title().get_text() == "Stage"
    assert _overlaps(chart) == []


def test_km_axis_zooms_on_high_survival_and_says_so():
    high = km_plot({"a": _curve(0.9), "b": _curve(0.78)})
    ax = high.figure.axes[0]
    lo, _ = ax.get_ylim()
    assert 0.5 <= lo <= 0.75  # the curves fill the plot instead of the top fifth of it
    assert "axis starts at 0.7" in ax.get_ylabel() and any("starts at 0.7" in n for n in high.notes)
    low = km_plot({"a": _curve(0.3)})
    assert low.figure.axes[0].get_ylim()[0] == 0.0 and low.figure.axes[0].get_ylabel() == "Survival probability"
    fixed = km_plot({"a": _curve(0.9)}, ylim=(0.0, 1.0))
    assert fixed.figure.axes[0].get_ylim() == (0.0, 1.0)


# ------------------------------------------------------------------------------------------ forest and ROC
def test_forest_plot_prints_estimate_and_ci_beside_each_row():
    hr = {"age": 0.026, "stage_IV": 1.165, "male": 0.146}
    ci = {"age": (0.02, 0.032), "stage_IV": (0.997, 1.333), "male": (0.01, 0.285)}
    chart = coefficient_plot(hr, ci, odds_ratios=True, effect="Hazard ratio", title="Hazard ratios")
    texts = [t.get_text() for t in chart.figure.axes[0].texts]
    assert "Hazard ratio (95% CI)" in texts
    assert f"{np.exp(1.165):.2f} ({np.exp(0.997):.2f}–{np.exp(1.333):.2f})" in texts
    assert _overlaps(chart) == []


def test_roc_legend_carries_auroc_and_ci_without_overlaps():
    t = np.linspace(0, 1, 40)
    chart = roc_plot({"pooled": {"fpr": t, "tpr": t**0.3, "auroc": 0.846, "auroc_ci": (0.813, 0.879)},
                      "DK": {"fpr": t, "tpr": t**0.35, "auroc": 0.848, "auroc_ci": (0.796, 0.9)}})
    legend = [x.get_text() for x in chart.figure.axes[0].get_legend().get_texts()]
    assert "pooled — AUROC 0.846 (0.813–0.879)" in legend and "DK — AUROC 0.848 (0.796–0.900)" in legend
    assert _overlaps(chart) == []


# ------------------------------------------------------------------------------------------ header
def test_sites_left_out_are_named_in_the_header():
    from nordfed.reports import ReportMetadata, StudyReport

    rep = StudyReport("t", metadata=ReportMetadata(sites=["DK", "SE"], sites_left_out=["NO"]))
    rep.add_section("A").add_text("x")
    header = rep.render().split("</header>")[0]
    assert "<dt>Left out</dt><dd>NO</dd>" in header
    plain = StudyReport("t", metadata=ReportMetadata(sites=["DK", "SE"]))
    plain.add_section("A").add_text("x")
    assert "Left out" not in plain.render()


def test_odds_ratios_of_normalised_covariates_state_their_scale():
    res = PlpResults(coefficients={"(Intercept)": -2.0, "CRP (milligram per liter)": 2.13, "dementia": 0.34},
                     normalised=True)
    html = plp_report(res, "t").render()
    assert "divided by their largest value" in html and "not one unit more" in html
    res.normalised = False
    assert "divided by their largest value" not in plp_report(res, "t").render()


def test_calibration_shows_how_wide_each_merged_bin_is():
    from nordfed.reports import calibration_plot

    # the CRC study's test part: deciles merged to three bins, the first holding 80 % of the persons
    table = [{"n": 1665, "observed": 78, "expected": 87.3, "risk_from": 0.0, "risk_to": 0.141},
             {"n": 210, "observed": 35, "expected": 38.8, "risk_from": 0.141, "risk_to": 0.257},
             {"n": 210, "observed": 106, "expected": 92.2, "risk_from": 0.257, "risk_to": 1.0}]
    chart = calibration_plot(table, title="Calibration, internal validation")
    ax = chart.figure.axes[0]
    spans = [c for c in ax.collections if c.get_label() == "predicted risk range of the bin"]
    assert len(spans) == 1
    segments = spans[0].get_segments()
    assert [tuple(np.round(s[:, 0], 3)) for s in segments][:2] == [(0.0, 0.141), (0.141, 0.257)]
    assert segments[2][1, 0] == ax.get_xlim()[1]  # the open-ended top bin ends at the axis, not at 100 %
    assert _overlaps(chart) == []


def test_coefficient_bars_have_a_legend_entry_per_colour():
    from matplotlib.colors import to_hex

    from nordfed.reports import plots

    chart = coefficient_plot({"age": 0.4, "albumin": -0.3}, truth={"age": 0.5, "albumin": -0.2})
    legend = chart.figure.legends[0]
    entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)}
    assert set(entries) == {"estimate, raises the risk", "estimate, lowers the risk", "ground truth"}
    # each entry in the colour its bars are drawn in (one "estimate" entry showed only the first bar's)
    assert to_hex(entries["estimate, raises the risk"].get_facecolor()) == to_hex(plots.PALETTE[5])
    assert to_hex(entries["estimate, lowers the risk"].get_facecolor()) == to_hex(plots.PALETTE[0])
    assert coefficient_plot({"age": 0.4, "albumin": -0.3}).figure.legends  # without truth markers too
