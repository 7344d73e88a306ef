"""Data-quality checks in the spirit of OHDSI's DataQualityDashboard, as SQL on the CDM.

Each check counts the rows it applies to (``n_rows``) and the rows that fail (``n_fail``); a check fails when
the failing percentage exceeds its threshold. Categories follow Kahn's framework as DQD does: completeness,
conformance and plausibility. The result is one table per site; :func:`compare` puts sites side by side
(check × site) for a data steward.

>>> run_checks(open_cdm("duckdb:///site.duckdb")).query("status == 'fail'")   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import pandas as pd

from nordfed.omop.characterization import DOMAINS
from nordfed.omop.schema import DATE_PAIRS, EVENT_DATES, schema
from nordfed.omop.store import CDM

COLUMNS = ["check", "category", "table", "field", "concept_id", "description", "n_rows", "n_fail", "pct_fail",
           "threshold", "status"]


@dataclass(frozen=True)
class Plausible:
    """Plausible values of one measurement concept, per unit (DQD's plausibleValueLow/High, plausibleUnit).

    ``slip`` flags values more than ``slip`` times above (or below) the site's median in the same unit: the
    signature of a unit slip (µmol/L vs mg/dL is ×88, g/L vs g/dL ×10) in labs whose spread is narrow.
    """

    name: str
    ranges: dict[int, tuple[float, float]]  # unit_concept_id → (low, high)
    slip: float | None = None


# UCUM unit concepts
_G_DL, _G_L, _MMOL_L, _MG_L, _MG_DL, _UMOL_L, _E9_L = 8713, 8636, 8753, 8751, 8840, 8749, 9444
_KG, _LB, _CM, _INCH, _KG_M2, _PCT, _MMHG = 9529, 8739, 8582, 9330, 9531, 8554, 8876

#: LOINC measurement concepts common in Nordic labs, with plausible limits per unit (wide: physiology, not
#: reference ranges; a value outside is almost surely an entry or unit error)
PLAUSIBLE_MEASUREMENTS: dict[int, Plausible] = {
    3016723: Plausible("creatinine", {_UMOL_L: (10.0, 2200.0), _MG_DL: (0.1, 25.0)}, slip=5.0),
    3000963: Plausible("haemoglobin", {_G_DL: (3.0, 25.0), _G_L: (30.0, 250.0), _MMOL_L: (1.8, 15.5)}, slip=5.0),
    3024561: Plausible("albumin", {_G_L: (5.0, 70.0), _G_DL: (0.5, 7.0)}, slip=5.0),
    3020460: Plausible("C-reactive protein", {_MG_L: (0.0, 800.0), _MG_DL: (0.0, 80.0)}),
    3000905: Plausible("leukocytes", {_E9_L: (0.0, 600.0)}),
    3024929: Plausible("platelets", {_E9_L: (1.0, 3000.0)}),
    3019550: Plausible("sodium", {_MMOL_L: (90.0, 200.0)}),
    3023103: Plausible("potassium", {_MMOL_L: (1.0, 12.0)}),
    3004501: Plausible("glucose", {_MMOL_L: (0.5, 120.0), _MG_DL: (10.0, 2000.0)}),
    3004410: Plausible("HbA1c", {_PCT: (2.0, 25.0)}),
    3004327: Plausible("lymphocytes", {_E9_L: (0.0, 600.0)}),
    3013650: Plausible("neutrophils", {_E9_L: (0.0, 200.0)}),
    3036277: Plausible("body height", {_CM: (30.0, 250.0), _INCH: (12.0, 100.0)}, slip=5.0),
    3025315: Plausible("body weight", {_KG: (0.3, 350.0), _LB: (0.7, 770.0)}),
    3038553: Plausible("body mass index", {_KG_M2: (7.0, 100.0)}),
    3004249: Plausible("systolic blood pressure", {_MMHG: (40.0, 300.0)}),
    3012888: Plausible("diastolic blood pressure", {_MMHG: (20.0, 200.0)}),
}

#: sex-specific conditions and procedures → the only plausible gender_concept_id (DQD plausibleGender)
SEX_SPECIFIC: dict[int, tuple[str, int]] = {
    200962: ("primary malignant neoplasm of prostate", 8507),
    4163261: ("malignant tumor of prostate", 8507),
    198803: ("benign prostatic hyperplasia", 8507),
    196359: ("primary malignant neoplasm of uterine cervix", 8532),
    200051: ("primary malignant neoplasm of ovary", 8532),
    433527: ("endometriosis", 8532),
    4299535: ("pregnant", 8532),
}

#: concept fields checked for conformance (unmapped 0, unknown, non-standard): table → fields
CONCEPT_FIELDS: dict[str, tuple[str, ...]] = {
    "person": ("gender_concept_id",),
    **{table: (col,) for table, col in DOMAINS.values()},
}
CONCEPT_FIELDS["measurement"] = ("measurement_concept_id", "unit_concept_id")

#: DQD-like thresholds in percent (0 = any failing row fails the check)
THRESHOLD_UNMAPPED = {"person": 0.0}
# DQD uses 5%; Nordic sources map ICD-10 almost completely, so 1% unmapped already deserves a look
DEFAULT_UNMAPPED = 1.0
THRESHOLD_UNIT = 5.0
THRESHOLD_VALUE = 1.0


@dataclass(frozen=True)
class Check:
    """One check: ``where`` picks the rows it applies to and ``fail`` the failing ones among them, both SQL on the
    table (aliased ``t``) and its ``joins``. With ``per_concept`` (a column), ``where`` and ``fail`` hold for every
    concept and the check counts the rows of ``concept_id`` only."""

    check: str
    category: str
    table: str
    field: str | None
    description: str
    threshold: float
    where: str
    fail: str
    concept_id: int | None = None
    #: LEFT JOINs the conditions use; each matches at most one row (a key), so the table's rows stay one to one
    joins: tuple[str, ...] = ()
    per_concept: str | None = None


_PERSON = "LEFT JOIN person p ON p.person_id = t.person_id"  # person_id is person's key
# a person's earliest death record decides (death may hold several rows of one person)
_FIRST_DEATH = ("LEFT JOIN (SELECT person_id, min(death_date) AS death_date FROM death GROUP BY person_id) d "
                "ON d.person_id = t.person_id")


def _required_checks(table: str) -> Iterator[Check]:
    t = schema()[table]
    req = [f.name for f in t.fields if f.required]
    yield Check("required fields complete", "completeness", table, ", ".join(req) if len(req) <= 3 else None,
                f"rows of {table} with a NULL in a required field", 0.0, "TRUE",
                " OR ".join(f't."{c}" IS NULL' for c in req))


def _concept_checks(table: str, field: str, has_concept: bool) -> Iterator[Check]:
    thr = THRESHOLD_UNMAPPED.get(table, DEFAULT_UNMAPPED)
    if field != "unit_concept_id":  # a unit of 0 is the "unit present" check
        yield Check("concept mapped (not 0)", "conformance", table, field, f"{field} = 0 (no standard concept)",
                    thr, f't."{field}" IS NOT NULL', f't."{field}" = 0')
    if has_concept:
        # a join, not (NOT) EXISTS: PostgreSQL runs such a subquery once per row (5 s for 1.7 M measurements
        # against 0.3 s joined); concept_id is the concept table's key
        c = f"c_{field}"
        join = (f'LEFT JOIN concept {c} ON {c}.concept_id = t."{field}"',)
        known = f't."{field}" IS NOT NULL AND t."{field}" <> 0'
        yield Check("concept in vocabulary", "conformance", table, field, f"{field} is not in the concept table",
                    0.0, known, f"{c}.concept_id IS NULL", joins=join)
        yield Check("concept is standard", "conformance", table, field, f"{field} is not a standard concept", 0.0,
                    known, f"{c}.concept_id IS NOT NULL AND ({c}.standard_concept IS NULL OR {c}.standard_concept "
                    "<> 'S')", joins=join)


def _limits_join(medians: Mapping[tuple[int, int], float]) -> str:
    """Every plausible (concept, unit) as ``lim``: its limits, and the bounds a unit slip crosses (the site's
    median in that unit times or over the concept's slip factor; NULL without a slip check or a median). The
    medians come from their own query: as a subquery here PostgreSQL computed them again in every worker."""

    def num(x: float | None) -> str:
        return "CAST(NULL AS DOUBLE)" if x is None else f"CAST({float(x)!r} AS DOUBLE)"

    rows = []
    for cid, p in PLAUSIBLE_MEASUREMENTS.items():
        for u, (lo, hi) in p.ranges.items():
            med = medians.get((cid, u)) if p.slip else None
            slip_lo, slip_hi = (None, None) if med is None or p.slip is None else (med / p.slip, p.slip * med)
            rows.append(f"({cid}, {u}, {num(lo)}, {num(hi)}, {num(slip_lo)}, {num(slip_hi)})")
    return (f"LEFT JOIN (VALUES {', '.join(rows)}) lim(concept_id, unit_concept_id, low, high, slip_low, slip_high) "
            "ON lim.concept_id = t.measurement_concept_id AND lim.unit_concept_id = t.unit_concept_id")


def _measurement_checks(concepts: list[int], medians: Mapping[tuple[int, int], float]) -> Iterator[Check]:
    """Unit completeness for every measured concept; units and values for the concepts we know limits of
    (``medians``: the site's median value per concept and unit, for the unit-slip checks).

    The per-concept checks are one grouped pass: the limits are a joined table (``lim``), so every concept's
    conditions read the same."""
    numeric, no_unit = "t.value_as_number IS NOT NULL", "coalesce(t.unit_concept_id, 0) = 0"
    yield Check("unit present", "completeness", "measurement", "unit_concept_id",
                "numeric result without a unit (unit_concept_id NULL or 0)", THRESHOLD_UNIT, numeric, no_unit)
    by = "measurement_concept_id"
    lim = (_limits_join(medians),)
    known = f"{numeric} AND lim.concept_id IS NOT NULL"  # a value in one of the concept's plausible units
    for cid in concepts:
        p = PLAUSIBLE_MEASUREMENTS.get(cid)
        name = p.name if p else f"concept {cid}"
        yield Check("unit present", "completeness", "measurement", "unit_concept_id",
                    f"{name}: numeric result without a unit", THRESHOLD_UNIT, numeric, no_unit, cid, per_concept=by)
        if p is None:
            continue
        units = ", ".join(str(u) for u in p.ranges)
        yield Check("plausible unit", "plausibility", "measurement", "unit_concept_id",
                    f"{p.name}: unit not one of {units}", THRESHOLD_UNIT, "coalesce(t.unit_concept_id, 0) <> 0",
                    "lim.concept_id IS NULL", cid, lim, by)
        limits = "; ".join(f"{lo:g}–{hi:g} in unit {u}" for u, (lo, hi) in p.ranges.items())
        yield Check("plausible value", "plausibility", "measurement", "value_as_number",
                    f"{p.name}: value outside {limits}", THRESHOLD_VALUE, known,
                    "t.value_as_number < lim.low OR t.value_as_number > lim.high", cid, lim, by)
        if p.slip:
            yield Check("no unit slip", "plausibility", "measurement", "value_as_number",
                        f"{p.name}: value over {p.slip:g}× or under 1/{p.slip:g} of the site's median in its unit",
                        THRESHOLD_VALUE, f"{known} AND lim.slip_low IS NOT NULL",
                        "t.value_as_number > lim.slip_high OR t.value_as_number < lim.slip_low", cid, lim, by)


def _date_checks(table: str, present: set[str]) -> Iterator[Check]:
    date = EVENT_DATES.get(table)
    if date:
        dated = f't."{date}" IS NOT NULL'
        yield Check("date not in future", "plausibility", table, date, f"{date} after today", 0.0, dated,
                    f't."{date}" > current_date')
        if "person" in present:
            yield Check("date after birth", "plausibility", table, date, f"{date} before year_of_birth", 1.0,
                        dated, f'year(t."{date}") < p.year_of_birth', joins=(_PERSON,))
        if "death" in present:
            # DQD allows 60 days after death for claims that trail the event
            yield Check("date before death", "plausibility", table, date, f"{date} over 60 days after death",
                        1.0, dated, f't."{date}" > d.death_date + INTERVAL 60 DAY', joins=(_FIRST_DEATH,))
    if table in DATE_PAIRS:
        start, end = DATE_PAIRS[table]
        yield Check("start before end", "plausibility", table, end, f"{end} before {start}", 0.0,
                    f't."{end}" IS NOT NULL', f't."{end}" < t."{start}"')


def _sex_checks(present: set[str]) -> Iterator[Check]:
    for table in ("condition_occurrence", "procedure_occurrence", "observation"):
        if table not in present:
            continue
        col = CONCEPT_FIELDS[table][0]
        for cid, (name, sex) in SEX_SPECIFIC.items():
            yield Check("sex plausible", "plausibility", table, col, f"{name} in a person whose sex is not "
                        f"{'male' if sex == 8507 else 'female'}", 0.0,
                        f't."{col}" = {cid} AND p.gender_concept_id IN (8507, 8532)', f"p.gender_concept_id <> {sex}",
                        cid, joins=(_PERSON,))


def checks_for(present: set[str], measured: list[int] | None = None,
               medians: Mapping[tuple[int, int], float] | None = None) -> list[Check]:
    """Every check that applies to the non-empty tables ``present`` (``measured``: measurement concepts with
    numeric results, each gets a unit-completeness check; ``medians``: per concept and unit, see
    :func:`slip_medians`)."""
    has_concept = "concept" in present
    out: list[Check] = []
    for table in schema().tables:
        if table not in present or schema()[table].group != "CDM":
            continue
        out += _required_checks(table)
        for f in CONCEPT_FIELDS.get(table, ()):
            out += _concept_checks(table, f, has_concept)
        if table == "measurement":
            out += _measurement_checks(sorted(set(measured or [])), medians or {})
        out += _date_checks(table, present)
    out += _sex_checks(present)
    return out


def applicable_checks(cdm: CDM) -> list[Check]:
    present = {t for t, n in cdm.row_counts().items() if n}
    measured = []
    if "measurement" in present:
        measured = [int(c) for c in cdm.query("SELECT DISTINCT measurement_concept_id AS c FROM measurement "
                                              "WHERE value_as_number IS NOT NULL")["c"]]
    return checks_for(present, measured, slip_medians(cdm, measured))


def slip_medians(cdm: CDM, measured: list[int]) -> dict[tuple[int, int], float]:
    """The median value per (concept, unit) of the measured concepts with a unit-slip check."""
    slips = sorted(c for c in measured if c in PLAUSIBLE_MEASUREMENTS and PLAUSIBLE_MEASUREMENTS[c].slip)
    if not slips:
        return {}
    q = cdm.query(f"SELECT measurement_concept_id AS c, unit_concept_id AS u, quantile_cont(value_as_number, 0.5) "
                  f"AS med FROM measurement WHERE value_as_number IS NOT NULL AND measurement_concept_id IN "
                  f"({', '.join(map(str, slips))}) AND unit_concept_id IS NOT NULL GROUP BY measurement_concept_id, "
                  "unit_concept_id")
    return {(int(c), int(u)): float(m) for c, u, m in zip(q["c"], q["u"], q["med"], strict=True)}


def _batches(checks: list[Check]) -> list[list[int]]:
    """Positions of the checks one query counts: each table's."""
    out: dict[str, list[int]] = {}
    for i, c in enumerate(checks):
        out.setdefault(c.table, []).append(i)
    return list(out.values())


def batch_sql(checks: list[Check]) -> tuple[str, list[tuple[str, str]]]:
    """One pass over a table counting every check's rows and failures (``n<i>, f<i>`` for the distinct
    ``(where, fail)`` pairs, returned in order); grouped by concept when some checks are per concept (the others
    then sum the groups)."""
    first = checks[0]
    joins = "".join(f" {j}" for j in dict.fromkeys(j for c in checks for j in c.joins))
    pairs = list(dict.fromkeys((c.where, c.fail) for c in checks))
    sums = ", ".join(f"sum(CASE WHEN {w} THEN 1 ELSE 0 END) AS n{i}, "
                     f"sum(CASE WHEN ({w}) AND ({f}) THEN 1 ELSE 0 END) AS f{i}" for i, (w, f) in enumerate(pairs))
    source = f'"{first.table}" t{joins}'
    by = {c.per_concept for c in checks} - {None}
    if not by:
        return f"SELECT {sums} FROM {source}", pairs
    if len(by) > 1:
        raise ValueError(f"{first.table}: checks per concept of different columns {sorted(by)}")  # type: ignore[type-var]
    col = f't."{by.pop()}"'
    return f"SELECT {col} AS concept_id, {sums} FROM {source} GROUP BY {col}", pairs


def run_checks(cdm: CDM, progress: Callable[[Check], None] | None = None,
               checks: list[Check] | None = None) -> pd.DataFrame:
    """Run every applicable check (or ``checks``); one row per check with counts, % failing, threshold and status.

    One query per table counts all its checks, where DQD runs one per check: the table is read once. Checks that
    apply to no rows (e.g. no creatinine measured) are kept with status ``n/a``.
    """
    checks = applicable_checks(cdm) if checks is None else checks
    counts: list[tuple[int, int]] = [(0, 0)] * len(checks)
    for batch in _batches(checks):
        sql, pairs = batch_sql([checks[i] for i in batch])
        # a sum over no rows is NULL
        got = cdm.query(sql).fillna(0)
        for i in batch:
            c = checks[i]
            j = pairs.index((c.where, c.fail))
            rows = got if c.per_concept is None else got[got["concept_id"] == c.concept_id]
            counts[i] = (int(rows[f"n{j}"].sum()), int(rows[f"f{j}"].sum()))
            if progress:
                progress(c)
    rows = [{"check": c.check, "category": c.category, "table": c.table, "field": c.field,
             "concept_id": c.concept_id, "description": c.description, "n_rows": n, "n_fail": f,
             "threshold": c.threshold} for c, (n, f) in zip(checks, counts, strict=True)]
    df = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in ("pct_fail", "status")])
    return finish(df)


def finish(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``pct_fail`` and ``status`` (pass, fail, n/a when no rows; None counts stay unknown)."""
    df = df.copy()
    n = pd.to_numeric(df["n_rows"], errors="coerce")
    f = pd.to_numeric(df["n_fail"], errors="coerce")
    df["pct_fail"] = (100.0 * f / n).where(n > 0)
    status = pd.Series("pass", index=df.index, dtype=object)
    status[df["pct_fail"] > df["threshold"]] = "fail"
    status[n == 0] = "n/a"
    status[df["pct_fail"].isna() & (n != 0)] = "unknown"
    df["status"] = status
    df["concept_id"] = df["concept_id"].astype("Int64")
    return df[COLUMNS]


def check_key(row: Mapping[str, object]) -> str:
    cid = row.get("concept_id")
    suffix = f" [{cid}]" if cid is not None and not pd.isna(cid) else ""  # type: ignore[arg-type]
    return f"{row['table']}.{row['field'] or '*'}: {row['check']}{suffix}"


def compare(results: Mapping[str, pd.DataFrame], only_applicable: bool = True) -> pd.DataFrame:
    """Check × site: ``% failing (status)`` per site, with the threshold; rows n/a everywhere are dropped."""
    frames = []
    for site, df in results.items():
        d = df.copy()
        d["key"] = [check_key(r) for r in d.to_dict("records")]
        d["site"] = site
        # a federated site withholds % failing when the failing count is below its minimum cell count
        d["cell"] = [("n/a" if s == "n/a" else f"few, {s}" if pd.isna(p) else f"{p:.1f}% {s}")
                     for p, s in zip(d["pct_fail"], d["status"], strict=True)]
        frames.append(d)
    long = pd.concat(frames, ignore_index=True)
    wide = long.pivot_table(index=["key", "category", "threshold"], columns="site", values="cell",
                            aggfunc="first", sort=False).reindex(columns=list(results)).fillna("n/a")
    if only_applicable:
        wide = wide[(wide != "n/a").any(axis=1)]
    return wide.reset_index()
