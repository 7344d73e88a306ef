"""Report tables: a small column model, cell formatting with disclosure control, and study table builders.

Builders take plain data (mappings, dataclasses or objects with the named attributes) and return a
:class:`Table`. Formatting is pure: :func:`format_cell` turns one value into display text and a CSS class.

Disclosure convention: ``None`` in a *count* column means the node suppressed the cell (1..min-1 rows);
it renders as ``<10`` (for the default minimum of 10), never as zero. Builders that know a rate was
withheld because its count was suppressed put :data:`SUPPRESSED` in the cell. A :class:`Merged` value was
released only summed with neighbouring groups (complementary suppression) and shows its own text. Other
``None`` values mean "not available" and render as an en dash.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS = ("text", "count", "number", "percent", "estimate_ci", "ci", "pvalue", "rate_n")
NA = "–"
NAN = float("nan")  # "not reported": unlike None, never read as a suppressed count


class _Suppressed:
    """Marker for a value the node withheld (disclosure control)."""

    _instance: _Suppressed | None = None

    def __new__(cls) -> _Suppressed:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SUPPRESSED"


SUPPRESSED = _Suppressed()


@dataclass(frozen=True)
class LowerBound:
    """A pooled count that omits suppressed site cells, so the true value may be larger."""

    value: int
    sites_suppressed: int = 1


@dataclass(frozen=True)
class Merged:
    """A value released only summed with neighbouring groups' (complementary suppression); shown as ``text``."""

    text: str
    title: str = ""


@dataclass(frozen=True)
class MeanSd:
    """A covariate's share of persons (``binary``) or its mean (SD) in a covariate summary."""

    mean: float
    sd: float | None = None
    binary: bool = False


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "text"
    digits: int = 3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"column {self.key!r}: unknown kind {self.kind!r} (expected one of {', '.join(KINDS)})")


@dataclass(frozen=True)
class Cell:
    text: str
    css: str = ""
    title: str = ""

    @property
    def suppressed(self) -> bool:
        return "suppressed" in self.css.split()


@dataclass
class Table:
    """Columns, rows (mappings keyed by column key), a caption and footnotes."""

    columns: list[Column]
    rows: list[Mapping[str, Any]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)

    def cells(self, min_cell_count: int = 10) -> list[list[Cell]]:
        return [[format_cell(row.get(c.key), c, min_cell_count) for c in self.columns] for row in self.rows]


# ------------------------------------------------------------------------------------------ formatting
def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _num(v: float, digits: int) -> str:
    return f"{v:.{digits}f}".replace("-", "−")


def _count(v: Any) -> str:
    return f"{int(v):,}".replace(",", "\u202f")  # narrow no-break space groups thousands


def _pct(v: float, digits: int) -> str:
    return f"{100 * v:.{max(digits - 2, 0)}f}\u202f%"


def _mean_sd(v: MeanSd) -> str:
    """``12.3 %`` for a share; ``mean (SD)`` with two significant digits of the SD (``139.2 (3.1)``)."""
    if v.binary:
        return _pct(v.mean, 3)
    if v.sd is None or not v.sd > 0:
        return _num(v.mean, 2)
    decimals = min(max(1 - math.floor(math.log10(v.sd)), 0), 4)
    return f"{_num(v.mean, decimals)} ({_num(v.sd, decimals)})"


def format_cell(value: Any, column: Column, min_cell_count: int = 10) -> Cell:
    """Display text and CSS class of one value in ``column`` (pure)."""
    supp = Cell(f"<{min_cell_count}", "num suppressed", f"suppressed: between 1 and {min_cell_count - 1}")
    kind, digits = column.kind, column.digits
    if value is SUPPRESSED:
        return supp if kind == "count" else Cell("suppr.", "num suppressed", "withheld: its count was suppressed")
    if isinstance(value, Merged):
        return Cell(value.text, "num merged", value.title)
    if isinstance(value, MeanSd):
        return Cell(_mean_sd(value), "num")
    if isinstance(value, LowerBound):
        if value.value == 0:
            return Cell("suppr.", "num suppressed", "every site that has this cell suppressed it")
        return Cell(f"≥{_count(value.value)}†", "num lower-bound",
                    f"lower bound: {value.sites_suppressed} site(s) suppressed their cell")
    if kind == "text":
        return Cell(NA, "na") if _missing(value) else Cell(str(value))
    if kind == "count":
        return supp if value is None else Cell(NA, "num na") if _missing(value) else Cell(_count(value), "num")
    if _missing(value):
        return Cell(NA, "num na", "not available")
    if kind == "number":
        return Cell(_num(float(value), digits), "num")
    if kind == "percent":
        return Cell(_pct(float(value), digits), "num")
    if kind == "pvalue":
        p = float(value)
        return Cell("<0.001" if p < 0.001 else f"{p:.3f}", "num")
    if kind == "ci":
        lo, hi = value
        return Cell(NA if _missing(lo) or _missing(hi) else f"{_num(lo, digits)} to {_num(hi, digits)}", "num")
    if kind == "estimate_ci":
        est, lo, hi = value
        if _missing(est):
            return Cell(NA, "num na")
        ci = "" if _missing(lo) or _missing(hi) else f" ({_num(lo, digits)} to {_num(hi, digits)})"
        return Cell(_num(est, digits) + ci, "num")
    rate, n = value  # rate_n
    if n is None or n is SUPPRESSED:
        return Cell(f"<{min_cell_count}", "num suppressed", "suppressed: too few persons or outcomes in this cell")
    return Cell(NA if _missing(rate) else f"{_pct(rate, digits)} ({_count(n)})", "num")


