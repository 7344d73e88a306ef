"""Federated characterization and data quality: Achilles/DQD-style tables from every site, pooled at the client.

Node side (``@algorithm``): ``nordfed.characterization`` releases persons by sex and 5-year age group, the
observation-time histogram and the top concepts per domain; ``nordfed.dq`` releases the data-quality table.
Every count passes :func:`~nordfed.privacy.disclosure.suppress_counts` at the node's minimum cell count
(default 10): a count of 1..min-1 is released as ``None``; cells that add up to the released person total (age
× sex, observation years) also get complementary suppression, so a ``None`` there may hide a larger cell.

Client side: :func:`characterize` and :func:`data_quality` return per-site and pooled tables. **Pooled counts
are sums of the released counts only.** A suppressed cell adds nothing and is never reconstructed (not from
totals, not from percentages); the pooled row says in ``sites_suppressed`` how many sites withheld it, so a
pooled count with ``sites_suppressed > 0`` is a lower bound.
When every reporting site withheld a cell, its pooled count is missing (``<NA>``), not 0: nothing was released.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from nordfed.fed.protocol import Federation, SiteData, algorithm
from nordfed.omop import characterization as ch
from nordfed.omop import dq
from nordfed.privacy.disclosure import DisclosureError, suppress_cells_of_total, suppress_counts
from nordfed.privacy.dp import label, noisy_counts, requested_epsilon

if TYPE_CHECKING:
    from nordfed.omop.store import CDM

DEFAULT_DOMAINS = ("condition", "drug")
#: the one age-group width a node releases (see characterization_partial)
AGE_WIDTH = 5


def _plain(v: Any) -> Any:
    """numpy/pandas scalars → Python values the wire format can carry (NA → None)."""
    if v is None or (not isinstance(v, str | bytes) and pd.api.types.is_scalar(v) and pd.isna(v)):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")]


def _suppress_column(df: pd.DataFrame, column: str, data: SiteData, of_total: bool = False) -> pd.DataFrame:
    """``of_total``: the column's cells add up to a released total (secondary suppression)."""
    df = df.copy()
    rule = suppress_cells_of_total if of_total else suppress_counts
    df[column] = pd.Series(rule(dict(enumerate(df[column])), data.policy), dtype=object).to_numpy()
    return df


def _cdm(data: SiteData) -> CDM:
    if data.cdm is None:
        raise ValueError(f"site {data.site} has no CDM")
    return data.cdm


