"""Tables of outcomes by group (risk groups, age groups, sex), pooled over sites with what the sites withheld.

A site withholds a group's outcomes when few persons have (or lack) the outcome there, and, since its total is
released too, a neighbouring group's with them (complementary suppression); the groups' outcomes then arrive
summed over a span of groups (:class:`~nordfed.reports.tables.Merged` cells and a "together" row).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nordfed.reports.tables import (
    LOWER_BOUND_NOTE,
    SUPPRESSED,
    Column,
    LowerBound,
    Merged,
    Table,
    _count,
    _pooled_count,
    as_mapping,
    pick,
)

MERGED_NOTE = ("merged: a site releases a group's outcomes only when the group holds none or at least the minimum "
               "cell count of them, and likewise of persons without one. Since each site's total is released too, "
               "the neighbouring group is merged as well (complementary suppression: otherwise the total minus the "
               "other groups would give the small count away).")
PARTIAL_RATES_NOTE = ("The expected and observed rates of a group marked † are those of the sites that released it, "
                      "not of all sites.")


def _withheld_persons(n: Any, sites_suppressed: Any) -> Any:
    """A pooled persons count: exact, a lower bound, or nothing when every site withheld it."""
    return LowerBound(0) if n is None else _pooled_count(n, sites_suppressed)


def _range(lo: Any, hi: Any) -> str | None:
    return f"{100 * lo:.1f}–{100 * hi:.1f}\u202f%" if lo is not None and hi is not None else None


def span_label(span: Sequence[Any]) -> str:
    if span[0] == span[1]:
        return str(span[0])
    # group numbers join with a dash; labels ("<50", "60-69") would run into one "<50–60-69"
    return f"{span[0]}–{span[1]}" if all(str(x).isdigit() for x in span) else f"{span[0]} to {span[1]}"


def _site_rate(s: Mapping[str, Any], pooled_span: Sequence[Any] | None) -> Any:
    """One site's (observed rate, persons) for a risk group, :class:`Merged` or :data:`SUPPRESSED`.

    A site's own span lies inside the pooled one (``pooled_span``), whose "together" row shows the site's rate.
    """
    n = pick(s, "n")
    if n is None:  # the site withheld the group's persons: not "nobody there"
        return SUPPRESSED
    if pick(s, "span") and pooled_span:
        return Merged(f"merged ({_count(n)})", f"{_count(n)} persons; their outcomes are in the row of groups "
                      f"{span_label(pooled_span)} together")
    return pick(s, "observed_rate"), n


def risk_group_table(pooled: Sequence[Any], per_site: Mapping[str, Sequence[Any]] | None = None,
                     spans: Mapping[str, Any] | None = None, caption: str = "Risk groups") -> Table:
    """Risk groups (``group``, ``bundle``, ``risk_from``/``risk_to``, ``n``, ``observed_rate``) pooled and per site.

    ``spans`` (:class:`~nordfed.fed.risk_groups.RiskGroups`' ``spans``): groups whose outcomes were released only
    together; each pooled span gets a "together" row after its last group, with every site's rate over it.
    """
    per_site = per_site or {}
    merged = {tuple(sp["groups"]): sp for sp in (spans or {}).get("pooled", [])}
    rows = []
    for i, g in enumerate(as_mapping(x) for x in pooled):
        row = {"group": pick(g, "group", default=i + 1), "bundle": pick(g, "bundle"),
               "range": _range(pick(g, "risk_from"), pick(g, "risk_to")),
               "n": _withheld_persons(pick(g, "n"), pick(g, "sites_suppressed", default=0)),
               "rate": pick(g, "observed_rate"), "expected": pick(g, "expected_rate")}
        span = pick(g, "span")
        if span:
            row["rate"] = row["expected"] = Merged("merged", f"released only for groups {span_label(span)} "
                                                              "together: see that row")
        elif isinstance(row["n"], LowerBound) and row["n"].value == 0:
            row["rate"] = row["expected"] = SUPPRESSED  # nothing released: a rate here would be invented
        for site, site_rows in per_site.items():
            row[f"site:{site}"] = _site_rate(as_mapping(site_rows[i]), span)
        rows.append(row)
        sp = merged.get(tuple(span)) if span and span[1] == row["group"] else None
        if sp is not None:
            rows.append({"group": span_label(span), "bundle": f"groups {span_label(span)} together",
                         "range": _range(sp.get("risk_from"), sp.get("risk_to")),
                         "n": _withheld_persons(sp.get("n"), sp.get("sites_suppressed", 0)),
                         "rate": sp.get("observed_rate"), "expected": sp.get("expected_rate"),
                         **{f"site:{s}": (v.get("observed_rate"), v.get("n")) if v.get("n") is not None
                            else SUPPRESSED for s, v in sp.get("per_site", {}).items()}})
    cols = [Column("group", "Group"), Column("bundle", "Bundle"), Column("range", "Predicted risk"),
            Column("n", "Persons", "count"), Column("expected", "Expected", "percent"),
            Column("rate", "Observed", "percent")]
    cols += [Column(f"site:{s}", s, "rate_n") for s in per_site]
    if all(r["expected"] is None for r in rows):
        cols = [c for c in cols if c.key != "expected"]
    notes = ["Per site: observed outcome rate (persons)."] if per_site else []
    if any(isinstance(v, Merged) for r in rows for v in r.values()):
        notes.append(MERGED_NOTE + " The merged groups' outcomes are shown once, in their \"together\" row, for "
                     "every site over the same groups; each group's persons are still shown.")
    if any(v is SUPPRESSED for r in rows for k, v in r.items() if k.startswith("site:")):
        notes.append("suppr. at a site: the site withheld the group's persons because too few were in it, or in "
                     "a neighbouring group (disclosure control); it does not mean the group is empty there.")
    if any(isinstance(r["n"], LowerBound) and r["n"].value for r in rows):  # a 0 one shows "suppr.", no †
        notes += [LOWER_BOUND_NOTE, PARTIAL_RATES_NOTE]
    return Table(cols, rows, caption, notes)


DEMOGRAPHIC_LABELS = {"age_group": "Age group", "sex": "Sex"}


def _outcome_cells(g: Mapping[str, Any], sites_missing: int) -> dict[str, Any]:
    """Pooled outcomes and rates of a demographic group or span: a lower bound when some sites withheld theirs,
    ``suppr.`` when all did (a sum of several sites' withheld cells need not be below the minimum)."""
    ev = pick(g, "observed", "events")
    if ev is None:
        return {"outcomes": LowerBound(0, sites_missing), "observed": SUPPRESSED, "expected": SUPPRESSED}
    return {"outcomes": _pooled_count(ev, sites_missing), "observed": pick(g, "observed_rate"),
            "expected": pick(g, "expected_rate")}


def demographic_table(demographics: Mapping[str, Sequence[Any]], spans: Mapping[str, Sequence[Any]] | None = None,
                      caption: str = "Demographic summary") -> Table:
    """PatientLevelPrediction's demographic summary of ``Evaluation.demographics``: persons, outcomes, observed and
    expected outcome rate per group. ``spans`` (``Evaluation.demographic_spans``): groups whose outcomes were
    released only together; as in :func:`risk_group_table` each gets a "together" row after its last group."""
    rows = []
    for by, groups in demographics.items():
        together = {tuple(sp["groups"]): sp for sp in (spans or {}).get(by, [])}
        for i, g in enumerate(as_mapping(x) for x in groups):
            span = pick(g, "span")
            row = {"by": DEMOGRAPHIC_LABELS.get(by, by.replace("_", " ").capitalize()) if i == 0 else "",
                   "group": pick(g, "group"), "n": _withheld_persons(pick(g, "n"), pick(g, "sites_suppressed"))}
            if span:
                merged = Merged("merged", f"released only for {span_label(span)} together: see that row")
                row |= {"outcomes": merged, "observed": merged, "expected": merged}
            else:
                row |= _outcome_cells(g, pick(g, "sites_events_suppressed", default=0))
            rows.append(row)
            sp = together.get(tuple(span)) if span and span[1] == row["group"] else None
            if sp is not None:
                rows.append({"by": "", "group": f"{span_label(span)} together",
                             "n": _withheld_persons(sp.get("n"), sp.get("sites_suppressed")),
                             **_outcome_cells(sp, sp.get("sites_suppressed", 0))})
    cols = [Column("by", "Characteristic"), Column("group", "Group"), Column("n", "Persons", "count"),
            Column("outcomes", "Outcomes", "count"), Column("observed", "Observed", "percent"),
            Column("expected", "Expected", "percent")]
    notes = ["Observed: share of the group's persons with the outcome; expected: their mean predicted risk."]
    if any(isinstance(v, Merged) for r in rows for v in r.values()):
        notes.append(MERGED_NOTE + " The merged groups' outcomes are shown once, in their \"together\" row; each "
                     "group's persons are still shown.")
    if any(v is SUPPRESSED for r in rows for v in r.values()):
        notes.append("suppr.: every site withheld the cell (disclosure control); it does not mean zero.")
    partial = [r for r in rows if any(isinstance(v, LowerBound) and v.value for v in r.values())]
    if partial:
        notes.append(LOWER_BOUND_NOTE)
    if any(isinstance(r["observed"], float) for r in partial):  # not when the group's rates are merged anyway
        notes.append(PARTIAL_RATES_NOTE)
    return Table(cols, rows, caption, notes)