# ------------------------------------------------------------------------------------------ input access
def as_mapping(obj: Any) -> Mapping[str, Any]:
    """A mapping view of a dict, dataclass or plain object (results from any producer)."""
    if isinstance(obj, Mapping):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "__dict__"):
        return vars(obj)
    raise TypeError(f"expected a mapping or dataclass, got {type(obj).__name__}")


def pick(row: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    """The first present key among synonyms (e.g. ``outcomes``/``events``/``n_events``)."""
    for k in keys:
        if k in row:
            return row[k]
    return default


def _records(rows: Iterable[Any] | Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """Rows from a sequence of records or from ``{label: record}`` (label stored under ``key``)."""
    if isinstance(rows, Mapping):
        return [{key: k, **as_mapping(v)} for k, v in rows.items()]
    return [dict(as_mapping(r)) for r in rows]


def _pooled_count(n: Any, sites_suppressed: Any) -> Any:
    return LowerBound(int(n), int(sites_suppressed)) if n is not None and sites_suppressed else n


LOWER_BOUND_NOTE = ("† Pooled count of released cells only; sites that suppressed theirs add nothing, "
                    "so it is a lower bound.")


# ------------------------------------------------------------------------------------------ builders
def attrition_table(steps: Iterable[Any], caption: str = "Cohort attrition") -> Table:
    """Steps with ``step``, ``persons`` and optional ``outcomes``; adds persons removed per step.

    A ``None`` count is suppressed; leave the key out when a step has no outcome count at all.
    """
    rows, prev = [], None
    for r in _records(steps, "step"):
        persons = pick(r, "persons", "n", "subjects", default=NAN)
        known = isinstance(prev, int) and isinstance(persons, int)
        rows.append({"step": pick(r, "step", "description", "name"), "persons": persons,
                     "outcomes": pick(r, "outcomes", "events", default=NAN),
                     "removed": prev - persons if known else NAN})
        prev = persons
    cols = [Column("step", "Step"), Column("persons", "Persons", "count"), Column("removed", "Removed", "count"),
            Column("outcomes", "Outcomes", "count")]
    return Table(cols, rows, caption)


def validation_table(results: Iterable[Any] | Mapping[str, Any], caption: str = "Performance by site",
                     label: str = "Site / setting") -> Table:
    """Per-site (or per-validation-setting) metrics: AUROC [CI], AUPRC, Brier, calibration, E-avg, ICI, n."""
    rows = []
    for r in _records(results, "site"):
        ci = pick(r, "auroc_ci", default=(pick(r, "auroc_lower"), pick(r, "auroc_upper"))) or (None, None)
        rows.append({
            "site": pick(r, "site", "setting", "label"), "n": pick(r, "n"),
            "outcomes": pick(r, "outcomes", "events", "n_events"), "auroc": (pick(r, "auroc"), *ci),
            "auprc": pick(r, "auprc"), "brier": pick(r, "brier"),
            "cal_int": pick(r, "calibration_intercept"), "cal_slope": pick(r, "calibration_slope"),
            "e_avg": pick(r, "e_avg", "eavg"), "ici": pick(r, "ici"),
        })
    cols = [Column("site", label), Column("n", "n", "count"), Column("outcomes", "Outcomes", "count"),
            Column("auroc", "AUROC (95% CI)", "estimate_ci"), Column("auprc", "AUPRC", "number"),
            Column("brier", "Brier", "number"), Column("cal_int", "Cal. intercept", "number", 2),
            Column("cal_slope", "Cal. slope", "number", 2), Column("e_avg", "E-avg", "number"),
            Column("ici", "ICI", "number")]
    keep = [c for c in cols if c.kind in ("text", "count") or any(not _missing_metric(r[c.key]) for r in rows)]
    return Table(keep, rows, caption)


def _missing_metric(v: Any) -> bool:
    return all(_missing(x) for x in v) if isinstance(v, tuple) else _missing(v)


def sites_side_by_side(tables: Mapping[str, Iterable[Any]], keys: str | Sequence[str], value: str,
                       kind: str = "count", caption: str = "", pooled: Iterable[Any] | None = None,
                       labels: Mapping[str, str] | None = None) -> Table:
    """One long table per site (rows with ``keys`` and ``value``) → one wide table with a column per site.

    A row absent at a site shows "–"; a ``None`` value (suppressed) shows "<10". ``pooled`` rows may carry
    ``sites_suppressed`` and then show as lower bounds.
    """
    key_cols = [keys] if isinstance(keys, str) else list(keys)
    labels = labels or {}
    order: dict[tuple, dict[str, Any]] = {}
    for site, rows in tables.items():
        for r in (as_mapping(x) for x in rows):
            k = tuple(r.get(c) for c in key_cols)
            order.setdefault(k, {c: r.get(c) for c in key_cols})[f"site:{site}"] = r.get(value)
    if pooled is not None:
        for r in (as_mapping(x) for x in pooled):
            k = tuple(r.get(c) for c in key_cols)
            order.setdefault(k, {c: r.get(c) for c in key_cols})["pooled"] = _pooled_count(
                r.get(value), r.get("sites_suppressed", 0)) if kind == "count" else r.get(value)
    rows = []
    for r in order.values():
        # absent at a site is "not reported", which must not look like a suppressed count
        rows.append({**r, **{f"site:{s}": r.get(f"site:{s}", NAN) for s in tables}})
    cols = [Column(c, labels.get(c, c.replace("_", " ").capitalize())) for c in key_cols]
    cols += [Column(f"site:{s}", s, kind) for s in tables]
    if pooled is not None:
        cols.append(Column("pooled", "Pooled", kind))
    notes = [LOWER_BOUND_NOTE] if any(isinstance(r.get("pooled"), LowerBound) and r["pooled"].value
                                      for r in rows) else []
    return Table(cols, rows, caption, notes)


def coefficient_table(coefficients: Mapping[str, float], ci: Mapping[str, tuple[float, float]] | None = None,
                      odds_ratios: bool = True, caption: str = "Model coefficients (non-zero)",
                      intercept: str | None = "(Intercept)") -> Table:
    """Non-zero coefficients sorted by magnitude, with odds ratios (exp) and optional CIs."""
    ci = ci or {}
    items = [(k, float(v)) for k, v in coefficients.items() if v and k != intercept]
    items.sort(key=lambda kv: -abs(kv[1]))
    rows = []
    for name, b in items:
        lo, hi = ci.get(name, (None, None))
        row = {"name": name, "beta": (b, lo, hi)}
        if odds_ratios:
            row["or"] = (math.exp(b), *(None if x is None else math.exp(x) for x in (lo, hi)))
        rows.append(row)
    cols = [Column("name", "Covariate"), Column("beta", "Coefficient" + (" (95% CI)" if ci else ""), "estimate_ci")]
    if odds_ratios:
        cols.append(Column("or", "Odds ratio" + (" (95% CI)" if ci else ""), "estimate_ci", 2))
    zero = sum(1 for k, v in coefficients.items() if not v and k != intercept)
    notes = [f"{zero} candidate covariate{' has' if zero == 1 else 's have'} a zero coefficient and "
             f"{'is' if zero == 1 else 'are'} not shown."] if zero else []
    return Table(cols, rows, caption, notes)


def _summary_cell(row: Mapping[str, Any], cls: str) -> Any:
    if row.get(f"mean_{cls}") is None:
        # no site released the covariate (SUPPRESSED), or there is nobody in the class ("–")
        return SUPPRESSED if row.get("sites_suppressed") else None
    return MeanSd(row[f"mean_{cls}"], row.get(f"sd_{cls}"), bool(row.get("binary")))


def covariate_summary_table(rows: Iterable[Any], caption: str = "Covariates by outcome") -> Table:
    """PatientLevelPrediction's covariate summary: per covariate (``name``, ``coefficient``, ``binary``,
    ``mean_with``/``sd_with``, ``mean_without``/``sd_without``, ``smd``, ``sites_suppressed``: rows of
    :func:`nordfed.fed.covariate_summary.covariate_summary`) the share (binary) or mean (SD) with and without the
    outcome and the SMD, sorted as :func:`coefficient_table` sorts."""
    recs = sorted((as_mapping(r) for r in rows), key=lambda r: -abs(float(r.get("coefficient") or 0.0)))
    out = []
    for r in recs:
        # the sites that released it hold none of it (a unit only the withholding site records): zeros here would
        # read as "nobody has it", so the row is as withheld as if no site had released it
        absent = not r.get("nonzero_with") and not r.get("nonzero_without")
        withheld = bool(r.get("sites_suppressed")) and (r.get("mean_with") is None or absent)
        partial = bool(r.get("sites_suppressed")) and not withheld
        name = r.get("name") or r.get("covariate")
        out.append({"name": f"{name} †" if partial else name, "beta": r.get("coefficient"),
                    "with": SUPPRESSED if withheld else _summary_cell(r, "with"),
                    "without": SUPPRESSED if withheld else _summary_cell(r, "without"),
                    "smd": SUPPRESSED if withheld else r.get("smd")})
    cols = [Column("name", "Covariate"), Column("beta", "Coefficient", "number"),
            Column("with", "With outcome", "number"), Column("without", "Without outcome", "number"),
            Column("smd", "SMD", "number", 2)]
    notes = ["Binary covariates: share of persons with the covariate; others: mean (SD) in the covariate's own "
             "units. SMD: standardized mean difference, (mean with − mean without) / √((SD with² + SD without²) "
             "/ 2), as PatientLevelPrediction computes it."]
    if any(v is SUPPRESSED for r in out for v in r.values()):
        notes.append("suppr.: every site withheld the covariate, because it or its absence was held by too few "
                     "persons with (or without) the outcome there (disclosure control); it does not mean zero.")
    if any(str(r["name"]).endswith(" †") for r in out):
        notes.append("† Pooled over the sites that released the covariate; at least one site withheld it (too few "
                     "persons with or without it in an outcome class there).")
    return Table(cols, out, caption, notes)


def cox_table(result: Any, caption: str = "Cox proportional hazards model") -> Table:
    """Hazard ratios with 95% CI and p-values from a lifelines-like result (``CoxResult`` or its dict)."""
    r = as_mapping(result)
    names = list(pick(r, "covariates", default=None) or r["coefficients"].keys())
    rows = []
    for name in names:
        b = r["coefficients"][name]
        lo, hi = r.get("ci_lower", {}).get(name), r.get("ci_upper", {}).get(name)
        rows.append({"name": name, "beta": b, "se": r.get("standard_errors", {}).get(name),
                     "hr": (math.exp(b), *(None if x is None else math.exp(x) for x in (lo, hi))),
                     "p": r.get("p_values", {}).get(name)})
    cols = [Column("name", "Covariate"), Column("beta", "coef", "number"), Column("se", "SE", "number"),
            Column("hr", "Hazard ratio (95% CI)", "estimate_ci", 2), Column("p", "p", "pvalue")]
    notes = []
    if "n" in r and "events" in r:
        notes.append(f"n = {_count(r['n'])}, events = {_count(r['events'])}"
                     + (f", concordance = {r['concordance']:.3f}" if r.get("concordance") is not None else "")
                     + (f", ties: {r['ties']}" if r.get("ties") else ""))
    return Table(cols, rows, caption, notes)


def ground_truth_table(truth: Mapping[str, float], fitted: Mapping[str, float],
                       ci: Mapping[str, tuple[float, float]] | None = None,
                       caption: str = "Ground truth vs fitted (synthetic data)") -> Table:
    """Simulation truth next to the fitted value, their difference and whether the CI covers the truth."""
    ci = ci or {}
    rows = []
    for name in dict.fromkeys([*truth, *fitted]):
        t, f = truth.get(name), fitted.get(name)
        lo, hi = ci.get(name, (None, None))
        covered = None if lo is None or t is None else ("yes" if lo <= t <= hi else "no")
        rows.append({"name": name, "truth": t, "fitted": f, "diff": None if t is None or f is None else f - t,
                     "ci": (lo, hi), "covered": covered})
    cols = [Column("name", "Parameter"), Column("truth", "Truth", "number"), Column("fitted", "Fitted", "number"),
            Column("diff", "Fitted − truth", "number")]
    if ci:
        cols += [Column("ci", "95% CI", "ci"), Column("covered", "CI covers truth")]
    return Table(cols, rows, caption)