@algorithm("nordfed.characterization", version="2", dp=True)
def characterization_partial(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Persons by sex × age group, observation years and top concepts, with small cells suppressed (with
    ``dp: {epsilon}``: see :func:`_private`)."""
    cdm = _cdm(data)
    if int(params.get("age_width", AGE_WIDTH)) != AGE_WIDTH:
        # groups of two widths differenced against each other single out persons (20 vs 21 years gave
        # "1 male aged exactly 20"); the client can add 5-year groups up
        raise DisclosureError(f"refused: age groups are {AGE_WIDTH} years wide at this node")
    epsilon = requested_epsilon(params)
    if epsilon is not None:
        return _private(cdm, data, epsilon)
    top_n = int(params.get("top_n", 10))
    domains = list(params.get("domains", DEFAULT_DOMAINS))
    persons = int(cdm.scalar("SELECT count(*) FROM person") or 0)
    # both tables count every person once, and the person total is released too
    age_sex = _suppress_column(ch.persons_by_age_sex(cdm, AGE_WIDTH), "persons", data, of_total=True)
    obs = ch.observation_time(cdm)
    years = suppress_cells_of_total(obs.by_year, data.policy)
    top = {}
    for d in domains:
        t = ch.top_concepts(cdm, d, top_n)
        t = _suppress_column(_suppress_column(t, "persons", data), "records", data)
        top[d] = _records(t)
    return {
        "persons": suppress_counts({"n": persons}, data.policy)["n"],
        "age_sex": _records(age_sex),
        "observation_years": [[y, n] for y, n in sorted(years.items())],
        "top": top,
        "min_cell_count": data.policy.min_cell_count,
    }


#: the last whole-years bin of the private observation-time histogram holds everyone observed that long or longer
MAX_PRIVATE_YEARS = 30


def _private(cdm: CDM, data: SiteData, epsilon: float) -> dict[str, Any]:
    """ε-differentially private characterization: the person total, persons by sex × age group and by whole
    years observed, each over a fixed domain (every group, sex and year up to :data:`MAX_PRIVATE_YEARS`, empty
    or not: which cells exist would tell too), with discrete Laplace noise of scale 3/ε (a person is in the
    total, in one age-sex cell and in one year bin). No top concepts: choosing them is a release of its own.
    Small-cell suppression then applies to the noisy counts (post-processing)."""
    ages = range(0, ch.MAX_AGE_GROUP + 1, AGE_WIDTH)
    sexes = ("female", "male", "unknown")
    exact = {(int(r.age_low), str(r.sex)): int(r.persons)
             for r in ch.persons_by_age_sex(cdm, AGE_WIDTH).itertuples(index=False)}
    years: dict[int, int] = {}
    for y, n in ch.observation_time(cdm).by_year.items():
        years[min(int(y), MAX_PRIVATE_YEARS)] = years.get(min(int(y), MAX_PRIVATE_YEARS), 0) + int(n)
    cells = [(a, sx) for a in ages for sx in sexes]
    bins = list(range(MAX_PRIVATE_YEARS + 1))
    total = int(cdm.scalar("SELECT count(*) FROM person") or 0)
    noisy = noisy_counts([total, *(exact.get(c, 0) for c in cells), *(years.get(y, 0) for y in bins)], epsilon,
                         sensitivity=3)
    persons, by_cell, by_year = noisy[0], noisy[1:1 + len(cells)], noisy[1 + len(cells):]
    age_sex = pd.DataFrame({"age_group": [ch.age_group_label(a, AGE_WIDTH) for a, _ in cells],
                            "age_low": [a for a, _ in cells], "sex": [sx for _, sx in cells], "persons": by_cell})
    age_sex = _suppress_column(age_sex, "persons", data, of_total=True)
    kept_years = suppress_cells_of_total(dict(zip(bins, by_year, strict=True)), data.policy)
    return {
        "persons": suppress_counts({"n": persons}, data.policy)["n"],
        "age_sex": _records(age_sex),
        "observation_years": [[y, n] for y, n in sorted(kept_years.items())],
        "top": {},
        "min_cell_count": data.policy.min_cell_count,
        "dp": label(epsilon),
    }


@algorithm("nordfed.dq", version="1")
def dq_partial(data: SiteData, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The site's DQ table; counts suppressed, % failing withheld where the failing count is suppressed.

    ``status`` is decided at the node on the exact counts (it is what the site's own dashboard would show).
    """
    df = dq.run_checks(_cdm(data))
    df = _suppress_column(_suppress_column(df, "n_rows", data), "n_fail", data)
    df["pct_fail"] = [None if f is None or n is None else p
                      for f, n, p in zip(df["n_fail"], df["n_rows"], df["pct_fail"], strict=True)]
    return _records(df)


# ------------------------------------------------------------------------------------------------ central
@dataclass
class FederatedTables:
    """``per_site[name]`` has a ``site`` column; ``pooled[name]`` sums released counts (see module doc)."""

    per_site: dict[str, pd.DataFrame] = field(default_factory=dict)
    pooled: dict[str, pd.DataFrame] = field(default_factory=dict)


def _counts(df: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """Released counts as nullable integers (None = suppressed at the site)."""
    for c in columns:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    return df


def _pool(long: pd.DataFrame, keys: list[str], counts: list[str]) -> pd.DataFrame:
    """Sum released counts per key; ``sites_suppressed`` counts sites that withheld any of ``counts``."""
    df = long.copy()
    df["_supp"] = df[counts].isna().any(axis=1).astype(int)
    for c in counts:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    out = df.groupby(keys, sort=False, dropna=False).agg(
        **{c: (c, lambda s: s.sum(min_count=1)) for c in counts},
        sites_reporting=("site", "nunique"), sites_suppressed=("_supp", "sum"),
    ).reset_index()
    # a cell every site withheld has no released count to sum: missing, never 0
    return out.astype({c: "Int64" for c in counts})


def characterize(federation: Federation, top_n: int = 10, domains: Sequence[str] = DEFAULT_DOMAINS,
                 sites: Sequence[str] | None = None, epsilon: float | None = None) -> FederatedTables:
    """Run ``nordfed.characterization`` at every site; per-site and pooled tables.

    Tables: ``persons`` (per site), ``age_sex``, ``observation_years`` and one per domain (top concepts).
    A concept missing from a site's top list counts as not reported there (``sites_reporting``).
    ``epsilon``: ε-differentially private counts at each site (charged to your budget there), no top concepts.
    """
    params: dict[str, Any] = {"top_n": top_n, "domains": list(domains)}
    if epsilon is not None:
        params["dp"] = {"epsilon": epsilon}
    res = federation.run("nordfed.characterization", params, sites)
    out = FederatedTables()
    out.per_site["persons"] = _counts(pd.DataFrame([{"site": s, "persons": r["persons"]} for s, r in res.items()]),
                                      "persons")
    out.pooled["persons"] = _pool(out.per_site["persons"].assign(all="all"), ["all"], ["persons"]).drop(
        columns="all")
    age = pd.DataFrame([{"site": s, **row} for s, r in res.items() for row in r["age_sex"]],
                       columns=["site", "age_group", "age_low", "sex", "persons"])
    out.per_site["age_sex"] = _counts(age, "persons")
    out.pooled["age_sex"] = _pool(age, ["age_group", "age_low", "sex"], ["persons"]).sort_values(
        ["age_low", "sex"], ignore_index=True)
    years = pd.DataFrame([{"site": s, "years": y, "persons": n} for s, r in res.items()
                          for y, n in r["observation_years"]], columns=["site", "years", "persons"])
    out.per_site["observation_years"] = _counts(years, "persons")
    out.pooled["observation_years"] = _pool(years, ["years"], ["persons"]).sort_values("years", ignore_index=True)
    for d in domains:
        top = pd.DataFrame([{"site": s, **row} for s, r in res.items() for row in r["top"].get(d, [])],
                           columns=["site", "concept_id", "concept_name", "persons", "records"])
        out.per_site[d] = _counts(top, "persons", "records")
        pooled = _pool(top, ["concept_id"], ["persons", "records"])
        names = top.dropna(subset=["concept_name"]).drop_duplicates("concept_id").set_index("concept_id")
        pooled.insert(1, "concept_name", pooled["concept_id"].map(names["concept_name"]))
        out.pooled[d] = pooled.sort_values(["persons", "records"], ascending=False, ignore_index=True)
    return out


@dataclass
class FederatedDQ:
    per_site: dict[str, pd.DataFrame]
    #: one row per check: released counts summed over sites, % failing of those, sites failing / suppressed
    pooled: pd.DataFrame
    #: check × site (as ``nordfed omop dq`` prints it)
    table: pd.DataFrame


def data_quality(federation: Federation, sites: Sequence[str] | None = None) -> FederatedDQ:
    """Run ``nordfed.dq`` at every site; per-site tables, a pooled table and the check × site view."""
    res = federation.run("nordfed.dq", {}, sites)
    per_site = {s: _counts(pd.DataFrame(rows, columns=dq.COLUMNS), "concept_id", "n_rows", "n_fail")
                for s, rows in res.items()}
    long = pd.concat([df.assign(site=s) for s, df in per_site.items()], ignore_index=True)
    long["key"] = [dq.check_key(r) for r in long.to_dict("records")]
    pooled = _pool(long, ["key", "category", "threshold"], ["n_rows", "n_fail"])
    fails = long.assign(f=long["status"] == "fail").groupby("key", sort=False)["f"].sum()
    pooled["sites_failing"] = pooled["key"].map(fails).astype(int)
    pooled["pct_fail"] = (100.0 * pooled["n_fail"] / pooled["n_rows"]).where(pooled["n_rows"] > 0)
    return FederatedDQ(per_site=per_site, pooled=pooled, table=dq.compare(per_site))

