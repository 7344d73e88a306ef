"""Prediction figures drawn from the sites' released aggregates: ROC curves, calibration (decile table and smooth
curves) and the prediction distribution. Shared drawing (Chart, palette, curve colours) lives in
:mod:`nordfed.reports.plots`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter

from nordfed.reports.group_tables import DEMOGRAPHIC_LABELS, span_label
from nordfed.reports.plots import (
    INK,
    PALETTE,
    POOLED,
    Chart,
    _curve_items,
    _fmt_ci,
    _is_pooled,
    _shorten,
    _style,
    curve_colours,
    new_figure,
)
from nordfed.reports.tables import as_mapping, pick


def _rounded(value: float | None) -> str:
    """A statistic as a screen reader should say it (0.837, not 0.8373994701173149)."""
    return "n/a" if value is None else f"{value:.3f}"


# ------------------------------------------------------------------------------------------ ROC
def roc_plot(curves: Sequence[Any] | Mapping[str, Any], title: str = "ROC curves",
             pooled: str | None = "pooled") -> Chart:
    """One line per site/setting from ``fpr``/``tpr`` arrays; the legend carries AUROC (95% CI).

    A curve whose label equals ``pooled`` is drawn thick and dark.
    """
    items = _curve_items(curves)
    if not items:
        raise ValueError("roc_plot: no curves given")
    with _style():
        fig = new_figure(5.6, 5.0)
        ax = fig.add_subplot()
        ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="#888888", label="chance")
        for c, color in zip(items, curve_colours([c["label"] for c in items], pooled), strict=True):
            fpr, tpr = np.asarray(c["fpr"], float), np.asarray(c["tpr"], float)
            if fpr.shape != tpr.shape:
                raise ValueError(f"roc_plot: curve {c['label']!r} has {fpr.size} fpr but {tpr.size} tpr values")
            auc = pick(c, "auroc", "auc")
            ci = pick(c, "auroc_ci", "ci")
            lab = str(c["label"]) + (f" — AUROC {_fmt_ci(auc, ci)}" if auc is not None else "")
            is_pooled = _is_pooled(c["label"], pooled)
            ax.plot(fpr, tpr, lw=2.4 if is_pooled else 1.4, color=color, label=_shorten(lab, 70),
                    zorder=3 if is_pooled else 2, drawstyle="default")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 − specificity (false positive rate)",
               ylabel="Sensitivity (true positive rate)", title=title, aspect="equal")
        ax.legend(loc="lower right", frameon=True, framealpha=0.9)
    alt = "ROC curves: " + "; ".join(f"{c['label']} AUROC {_rounded(pick(c, 'auroc', 'auc'))}" for c in items)
    return Chart.from_figure(fig, alt)


# ------------------------------------------------------------------------------------------ calibration
def _wilson(k: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def calibration_points(table: Sequence[Any]) -> list[dict[str, Any]]:
    """Per bin: expected and observed proportions (``None`` when suppressed) and a Wilson 95% CI.

    Rows carry ``n``, ``observed`` (outcome count) and ``expected`` (sum of predicted risks), or the
    rates directly as ``observed_rate``/``expected_rate``.
    """
    pts = []
    for i, r in enumerate(as_mapping(x) for x in table):
        n, obs, exp = pick(r, "n"), pick(r, "observed", "events"), pick(r, "expected")
        o_rate, e_rate = pick(r, "observed_rate"), pick(r, "expected_rate")
        if o_rate is None and n and obs is not None:
            o_rate = obs / n
        if e_rate is None and n and exp is not None:
            e_rate = exp / n
        suppressed = n is None or (o_rate is None and obs is None) or e_rate is None
        lo = hi = None
        if not suppressed and n and obs is not None:
            lo, hi = _wilson(obs, n)
        pts.append({"bin": pick(r, "bin", "group", default=i + 1), "n": n, "expected": None if suppressed else e_rate,
                    "observed": None if suppressed else o_rate, "lower": lo, "upper": hi, "suppressed": suppressed,
                    "risk_from": pick(r, "risk_from"), "risk_to": pick(r, "risk_to")})
    return pts


def calibration_plot(table: Sequence[Any], intercept: float | None = None, slope: float | None = None,
                     e_avg: float | None = None, ici: float | None = None, title: str = "Calibration",
                     min_cell_count: int = 10, smooth: Mapping[str, Any] | None = None) -> Chart:
    """Observed vs expected risk by bin with the diagonal; suppressed bins become gaps and are named.

    ``smooth`` (``predicted``, ``observed``, optional ``ici``, ``bandwidth``) adds a smooth calibration curve.
    """
    pts = calibration_points(table)
    shown = [p for p in pts if not p["suppressed"]]
    hidden = [p for p in pts if p["suppressed"]]
    sx, sy = (np.asarray(smooth.get(k) or [], float) for k in ("predicted", "observed")) if smooth else ([], [])
    with _style():
        fig = new_figure(5.6, 5.2)
        ax = fig.add_subplot()
        top = max([0.05, *(p["expected"] for p in shown), *(p["upper"] or p["observed"] for p in shown), *sx, *sy])
        top = min(1.0, top * 1.08)
        ax.plot([0, top], [0, top], ls="--", lw=0.9, color="#888888", label="perfect calibration")
        # None breaks the line, so a suppressed bin is a visible gap, not an interpolation
        xs = [p["expected"] if not p["suppressed"] else np.nan for p in pts]
        ys = [p["observed"] if not p["suppressed"] else np.nan for p in pts]
        ax.plot(xs, ys, color=PALETTE[0], lw=1.2, marker="o", ms=5, label="observed by risk bin")
        err = [(p["expected"], p["observed"], p["lower"], p["upper"]) for p in shown if p["lower"] is not None]
        if err:
            x, y, lo, hi = map(np.asarray, zip(*err, strict=True))
            # at an observed rate of 0 or 1 the Wilson bound equals it up to rounding, which may come out negative
            yerr = [np.clip(y - lo, 0.0, None), np.clip(hi - y, 0.0, None)]
            ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=PALETTE[0], alpha=0.55, lw=1, capsize=2,
                        label="95% CI (Wilson)")
        spans = [p for p in shown if p["risk_from"] is not None and p["risk_to"] is not None]
        if spans:
            # merged deciles make wide bins: a point alone hides that it stands for 0-14 % predicted risk
            ax.hlines([p["observed"] for p in spans], [p["risk_from"] for p in spans],
                      [min(p["risk_to"], top) for p in spans], color=PALETTE[0], alpha=0.35, lw=3.5, zorder=1,
                      label="predicted risk range of the bin")
        if len(sx):
            h = smooth.get("bandwidth")
            ax.plot(sx, sy, color=POOLED, lw=1.8, zorder=4,
                    label="smoothed" + (f" (kernel, bandwidth {h:.2f} logit)" if h else ""))
        bits = []
        if intercept is not None:
            bits.append(f"intercept {intercept:.2f}")
        if slope is not None:
            bits.append(f"slope {slope:.2f}")
        if e_avg is not None:
            bits.append(f"E-avg {e_avg:.3f}")
        if ici is not None:
            bits.append(f"ICI {ici:.3f}")
        if smooth and smooth.get("ici") is not None:
            bits.append(f"ICI (smoothed) {smooth['ici']:.3f}")
        ax.set_title(title + ("\n" + ", ".join(bits) if bits else ""))
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="Expected risk (mean predicted)", ylabel="Observed risk",
               aspect="equal")
        if hidden:
            ax.text(0.98, 0.03, f"{len(hidden)} bin(s) suppressed (n<{min_cell_count}): gaps",
                    transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="#9a3412")
        ax.legend(loc="upper left", frameon=True, framealpha=0.9)
    supp = []
    if hidden:
        names = ", ".join(str(p["bin"]) for p in hidden)
        supp.append(f"Bins {names} were suppressed by disclosure control (fewer than {min_cell_count} persons or "
                     f"outcomes) and are left as gaps; they are not zero.")
    alt = f"Calibration plot, {len(shown)} bins shown, {len(hidden)} suppressed" + (
        f", {', '.join(bits)}" if bits else "")
    return Chart.from_figure(fig, alt, suppressed=supp)


def smooth_calibration_plot(curves: Sequence[Any] | Mapping[str, Any], title: str = "Smooth calibration",
                            pooled: str | None = "pooled") -> Chart:
    """Smooth calibration curves (``predicted``, ``observed``, optional ``ici``) of the pooled data and each
    site, in the sites' ROC colours; the legend carries each curve's smoothed ICI."""
    items = [c for c in _curve_items(curves) if len(c.get("predicted") or [])]
    if not items:
        raise ValueError("smooth_calibration_plot: no curve has points")
    colours = curve_colours([c["label"] for c in _curve_items(curves)], pooled)
    colour = {str(c["label"]): k for c, k in zip(_curve_items(curves), colours, strict=True)}
    top = min(1.0, 1.08 * max(max(max(c["predicted"]), max(c["observed"])) for c in items))
    with _style():
        fig = new_figure(5.6, 5.2)
        ax = fig.add_subplot()
        ax.plot([0, top], [0, top], ls="--", lw=0.9, color="#888888", label="perfect calibration")
        for c in items:
            is_pooled = _is_pooled(c["label"], pooled)
            lab = str(c["label"]) + (f" — ICI {c['ici']:.3f}" if c.get("ici") is not None else "")
            # a curve over a sliver of risk (one risk predicted for all) would be an invisible dash
            dot = max(c["predicted"]) - min(c["predicted"]) < 0.02 * top
            ax.plot(c["predicted"], c["observed"], color=colour[str(c["label"])], lw=2.4 if is_pooled else 1.4,
                    zorder=3 if is_pooled else 2, label=_shorten(lab, 60), marker="o" if dot else None,
                    markevery=[len(c["predicted"]) // 2], ms=5)
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="Predicted risk", ylabel="Observed risk (smoothed)",
               title=title, aspect="equal")
        ax.legend(loc="upper left", frameon=True, framealpha=0.9)
    alt = f"{title}: " + "; ".join(f"{c['label']} ICI {_rounded(c.get('ici'))}" for c in items)
    return Chart.from_figure(fig, alt)


_RISK_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995,
               0.998, 0.999)


def _percent(p: float) -> str:
    return f"{100 * p:.3g}\u202f%"


def _risk_axis(axis: Any, lo: float, hi: float) -> None:
    """Ticks of a logit axis labelled as risks, at least a ninth of the axis apart so labels do not touch."""
    gap, kept = (hi - lo) / 9, []
    for t in _RISK_TICKS:
        x = float(np.log(t / (1 - t)))
        if lo <= x <= hi and (not kept or x - kept[-1] >= gap):
            kept.append(x)
    if len(kept) < 3:  # a narrow range (one risk for everyone, say) falls between the round risks
        kept = list(np.linspace(lo, hi, 5)[1:-1])
    axis.set_major_locator(FixedLocator(kept))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _percent(1 / (1 + math.exp(-v)))))


def prediction_distribution_plot(dist: Mapping[str, Any], title: str = "Prediction distribution",
                                 labels: tuple[str, str] = ("with the outcome", "without the outcome")) -> Chart:
    """Densities of the predicted risk (logit axis labelled in risk) for rows with and without the outcome, each
    scaled to area 1, and under them box summaries (5–25–50–75–95 % quantiles) like PatientLevelPrediction's
    box plots."""
    x = np.asarray(dist["logit"], float)
    classes = [(k, lab, colour) for k, lab, colour in (("events", labels[0], PALETTE[5]),
                                                       ("non_events", labels[1], PALETTE[0]))
               if (dist.get("n") or {}).get(k)]
    if not classes:
        raise ValueError("prediction_distribution_plot: no rows in either class")
    dens = {k: np.asarray(dist[k], float) / max(np.trapezoid(dist[k], x), 1e-300) for k, _, _ in classes}
    # the axis covers where either density is above 1 % of its peak: the smoothed tails run on long after
    shown = np.any([d >= 0.01 * d.max() for d in dens.values()], axis=0)
    lo, hi = x[shown][0], x[shown][-1]
    with _style():
        fig = new_figure(6.2, 4.6)
        ax, axb = fig.subplots(2, 1, sharex=True, height_ratios=[4.0, 1.0])
        for k, lab, colour in classes:
            n = dist["n"][k]
            ax.fill_between(x, dens[k], color=colour, alpha=0.18, lw=0)
            ax.plot(x, dens[k], color=colour, lw=1.8, label=f"{lab} (n = {n:,.0f})")
        ax.set(ylabel="Density (area 1 per class)", title=title, ylim=(0, None))
        ax.legend(loc="upper right", frameon=True, framealpha=0.9)
        q = dist.get("quantiles") or {}
        rows = [(k, lab, colour) for k, lab, colour in classes if q.get(k)]
        for i, (k, _, colour) in enumerate(rows[::-1]):
            v = np.log(np.asarray(q[k], float) / (1 - np.asarray(q[k], float)))  # 5, 25, 50, 75, 95 %
            axb.hlines(i, v[0], v[-1], color=colour, lw=1.2)
            axb.add_patch(_box(v[1], v[3], i, colour))
            axb.vlines(v[2], i - 0.28, i + 0.28, color=INK, lw=1.6)
        axb.set_yticks(range(len(rows)), [lab for _, lab, _ in rows[::-1]])
        axb.set_ylim(-0.6, len(rows) - 0.4)
        axb.grid(axis="y", visible=False)
        axb.set_xlim(lo, hi)
        _risk_axis(axb.xaxis, lo, hi)
        axb.set_xlabel("Predicted risk (logit scale)")
    notes = ["Boxes: 25–75 % of the class's predicted risks, line: median, whiskers: 5–95 %."]
    alt = f"{title}: " + "; ".join(
        f"{lab} median predicted risk {_percent(q[k][2])}" for k, lab, _ in classes if q.get(k))
    return Chart.from_figure(fig, alt, notes)


def _box(x0: float, x1: float, y: float, colour: str) -> Rectangle:
    return Rectangle((x0, y - 0.28), x1 - x0, 0.56, facecolor=colour, alpha=0.35, edgecolor=colour, lw=1.2)


# ------------------------------------------------------------------------------------------ demographics
def _demographic_points(rows: Sequence[Any],
                        spans: Sequence[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What a demographic panel draws: one point per group with released rates, or per span of merged groups
    over their positions ``x0``..``x1``; and the groups (or spans) with nothing released, placed alike."""
    rows = [as_mapping(r) for r in rows]
    labels = [str(pick(r, "group")) for r in rows]
    points, hidden, covered = [], [], set()
    for sp in (as_mapping(s) for s in spans):
        a, b = (labels.index(str(g)) for g in sp["groups"])
        covered.update(range(a, b + 1))
        at = {"label": span_label(sp["groups"]), "x0": a, "x1": b}
        if sp.get("observed_rate") is None or sp.get("expected_rate") is None:
            hidden.append(at)
        else:
            points.append({**at, **_rates(sp, not sp.get("sites_suppressed"))})
    for i, r in enumerate(rows):
        if i in covered:
            continue  # drawn once, over all its groups, from the span's own sums
        at = {"label": labels[i], "x0": i, "x1": i}
        if pick(r, "span") or pick(r, "observed_rate") is None or pick(r, "expected_rate") is None:
            if pick(r, "n") != 0:  # an empty group has no rate to draw and nothing withheld
                hidden.append(at)
            continue
        complete = not pick(r, "sites_suppressed") and not pick(r, "sites_events_suppressed")
        points.append({**at, **_rates(r, complete)})
    return sorted(points, key=lambda p: p["x0"]), sorted(hidden, key=lambda p: p["x0"])


