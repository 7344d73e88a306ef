"""Study figures drawn with matplotlib's object API (no pyplot state, Agg canvas) and returned as PNG charts.

Each function takes plain data and returns a :class:`Chart`: PNG bytes, alt text and the notes the
report prints under the figure (e.g. which calibration bins were suppressed).
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter
from matplotlib.transforms import offset_copy

from nordfed.reports.tables import as_mapping, pick

#: Okabe-Ito: distinguishable with the common colour-vision deficiencies
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999")
POOLED = "#222222"
#: text colour for numbers printed in figures (dark enough for small text on white)
INK = "#1f2933"
DPI = 144
#: shown at 96 CSS px per inch, so the 144-dpi PNG is sharp on high-density screens and the figure keeps its size
CSS_PX_PER_INCH = 96
_RATIO_TICKS = (0.05, 0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0)
STYLE = {"font.size": 9.5, "axes.titlesize": 10.5, "axes.labelsize": 9.5, "legend.fontsize": 8.5,
         "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
         "grid.linewidth": 0.6, "font.family": "DejaVu Sans"}


@dataclass
class Chart:
    """A rendered figure: PNG bytes plus alt text and notes for the reader."""

    png: bytes
    alt: str = ""
    notes: list[str] = field(default_factory=list)
    #: disclosure-control remarks (what was suppressed and how it is shown), highlighted in the report
    suppressed: list[str] = field(default_factory=list)
    #: resolution the PNG was drawn at; sets its on-screen size (PNG bytes from elsewhere: use 96)
    dpi: int = DPI
    #: the matplotlib figure the PNG was drawn from (None for PNG bytes from elsewhere), kept so that what the
    #: reader sees (texts, their positions, colours) can be checked, not only the PNG's bytes
    figure: Figure | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_figure(cls, fig: Figure, alt: str = "", notes: Sequence[str] = (),
                    suppressed: Sequence[str] = ()) -> Chart:
        FigureCanvasAgg(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": "nordfed"})
        return cls(buf.getvalue(), alt, list(notes), list(suppressed), figure=fig)

    @property
    def size(self) -> tuple[int, int]:
        """Pixel width and height from the PNG header."""
        if self.png[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError("Chart.png is not a PNG image")
        return int.from_bytes(self.png[16:20], "big"), int.from_bytes(self.png[20:24], "big")

    @property
    def css_width(self) -> int:
        return round(self.size[0] * CSS_PX_PER_INCH / self.dpi)

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_bytes(self.png)
        return p


def new_figure(width: float = 6.0, height: float = 4.2, **kw: Any) -> Figure:
    import matplotlib

    with matplotlib.rc_context(STYLE):
        return Figure(figsize=(width, height), layout="constrained", **kw)


def _style() -> Any:
    import matplotlib

    return matplotlib.rc_context(STYLE)


def _fmt_ci(est: float | None, ci: Sequence[float | None] | None) -> str:
    if est is None:
        return ""
    if ci and all(c is not None for c in ci):
        return f"{est:.3f} ({ci[0]:.3f}–{ci[1]:.3f})"
    return f"{est:.3f}"


def _shorten(name: str, width: int = 48) -> str:
    """``name`` in at most ``width`` characters; a closing ``(…)`` (a unit, say) is kept whole when short, since
    it is what tells two similar names apart.

    >>> _shorten("measurement value: C reactive protein in Serum (milligram per liter)", 48)
    'measurement value: C reac… (milligram per liter)'
    """
    if len(name) <= width:
        return name
    cut = name.rfind(" (")
    tail = name[cut:] if cut > 0 and name.endswith(")") else ""
    if tail and len(tail) <= width // 2:
        return name[: width - len(tail) - 1].rstrip() + "…" + tail
    return name[: width - 1] + "…"


#: FeatureExtraction-style analysis names, shortened for axis labels (the tables keep the full names)
_SHORT_ANALYSES = (("measurement value (last)", "lab value"), ("condition occurrence", "condition"),
                   ("drug group exposure", "drug"), ("procedure occurrence", "procedure"),
                   ("visit concept count", "visits"))


def _axis_label(name: str, width: int) -> str:
    """A covariate's name for an axis: the analysis part shortened, so the concept and its unit fit.

    >>> _axis_label("measurement value (last), long term: C reactive protein [Mass/volume] in Serum (milligram per "
    ...             "liter)", 60)
    'lab value, long: C reactive protein i… (milligram per liter)'
    """
    head, sep, rest = name.partition(": ")
    if sep:
        for long, short in _SHORT_ANALYSES:
            if head.startswith(long):
                head = short + head[len(long):]
                break
        # LOINC's bracketed property ("[Mass/volume]") says nothing the unit does not
        rest = re.sub(r" \[[^\]]*\]", "", rest)
        name = f"{head.replace(', long term', ', long').replace(', short term', ', short')}: {rest}"
    return _shorten(name, width)


def _curve_items(curves: Sequence[Any] | Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"label": k, **as_mapping(v)} for k, v in curves.items()] if isinstance(curves, Mapping) \
        else [dict(as_mapping(c)) for c in curves]


def _is_pooled(label: Any, pooled: str | None) -> bool:
    return pooled is not None and str(label).lower() == pooled.lower()


def curve_colours(labels: Sequence[Any], pooled: str | None = "pooled") -> list[str]:
    """Colour of each curve: the pooled one dark, the others the palette in order, so a site has the same
    colour in every figure that draws the same set of curves.

    >>> curve_colours(["pooled", "DK", "NO"]) == [POOLED, PALETTE[0], PALETTE[1]]
    True
    """
    out, k = [], 0
    for lab in labels:
        if _is_pooled(lab, pooled):
            out.append(POOLED)
        else:
            out.append(PALETTE[k % len(PALETTE)])
            k += 1
    return out


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
    alt = "ROC curves: " + "; ".join(f"{c['label']} AUROC {pick(c, 'auroc', 'auc') or 'n/a'}" for c in items)
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
    alt = f"{title}: " + "; ".join(f"{c['label']} ICI {c.get('ici') or 'n/a'}" for c in items)
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


# ------------------------------------------------------------------------------------------ Kaplan-Meier
def _step(times: np.ndarray, values: np.ndarray, start: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    if times.size == 0 or times[0] > 0:
        return np.r_[0.0, times], np.r_[start, values]
    return times, values


def _survival_floor(items: list[dict[str, Any]]) -> float:
    """Lower end of the survival axis: 0, or a tenth below the lowest curve or band when all stay above 0.5.

    One-year survival after surgery lives between 0.75 and 1; on a 0-1 axis the groups' curves and their
    bands merge into one line at the top. CohortMethod's plots trim the axis the same way; the axis label says so.
    """
    lows = []
    for c in items:
        lo = pick(c, "ci_lower", "lower")
        vals = np.asarray(lo if lo is not None else c["survival"], float)
        lows.append(float(np.nanmin(vals)) if vals.size else 1.0)
    vmin = min(lows, default=0.0)
    return 0.0 if vmin < 0.5 else math.floor((vmin - 0.02) * 10) / 10


def km_plot(curves: Sequence[Any] | Mapping[str, Any], title: str = "Kaplan-Meier survival",
            at_risk_times: Sequence[float] | None = None, at_risk: Mapping[str, Sequence[int | None]] | None = None,
            time_label: str = "Time (days)", min_cell_count: int = 10,
            ylim: tuple[float, float] | None = None, legend_title: str | None = None) -> Chart:
    """Survival step curves with pointwise 95% bands (``times``, ``survival``, ``ci_lower``, ``ci_upper``).

    ``at_risk`` maps a curve label to its numbers at risk at ``at_risk_times`` (``None`` = suppressed);
    they are printed in a table under the plot. ``ylim`` None starts the axis at 0, or above it when every
    curve stays high (the axis label then names where it starts).
    """
    items = [{"label": k, **as_mapping(v)} for k, v in curves.items()] if isinstance(curves, Mapping) \
        else [dict(as_mapping(c)) for c in curves]
    if not items:
        raise ValueError("km_plot: no curves given")
    show_risk = bool(at_risk) and at_risk_times is not None
    with _style():
        rows = len(items) if show_risk else 0
        fig = new_figure(6.6, 4.4 + 0.22 * rows)
        if show_risk:
            ax, axr = fig.subplots(2, 1, sharex=True, height_ratios=[4.4, 0.45 + 0.22 * rows])
        else:
            ax, axr = fig.add_subplot(), None
        tmax = 0.0
        for k, c in enumerate(items):
            t = np.asarray(c["times"], float)
            s = np.asarray(c["survival"], float)
            color = PALETTE[k % len(PALETTE)]
            x, y = _step(t, s)
            ax.step(x, y, where="post", color=color, lw=1.6, label=_shorten(str(c["label"]), 60))
            lo, hi = pick(c, "ci_lower", "lower"), pick(c, "ci_upper", "upper")
            if lo is not None and hi is not None:
                xl, yl = _step(t, np.asarray(lo, float))
                _, yh = _step(t, np.asarray(hi, float))
                ax.fill_between(xl, yl, yh, step="post", color=color, alpha=0.15, lw=0)
            tmax = max(tmax, float(x.max()) if x.size else 0.0)
        floor = _survival_floor(items) if ylim is None else ylim[0]
        ax.set(ylim=ylim or (floor, 1.02), title=title,
               ylabel="Survival probability" + (f" (axis starts at {floor:g})" if floor > 0 else ""))
        ax.set_xlim(0, max(tmax, *(at_risk_times or [0])) * 1.02 or 1)
        ax.legend(loc="lower left", frameon=True, framealpha=0.9, title=legend_title)
        if axr is None:
            ax.set_xlabel(time_label)
        else:
            _at_risk_table(axr, items, at_risk_times, at_risk, min_cell_count, time_label)
    notes = ["Shaded bands: pointwise 95% confidence intervals."]
    if floor > 0:
        notes.append(f"The survival axis starts at {floor:g}, not 0.")
    supp = []
    if show_risk and any(v is None for vals in at_risk.values() for v in vals):
        supp.append(f"Numbers at risk below {min_cell_count} are suppressed and shown as <{min_cell_count}.")
    alt = "Kaplan-Meier curves for " + ", ".join(str(c["label"]) for c in items)
    return Chart.from_figure(fig, alt, notes, supp)


def _at_risk_table(axr: Any, items: list[dict[str, Any]], times: Sequence[float],
                   at_risk: Mapping[str, Sequence[int | None]], min_cell_count: int, time_label: str) -> None:
    """Numbers at risk under the curves, as lifelines' ``add_at_risk_counts`` prints them.

    The numbers are dark: palette colours such as orange are readable as lines but not as small text on white;
    a coloured line sample before each row's label ties the row to its curve.
    """
    axr.grid(False)
    for side in ("left", "top", "right", "bottom"):
        axr.spines[side].set_visible(side == "bottom")
    axr.set_yticks([])
    n = len(items)
    axr.set_ylim(-0.5, n - 0.5)
    axr.text(0.0, 1.0, "Number at risk", transform=axr.transAxes, fontsize=8.5, fontweight="bold",
             va="bottom", ha="left", color=INK)
    fig = axr.get_figure()
    for k, c in enumerate(items):
        vals = at_risk.get(str(c["label"]))
        if vals is None:
            continue
        if len(vals) != len(times):
            raise ValueError(f"km_plot: {len(vals)} numbers at risk for {c['label']!r} but {len(times)} times")
        y = n - 1 - k
        row = axr.get_yaxis_transform()  # x in axes fraction, y in data
        # offsets in points so the label clears the (centred) count printed at time 0
        axr.annotate(_shorten(str(c["label"]), 22), xy=(0, y), xycoords=row, xytext=(-34, 0),
                     textcoords="offset points", ha="right", va="center", fontsize=8, color=INK)
        axr.plot([0, 0], [y, y], transform=offset_copy(row, fig=fig, x=-25, units="points"), clip_on=False,
                 color=PALETTE[k % len(PALETTE)], lw=2.4, marker="_", ms=12, mew=2.4)
        for t, v in zip(times, vals, strict=True):
            axr.text(t, y, f"<{min_cell_count}" if v is None else f"{int(v)}", ha="center", va="center",
                     fontsize=8, color=INK)
    axr.set_xticks(list(times))
    axr.set_xlabel(time_label)


# ------------------------------------------------------------------------------------------ coefficients
def _spaced_ticks(ticks: list[float], lo: float, hi: float) -> list[float]:
    """Ratio ticks thinned outward from 1 so that neighbours are at least a tenth of the log axis apart (their
    labels would overlap otherwise).

    >>> _spaced_ticks([0.5, 0.67, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0], 0.4, 9.0)
    [0.67, 1.0, 1.5, 3.0, 5.0]
    """
    gap = np.log(hi / lo) / 10
    kept: list[float] = []
    for side in (sorted(t for t in ticks if t >= 1.0), sorted((t for t in ticks if t < 1.0), reverse=True)):
        last = 1.0 if 1.0 in ticks or not side else side[0]
        for t in side:
            if t == last or abs(np.log(t / last)) >= gap:
                kept.append(t)
                last = t
    return sorted(set(kept))


def _estimate_column(ax: Any, items: list[tuple[str, float]], ci: Mapping[str, tuple[float, float]],
                     f: Any, header: str) -> None:
    """Estimate and 95% CI printed right of each row, as forest plots in papers do: the reader gets the numbers
    without reading them off a log axis."""
    row = ax.get_yaxis_transform()  # x in axes fraction, y in data
    for i, (k, v) in enumerate(items):
        text = f"{f(v):.2f}" + (f" ({f(ci[k][0]):.2f}–{f(ci[k][1]):.2f})" if k in ci else "")
        ax.text(1.03, i, text, transform=row, ha="left", va="center", fontsize=8.5, color=INK)
    ax.text(1.03, len(items) - 0.4, f"{header} (95% CI)", transform=row, ha="left", va="bottom", fontsize=8.5,
            fontweight="bold", color=INK)


def coefficient_plot(coefficients: Mapping[str, float], ci: Mapping[str, tuple[float, float]] | None = None,
                     truth: Mapping[str, float] | None = None, odds_ratios: bool = False,
                     title: str = "Model coefficients", max_terms: int = 30, intercept: str | None = "(Intercept)",
                     effect: str = "Odds ratio") -> Chart:
    """Forest plot of non-zero coefficients (with CIs) or a bar chart (without); optional truth markers.

    ``odds_ratios`` draws exp(coefficient) on a log axis with the reference line at 1.
    """
    ci = ci or {}
    items = sorted(((k, float(v)) for k, v in coefficients.items() if v and k != intercept), key=lambda kv: -abs(kv[1]))
    dropped = max(0, len(items) - max_terms)
    items = items[:max_terms][::-1]  # largest at the top
    if not items:
        raise ValueError("coefficient_plot: all coefficients are zero")
    f = np.exp if odds_ratios else (lambda x: x)
    with _style():
        fig = new_figure(8.5, 1.2 + 0.28 * len(items))  # room for covariate names
        ax = fig.add_subplot()
        y = np.arange(len(items))
        vals = np.array([f(v) for _, v in items])
        ref = 1.0 if odds_ratios else 0.0
        colors = [PALETTE[5] if v > ref else PALETTE[0] for v in vals]
        has_ci = any(k in ci for k, _ in items)
        if has_ci:
            lo = np.array([f(ci[k][0]) if k in ci else f(v) for k, v in items])
            hi = np.array([f(ci[k][1]) if k in ci else f(v) for k, v in items])
            ax.hlines(y, lo, hi, color=colors, lw=1.4)
            ax.scatter(vals, y, color=colors, s=26, zorder=3, label="estimate (95% CI)")
        elif odds_ratios:
            ax.scatter(vals, y, color=colors, s=26, zorder=3, label="estimate")
        else:
            bars = ax.barh(y, vals, color=colors, height=0.62)
            # a legend entry per colour (the first bar of each): one "estimate" entry showed only the first colour
            for colour, what in ((PALETTE[5], "raises the risk"), (PALETTE[0], "lowers the risk")):
                if colour in colors:
                    bars.patches[colors.index(colour)].set_label(f"estimate, {what}")
        if truth:
            ty = [(i, f(truth[k])) for i, (k, _) in enumerate(items) if k in truth]
            if ty:
                ax.scatter([t for _, t in ty], [i for i, _ in ty], marker="D", facecolor="none",
                           edgecolor=POOLED, s=30, zorder=4, label="ground truth")
        ax.axvline(ref, color="#555555", lw=0.9)
        if odds_ratios:
            ax.set_xscale("log")
            lo_x, hi_x = ax.get_xlim()
            ticks = _spaced_ticks([t for t in _RATIO_TICKS if lo_x <= t <= hi_x], lo_x, hi_x)
            if len(ticks) >= 3:  # narrow range: readable ratios instead of bare decades
                ax.xaxis.set_major_locator(FixedLocator(ticks))
            else:
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        if has_ci:
            _estimate_column(ax, items, ci, f, effect if odds_ratios else "Coefficient")
        ax.set_yticks(y, [_axis_label(k, 60) for k, _ in items])
        ax.grid(axis="y", visible=False)
        ax.set_xlabel(f"{effect} (log scale)" if odds_ratios else "Coefficient (log-odds scale)")
        ax.set_title(title)
        if has_ci or truth or not odds_ratios:  # bars: the legend says what their two colours mean
            fig.legend(loc="outside lower center", ncol=3, frameon=False)
    notes = [f"{dropped} further non-zero coefficients with smaller magnitude are not drawn."] if dropped else []
    alt = f"{title}: {len(items)} non-zero coefficients"
    return Chart.from_figure(fig, alt, notes)
