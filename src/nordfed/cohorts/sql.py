"""Cohort definition → one SQL query (DuckDB dialect; ``store.translate`` carries it to PostgreSQL).

The query follows Circe's stages: primary events within an observation period → AdditionalCriteria and
QualifiedLimit → inclusion rules → ExpressionLimit → end strategy, censoring → eras. Each stage is a CTE;
:func:`cohort_sql` selects the final eras and :func:`inclusion_sql` the per-rule flags for attrition.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from nordfed.cohorts.circe import CohortDefinition, CorrelatedCriterion, DomainCriterion, Group, Range, Window
from nordfed.cohorts.concept_sets import codesets_sql


@dataclass(frozen=True)
class DomainTable:
    table: str
    id_col: str
    concept_col: str
    start: str
    end: str


# end dates as Circe defaults them when the CDM leaves them empty
DOMAIN_TABLES: dict[str, DomainTable] = {
    "ConditionOccurrence": DomainTable("condition_occurrence", "condition_occurrence_id", "condition_concept_id",
                                       "condition_start_date",
                                       "COALESCE(condition_end_date, condition_start_date + 1)"),
    "ProcedureOccurrence": DomainTable("procedure_occurrence", "procedure_occurrence_id", "procedure_concept_id",
                                       "procedure_date", "COALESCE(procedure_end_date, procedure_date + 1)"),
    "DrugExposure": DomainTable("drug_exposure", "drug_exposure_id", "drug_concept_id", "drug_exposure_start_date",
                                "COALESCE(drug_exposure_end_date, drug_exposure_start_date + "
                                "CAST(days_supply AS INTEGER), drug_exposure_start_date + 1)"),
    "Measurement": DomainTable("measurement", "measurement_id", "measurement_concept_id", "measurement_date",
                               "measurement_date + 1"),
    "Observation": DomainTable("observation", "observation_id", "observation_concept_id", "observation_date",
                               "observation_date + 1"),
    "VisitOccurrence": DomainTable("visit_occurrence", "visit_occurrence_id", "visit_concept_id", "visit_start_date",
                                   "visit_end_date"),
    "Death": DomainTable("death", "person_id", "cause_concept_id", "death_date", "death_date + 1"),
}

EVENT_COLS = "event_id, person_id, start_date, end_date, op_start, op_end"
_CMP = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "=", "neq": "<>"}


def _lit(v: object) -> str:
    if isinstance(v, dt.date):
        return f"DATE '{v.isoformat()}'"
    return repr(float(v)) if isinstance(v, float) else str(int(v))  # type: ignore[call-overload]


def _range_sql(expr: str, r: Range) -> str:
    if r.op == "bt":
        return f"({expr} >= {_lit(r.value)} AND {expr} <= {_lit(r.extent)})"
    if r.op == "!bt":
        return f"NOT ({expr} >= {_lit(r.value)} AND {expr} <= {_lit(r.extent)})"
    return f"{expr} {_CMP[r.op]} {_lit(r.value)}"


def criterion_sql(c: DomainCriterion) -> str:
    """Events of one domain criterion: ``person_id, source_id, concept_id, start_date, end_date``."""
    d = DOMAIN_TABLES[c.domain]
    base = (f"SELECT person_id, {d.id_col} AS source_id, {d.concept_col} AS concept_id, {d.start} AS start_date, "
            f"{d.end} AS end_date FROM {d.table}")
    if c.codeset_id is not None:
        base += f" WHERE {d.concept_col} IN (SELECT concept_id FROM codesets WHERE codeset_id = {int(c.codeset_id)})"
    if c.first:
        # Circe's First: the person's first event of the concept set in all of history, before other filters
        base = (f"SELECT person_id, source_id, concept_id, start_date, end_date FROM (SELECT f.*, row_number() OVER "
                f"(PARTITION BY f.person_id ORDER BY f.start_date, f.source_id) AS rn FROM ({base}) f) ff "
                "WHERE rn = 1")
    where = []
    sel = f"SELECT t.person_id, t.source_id, t.concept_id, t.start_date, t.end_date FROM ({base}) t"
    if c.occurrence_start_date is not None:
        where.append(_range_sql("t.start_date", c.occurrence_start_date))
    if c.age is not None or c.gender:
        sel += " JOIN person p ON p.person_id = t.person_id"
        if c.age is not None:
            where.append(_range_sql("(year(t.start_date) - p.year_of_birth)", c.age))
        if c.gender:
            where.append(f"p.gender_concept_id IN ({', '.join(str(g) for g in c.gender)})")
    if not where:
        return base
    return sel + " WHERE " + " AND ".join(where)


def _window_conditions(w: Window, index: str, event: str, event_end_default: bool = False) -> list[str]:
    idx = f"{index}.end_date" if w.use_index_end else f"{index}.start_date"
    use_end = w.use_event_end or event_end_default
    ev = f"{event}.end_date" if use_end else f"{event}.start_date"
    out = []
    if w.start.days is not None:
        out.append(f"{ev} >= {idx} + {w.start.days * w.start.coeff}")
    if w.end.days is not None:
        out.append(f"{ev} <= {idx} + {w.end.days * w.end.coeff}")
    return out


def correlated_sql(cc: CorrelatedCriterion, events: str) -> str:
    """For each event of ``events``: ``event_id, ok`` where ok says whether the occurrence rule holds."""
    on = ["c.person_id = e.person_id", *_window_conditions(cc.start_window, "e", "c")]
    if cc.end_window is not None:
        on += _window_conditions(cc.end_window, "e", "c", event_end_default=True)
    if not cc.ignore_observation_period:
        on += ["c.start_date >= e.op_start", "c.start_date <= e.op_end"]
    occ = cc.occurrence
    col = "c.start_date" if occ.count_column == "START_DATE" else "c.concept_id"
    counted = f"count(DISTINCT {col})" if occ.is_distinct else "count(c.person_id)"
    op = {0: "=", 1: "<=", 2: ">="}[occ.type]
    return (f"SELECT e.event_id, CASE WHEN {counted} {op} {occ.count} THEN 1 ELSE 0 END AS ok "
            f"FROM {events} e LEFT JOIN ({criterion_sql(cc.criterion)}) c ON {' AND '.join(on)} GROUP BY e.event_id")


def group_sql(g: Group, events: str) -> str:
    """For each event of ``events``: ``event_id, ok`` for a (nested) criteria group."""
    children = [correlated_sql(c, events) for c in g.criteria] + [group_sql(s, events) for s in g.groups]
    if not children:
        return f"SELECT event_id, 1 AS ok FROM {events}"
    n = len(children)
    cond = {"ALL": f"= {n}", "ANY": ">= 1", "AT_LEAST": f">= {g.count}", "AT_MOST": f"<= {g.count}"}[g.type]
    union = " UNION ALL ".join(f"SELECT * FROM ({c}) g{i}" for i, c in enumerate(children))
    return f"SELECT event_id, CASE WHEN sum(ok) {cond} THEN 1 ELSE 0 END AS ok FROM ({union}) u GROUP BY event_id"


def _limit_sql(source: str, limit: str) -> str:
    if limit == "All":
        return f"SELECT {EVENT_COLS} FROM {source}"
    order = "start_date, event_id" if limit == "First" else "start_date DESC, event_id DESC"
    return (f"SELECT {EVENT_COLS} FROM (SELECT {EVENT_COLS}, row_number() OVER (PARTITION BY person_id "
            f"ORDER BY {order}) AS ordinal FROM {source}) l WHERE ordinal = 1")


def _ctes(cd: CohortDefinition) -> list[tuple[str, str]]:
    ctes = [("codesets", codesets_sql(cd.concept_sets))]
    raw = " UNION ALL ".join(
        f"SELECT person_id, source_id, start_date, end_date, {k} AS domain_ord FROM ({criterion_sql(c)}) pc{k}"
        for k, c in enumerate(cd.primary)
    )
    ctes.append(("primary_all", (
        "SELECT row_number() OVER (ORDER BY e.person_id, e.start_date, e.domain_ord, e.source_id) AS event_id, "
        "e.person_id, e.start_date, e.end_date, op.observation_period_start_date AS op_start, "
        "op.observation_period_end_date AS op_end "
        f"FROM ({raw}) e JOIN observation_period op ON op.person_id = e.person_id "
        f"AND e.start_date >= op.observation_period_start_date + {int(cd.prior_days)} "
        f"AND e.start_date + {int(cd.post_days)} <= op.observation_period_end_date"
    )))
    ctes.append(("primary_events", _limit_sql("primary_all", cd.primary_limit)))
    if cd.additional is not None and not cd.additional.empty:
        ctes.append(("additional_ok", group_sql(cd.additional, "primary_events")))
        ctes.append(("qualified_all", f"SELECT {', '.join('p.' + c for c in EVENT_COLS.split(', '))} "
                                      "FROM primary_events p JOIN additional_ok a ON a.event_id = p.event_id "
                                      "WHERE a.ok = 1"))
        ctes.append(("qualified_events", _limit_sql("qualified_all", cd.qualified_limit)))
    elif cd.additional is not None:
        ctes.append(("qualified_events", _limit_sql("primary_events", cd.qualified_limit)))
    else:
        # Circe applies QualifiedLimit only when AdditionalCriteria is given: ATLAS exports its default
        # {"Type": "First"} with every definition, and with PrimaryCriteriaLimit All it must keep all events
        ctes.append(("qualified_events", f"SELECT {EVENT_COLS} FROM primary_events"))
    flags = []
    for i, rule in enumerate(cd.inclusion_rules):
        ctes.append((f"rule_{i}", group_sql(rule.expression, "qualified_events")))
        flags.append(f"r{i}.ok AS rule_{i}")
    joins = " ".join(f"JOIN rule_{i} r{i} ON r{i}.event_id = q.event_id" for i in range(len(cd.inclusion_rules)))
    ctes.append(("rule_flags", f"SELECT q.*{''.join(', ' + f for f in flags)} FROM qualified_events q {joins}"))
    all_ok = " AND ".join(f"rule_{i} = 1" for i in range(len(cd.inclusion_rules))) or "1 = 1"
    ctes.append(("included_all", f"SELECT {EVENT_COLS} FROM rule_flags WHERE {all_ok}"))
    ctes.append(("included_events", _limit_sql("included_all", cd.expression_limit)))
    if cd.end_offset is None:
        end = "op_end"
    else:
        field, offset = cd.end_offset
        end = f"LEAST({'start_date' if field == 'StartDate' else 'end_date'} + {int(offset)}, op_end)"
    ctes.append(("ends", f"SELECT event_id, person_id, start_date, {end} AS end_date, op_end FROM included_events"))
    if cd.censoring:
        cens = " UNION ALL ".join(f"SELECT person_id, start_date FROM ({criterion_sql(c)}) cc{k}"
                                  for k, c in enumerate(cd.censoring))
        ctes.append(("censored", (
            "SELECT i.event_id, i.person_id, i.start_date, "
            "LEAST(i.end_date, COALESCE(min(c.start_date), i.end_date)) AS end_date "
            f"FROM ends i LEFT JOIN ({cens}) c ON c.person_id = i.person_id AND c.start_date >= i.start_date "
            "AND c.start_date <= i.op_end GROUP BY i.event_id, i.person_id, i.start_date, i.end_date"
        )))
        last = "censored"
    else:
        last = "ends"
    w_start, w_end = cd.censor_window
    start = f"GREATEST(start_date, {_lit(w_start)})" if w_start else "start_date"
    end_expr = f"LEAST(end_date, {_lit(w_end)})" if w_end else "end_date"
    ctes.append(("windowed", f"SELECT person_id, {start} AS start_date, {end_expr} AS end_date FROM {last}"))
    ctes.append(("valid", "SELECT person_id, start_date, end_date FROM windowed WHERE start_date <= end_date"))
    # eras: overlapping (or within EraPad days) periods of a person merge into one cohort entry
    ctes.append(("marked", (
        "SELECT person_id, start_date, end_date, CASE WHEN max(end_date) OVER (PARTITION BY person_id ORDER BY "
        "start_date, end_date ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) + "
        f"{int(cd.era_pad)} >= start_date THEN 0 ELSE 1 END AS is_new FROM valid"
    )))
    ctes.append(("islands", (
        "SELECT person_id, start_date, end_date, sum(is_new) OVER (PARTITION BY person_id ORDER BY start_date, "
        "end_date ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS era FROM marked"
    )))
    ctes.append(("eras", (
        "SELECT person_id AS subject_id, min(start_date) AS cohort_start_date, max(end_date) AS cohort_end_date "
        "FROM islands GROUP BY person_id, era"
    )))
    return ctes


def _with(ctes: list[tuple[str, str]], select: str) -> str:
    return "WITH " + ",\n".join(f"{name} AS ({body})" for name, body in ctes) + "\n" + select


def cohort_sql(cd: CohortDefinition) -> str:
    """``SELECT subject_id, cohort_start_date, cohort_end_date`` for the cohort."""
    return _with(_ctes(cd), "SELECT subject_id, cohort_start_date, cohort_end_date FROM eras")


def inclusion_sql(cd: CohortDefinition) -> str:
    """One row per qualified event: ``event_id, person_id, rule_0 .. rule_k`` (1 when the rule holds)."""
    cols = "".join(f", rule_{i}" for i in range(len(cd.inclusion_rules)))
    return _with(_ctes(cd), f"SELECT event_id, person_id{cols} FROM rule_flags")