def _rates(r: Mapping[str, Any], complete: bool) -> dict[str, Any]:
    """Observed and expected rate, with a Wilson interval when every site released the group (otherwise the
    persons behind the rate are not known)."""
    n, obs = pick(r, "n"), pick(r, "observed", "events")
    lo, hi = _wilson(obs, n) if complete and n and obs is not None else (None, None)
    return {"observed": pick(r, "observed_rate"), "expected": pick(r, "expected_rate"), "lower": lo, "upper": hi,
            "partial": not complete}


def _demographic_panel(ax: Any, rows: Sequence[Any], spans: Sequence[Any], name: str,
                       ordered: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Observed (with Wilson CI) and expected rates by group; lines join neighbouring single groups only, so a
    gap is left where a group is withheld and a merged span is a bar over its groups. Returns what
    :func:`_demographic_points` does."""
    points, hidden = _demographic_points(rows, spans)
    labels = [str(pick(as_mapping(r), "group")) for r in rows]
    single = {p["x0"]: p for p in points if p["x0"] == p["x1"]}
    xs = np.arange(len(labels), dtype=float)
    for key, colour, style, marker in (("observed", PALETTE[0], "-", "o"), ("expected", POOLED, "--", "D")):
        ys = [single[i][key] if i in single else np.nan for i in range(len(labels))]
        # a line between the sexes would read as a trend
        ax.plot(xs, ys, color=colour, ls=style if ordered else "none", lw=1.2, marker=marker,
                ms=5 if marker == "o" else 4,
                label="observed" if key == "observed" else "expected (mean predicted risk)")
        for p in points:
            if p["x0"] != p["x1"]:  # a merged span: one rate over all its groups, not a value of any one
                ax.hlines(p[key], p["x0"] - 0.3, p["x1"] + 0.3, color=colour, ls=style, lw=2.2, zorder=3)
    err = [p for p in points if p["lower"] is not None]
    if err:
        x = np.asarray([(p["x0"] + p["x1"]) / 2 for p in err])
        y = np.asarray([p["observed"] for p in err])
        yerr = [np.clip(y - [p["lower"] for p in err], 0.0, None), np.clip([p["upper"] for p in err] - y, 0.0, None)]
        ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=PALETTE[0], alpha=0.55, lw=1, capsize=2,
                    label="95% CI (Wilson)")
    for p in points:
        if p["x0"] != p["x1"]:
            ax.annotate("merged", ((p["x0"] + p["x1"]) / 2, max(p["observed"], p["expected"], p["upper"] or 0.0)),
                        xytext=(0, 6), textcoords="offset points", ha="center", va="bottom", fontsize=8, color=INK)
    for h in hidden:  # a gap with a word in it: an empty stretch of axis alone would read as "no data"
        ax.annotate("suppr.", ((h["x0"] + h["x1"]) / 2, 0), xytext=(0, 4), textcoords="offset points",
                    ha="center", va="bottom", fontsize=8, color="#9a3412")
    partial = {i for p in points if p["partial"] for i in range(p["x0"], p["x1"] + 1)}
    ax.set_xticks(xs, [lab + ("†" if i in partial else "") for i, lab in enumerate(labels)])
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_xlabel(name)
    ax.grid(axis="x", visible=False)
    return points, hidden


def demographic_plot(demographics: Mapping[str, Sequence[Any]], spans: Mapping[str, Sequence[Any]] | None = None,
                     title: str = "Observed vs expected by age group and sex", min_cell_count: int = 10) -> Chart:
    """PatientLevelPrediction's demographic plot from ``Evaluation.demographics``: observed and expected outcome
    rate per group, a panel per table (age group, sex). The tables are margins (age over both sexes and sex over
    all ages): the sites release no age-by-sex cells.

    ``spans`` (``Evaluation.demographic_spans``): groups whose outcomes were released only together, drawn as one
    bar over the merged groups; groups with nothing released are left out and named, never drawn as 0.
    """
    tables = {k: list(v) for k, v in demographics.items() if v}
    if not tables:
        raise ValueError("demographic_plot: no demographic table given")
    spans = spans or {}
    with _style():
        fig = new_figure(max(4.2, 1.1 + 0.75 * sum(len(v) for v in tables.values())), 4.2)
        axes = fig.subplots(1, len(tables), sharey=True, squeeze=False,
                            width_ratios=[max(len(v), 2) for v in tables.values()])[0]
        drawn: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        for ax, (name, rows) in zip(axes, tables.items(), strict=True):
            label = DEMOGRAPHIC_LABELS.get(name, name.replace("_", " ").capitalize())
            drawn[label] = _demographic_panel(ax, rows, spans.get(name) or [], label, name == "age_group")
        top = max([0.05, *(max(p["upper"] or 0.0, p["observed"], p["expected"]) for pts, _ in drawn.values()
                           for p in pts)])
        axes[0].set_ylim(0, min(1.0, top * 1.25))
        axes[0].yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:.0f}\u202f%"))
        axes[0].set_ylabel("Outcome rate")
        axes[0].legend(loc="upper left", frameon=True, framealpha=0.9)
        fig.suptitle(title, fontsize=10.5)
    withheld = {k: ", ".join(h["label"] for h in hidden) for k, (_, hidden) in drawn.items() if hidden}
    supp = [f"{k}: {v} withheld by every site's disclosure control (fewer than {min_cell_count} persons or outcomes, "
            "or a neighbour's complement); left out, not zero." for k, v in withheld.items()]
    alt = f"{title}. " + " ".join(f"{k}: " + "; ".join([
        *(f"{p['label']}{' together' if p['x0'] != p['x1'] else ''} observed {100 * p['observed']:.1f} %, expected "
          f"{100 * p['expected']:.1f} %" for p in pts), *([f"withheld: {withheld[k]}"] if k in withheld else [])]) + "."
        for k, (pts, _) in drawn.items())
    notes = []
    if any("†" in t.get_text() for ax in axes for t in ax.get_xticklabels()):
        notes.append("† rates of the sites that released the group only; no interval is drawn for it.")
    return Chart.from_figure(fig, alt, notes, supp)
