"""Achilles-style characterization of one CDM, as SQL run on the CDM (one query per result).

Conventions follow OHDSI Achilles: age is taken at the start of the person's first observation period
(analysis 101/102), observation time is the sum of a person's observation periods in days (105/108), and
concept prevalence counts distinct persons and records per concept (400/700/…).

>>> persons_by_age_sex(cdm)                                        # doctest: +SKIP
   age_group  age_low     sex  persons
0        0-4        0  female       12
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from nordfed.omop.store import CDM

#: domain → (table, concept column, date column) of the clinical event tables
DOMAINS: dict[str, tuple[str, str]] = {
    "condition": ("condition_occurrence", "condition_concept_id"),
    "drug": ("drug_exposure", "drug_concept_id"),
    "procedure": ("procedure_occurrence", "procedure_concept_id"),
    "measurement": ("measurement", "measurement_concept_id"),
    "observation": ("observation", "observation_concept_id"),
    "visit": ("visit_occurrence", "visit_concept_id"),
    "device": ("device_exposure", "device_concept_id"),
}

#: OMOP gender concepts (Gender domain)
SEX_LABELS: dict[int, str] = {8507: "male", 8532: "female"}

# the oldest group is open-ended, as in registry tables
MAX_AGE_GROUP = 90


def sex_label(concept_id: object) -> str:
    try:
        return SEX_LABELS.get(int(concept_id), "unknown")  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return "unknown"


def age_group_label(low: int, width: int = 5) -> str:
    return f"{low}+" if low >= MAX_AGE_GROUP else f"{low}-{low + width - 1}"


def _nonempty(cdm: CDM, table: str) -> bool:
    return table in cdm.table_names() and bool(cdm.scalar(f'SELECT count(*) FROM (SELECT 1 FROM "{table}" LIMIT 1) s'))


def persons_by_birth_year_sex(cdm: CDM) -> pd.DataFrame:
    """Persons per year of birth and sex (Achilles 3/2)."""
    df = cdm.query("SELECT year_of_birth, gender_concept_id, count(*) AS persons FROM person "
                   "GROUP BY year_of_birth, gender_concept_id ORDER BY year_of_birth, gender_concept_id")
    return _with_sex(df)[["year_of_birth", "sex", "persons"]].groupby(
        ["year_of_birth", "sex"], as_index=False)["persons"].sum()


def _with_sex(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["sex"] = df["gender_concept_id"].map(sex_label)
    df["persons"] = df["persons"].astype(int)
    return df


def persons_by_age_sex(cdm: CDM, width: int = 5) -> pd.DataFrame:
    """Persons per ``width``-year age group (at first observation) and sex; ``90+`` is open-ended."""
    df = cdm.query(
        "WITH first_obs AS (SELECT person_id, min(observation_period_start_date) AS d FROM observation_period "
        "GROUP BY person_id), "
        "ages AS (SELECT p.gender_concept_id, year(f.d) - p.year_of_birth AS age FROM person p "
        "JOIN first_obs f ON f.person_id = p.person_id) "
        "SELECT CAST(floor(least(greatest(age, 0), :cap) / :w) * :w AS INTEGER) AS age_low, gender_concept_id, "
        "count(*) AS persons FROM ages GROUP BY 1, 2 ORDER BY 1, 2",
        {"w": width, "cap": MAX_AGE_GROUP},
    )
    df = _with_sex(df)
    df["age_low"] = df["age_low"].astype(int)
    df = df.groupby(["age_low", "sex"], as_index=False)["persons"].sum()
    df.insert(0, "age_group", [age_group_label(a, width) for a in df["age_low"]])
    return df


@dataclass(frozen=True)
class ObservationTime:
    """Distribution of observed days per person (sum over the person's observation periods)."""

    persons: int
    mean_days: float
    sd_days: float
    min_days: int
    p10_days: float
    p25_days: float
    median_days: float
    p75_days: float
    p90_days: float
    max_days: int
    #: persons per whole year observed (0 = under one year); counts pool across sites, quantiles do not
    by_year: dict[int, int]


def observation_time(cdm: CDM) -> ObservationTime:
    per_person = ("SELECT person_id, sum(date_diff('day', observation_period_start_date, "
                  "observation_period_end_date)) AS days FROM observation_period GROUP BY person_id")
    row = cdm.query(
        f"SELECT count(*) AS n, avg(days) AS mean, stddev_samp(days) AS sd, min(days) AS mn, "
        f"quantile_cont(days, 0.1) AS p10, quantile_cont(days, 0.25) AS p25, quantile_cont(days, 0.5) AS p50, "
        f"quantile_cont(days, 0.75) AS p75, quantile_cont(days, 0.9) AS p90, max(days) AS mx FROM ({per_person}) o"
    ).iloc[0]
    hist = cdm.query(f"SELECT CAST(floor(days / 365.25) AS INTEGER) AS y, count(*) AS persons "
                     f"FROM ({per_person}) o GROUP BY 1 ORDER BY 1")

    def f(v: object) -> float:
        return float("nan") if v is None or pd.isna(v) else float(v)  # type: ignore[arg-type]

    n = int(row["n"])
    return ObservationTime(
        persons=n, mean_days=f(row["mean"]), sd_days=f(row["sd"]), min_days=int(row["mn"]) if n else 0,
        p10_days=f(row["p10"]), p25_days=f(row["p25"]), median_days=f(row["p50"]), p75_days=f(row["p75"]),
        p90_days=f(row["p90"]), max_days=int(row["mx"]) if n else 0,
        by_year={int(y): int(c) for y, c in hist.itertuples(index=False)},
    )


def top_concepts(cdm: CDM, domain: str, n: int = 10) -> pd.DataFrame:
    """The ``n`` concepts of ``domain`` with most persons: concept_id, concept_name, persons, records.

    Names come from the ``concept`` table when it is loaded (NULL otherwise).
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    table, col = DOMAINS[domain]
    cols = ["concept_id", "concept_name", "persons", "records"]
    if table not in cdm.table_names():
        return pd.DataFrame(columns=cols)
    counts = (f'SELECT "{col}" AS concept_id, count(DISTINCT person_id) AS persons, count(*) AS records '
              f'FROM "{table}" GROUP BY "{col}" ORDER BY persons DESC, records DESC, concept_id LIMIT :n')
    if _nonempty(cdm, "concept"):
        sql = (f"SELECT t.concept_id, c.concept_name, t.persons, t.records FROM ({counts}) t "
               f"LEFT JOIN concept c ON c.concept_id = t.concept_id ORDER BY t.persons DESC, t.records DESC, "
               f"t.concept_id")
    else:
        sql = f"SELECT concept_id, CAST(NULL AS VARCHAR) AS concept_name, persons, records FROM ({counts}) t"
    df = cdm.query(sql, {"n": int(n)})
    for c in ("concept_id", "persons", "records"):
        df[c] = df[c].astype(int)
    df["concept_name"] = df["concept_name"].astype(object).where(df["concept_name"].notna(), None)
    return df[cols].reset_index(drop=True)


def sex_counts(cdm: CDM) -> dict[str, int]:
    df = cdm.query("SELECT gender_concept_id, count(*) AS persons FROM person GROUP BY gender_concept_id")
    out: dict[str, int] = {}
    for g, n in df.itertuples(index=False):
        out[sex_label(g)] = out.get(sex_label(g), 0) + int(n)
    return out
