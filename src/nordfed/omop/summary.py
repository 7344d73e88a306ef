"""A one-screen summary of a CDM (persons, sex mix, observation time, row counts, top concepts), and of
several sites side by side.

>>> s = summarize(open_cdm("duckdb:///site.duckdb"))                 # doctest: +SKIP
>>> s.persons, s.sex                                                  # doctest: +SKIP
(1000, {'female': 507, 'male': 493})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pandas as pd

from nordfed.omop import characterization as ch
from nordfed.omop.store import CDM

SUMMARY_DOMAINS = ("condition", "drug", "procedure", "measurement")


@dataclass
class SiteSummary:
    persons: int
    sex: dict[str, int]
    observation: ch.ObservationTime | None
    row_counts: dict[str, int]
    top: dict[str, pd.DataFrame] = field(default_factory=dict)


def summarize(cdm: CDM, top_n: int = 5, progress: Callable[[str], None] | None = None) -> SiteSummary:
    """Summarise one CDM; ``progress(step)`` is called before each step (for a progress bar)."""
    def step(name: str) -> None:
        if progress:
            progress(name)

    step("row counts")
    counts = {t: n for t, n in cdm.row_counts().items() if n}
    step("persons")
    persons = counts.get("person", 0)
    sex = ch.sex_counts(cdm) if persons else {}
    step("observation time")
    obs = ch.observation_time(cdm) if counts.get("observation_period") else None
    top: dict[str, pd.DataFrame] = {}
    for domain in SUMMARY_DOMAINS:
        step(f"top {domain} concepts")
        if counts.get(ch.DOMAINS[domain][0]):
            top[domain] = ch.top_concepts(cdm, domain, top_n)
    return SiteSummary(persons=persons, sex=sex, observation=obs, row_counts=counts, top=top)


def _concept_label(row: pd.Series) -> str:
    name = row["concept_name"]
    return f"{name} ({row['concept_id']})" if name else str(row["concept_id"])


def side_by_side(summaries: Mapping[str, SiteSummary]) -> pd.DataFrame:
    """One row per metric, one column per site (strings, ready to print)."""
    rows: dict[tuple[str, str], dict[str, str]] = {}

    def put(section: str, metric: str, site: str, value: str) -> None:
        rows.setdefault((section, metric), {})[site] = value

    for site, s in summaries.items():
        put("persons", "persons", site, f"{s.persons:,}")
        for sex in ("female", "male", "unknown"):
            if s.persons:
                n = s.sex.get(sex, 0)
                put("persons", sex, site, f"{n:,} ({100 * n / s.persons:.1f}%)")
        if s.observation:
            o = s.observation
            put("observation", "median years per person", site, f"{o.median_days / 365.25:.1f}")
            put("observation", "IQR years", site, f"{o.p25_days / 365.25:.1f}–{o.p75_days / 365.25:.1f}")
            put("observation", "total person-years", site, f"{o.mean_days * o.persons / 365.25:,.0f}")
        for table, n in s.row_counts.items():
            put("rows", table, site, f"{n:,}")
        for domain, df in s.top.items():
            for rank, (_, r) in enumerate(df.iterrows(), start=1):
                put(f"top {domain}", f"#{rank}", site, f"{_concept_label(r)}: {r['persons']:,}")
    out = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(summaries)).fillna("")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["section", "metric"])
    return out.reset_index()
