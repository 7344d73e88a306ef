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
