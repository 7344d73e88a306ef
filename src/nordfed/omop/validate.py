"""Validate a CDM in place: structure, required values, keys, person references and the order of dates.

Every check is SQL written once in DuckDB's dialect and run on any engine :class:`~nordfed.omop.store.CDM` opens.
Errors break the CDM's contract (analyses would be wrong); warnings are plausibility problems a data steward
should look at (events outside observation, after death, before birth), as OHDSI's DQD grades them.

>>> report = validate(open_cdm("duckdb:///site.duckdb"))             # doctest: +SKIP
>>> report.ok, len(report.errors)                                    # doctest: +SKIP
(True, 0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from nordfed.omop.schema import DATE_PAIRS, EVENT_DATES, Table, schema
from nordfed.omop.store import CDM

Severity = Literal["error", "warning"]
N_EXAMPLES = 5

#: information_schema data types (DuckDB and PostgreSQL spellings) accepted for each spec kind
_TYPE_FAMILIES = {
    "integer": ("integer", "bigint", "smallint", "hugeint", "int", "numeric", "decimal"),
    "float": ("double", "real", "float", "numeric", "decimal"),
    "date": ("date",),
    "datetime": ("timestamp",),
    "text": ("varchar", "character", "text", "string"),
}


@dataclass(frozen=True)
class Finding:
    check: str
    severity: Severity
    table: str
    field: str | None
    rows: int
    examples: tuple = ()
    message: str = ""


@dataclass
class ValidationReport:
    findings: list[Finding] = field(default_factory=list)
    checked_tables: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors


def _q(name: str) -> str:
    return f'"{name}"'


class _Checker:
    def __init__(self, cdm: CDM):
        self.cdm = cdm
        cols = cdm.query("SELECT table_name, column_name, data_type FROM information_schema.columns "
                         "WHERE table_schema = current_schema()")
        self.columns: dict[str, dict[str, str]] = {}
        for t, c, d in cols.itertuples(index=False):
            self.columns.setdefault(str(t).lower(), {})[str(c).lower()] = str(d).lower()
        self.findings: list[Finding] = []
        self.mistyped: set[tuple[str, str]] = set()

    def has(self, table: str, *columns: str) -> bool:
        """Whether the columns exist with the spec's type (value checks skip columns that do not)."""
        return table in self.columns and all(c in self.columns[table] and (table, c) not in self.mistyped
                                             for c in columns)

    def id_column(self, table: Table) -> str:
        pk = table.primary_key
        if pk and self.has(table.name, pk):
            return pk
        return "person_id" if self.has(table.name, "person_id") else table.columns[0]

    def count(self, table: Table, where: str, from_sql: str | None = None, params: dict | None = None,
              **finding: object) -> None:
        """Count rows of ``table`` (aliased ``t``) matching ``where``; record a finding with example ids."""
        src = from_sql or f"{_q(table.name)} AS t"
        n = int(self.cdm.scalar(f"SELECT count(*) FROM {src} WHERE {where}", params) or 0)
        if n == 0:
            return
        idc = self.id_column(table)
        ex = self.cdm.query(f"SELECT DISTINCT t.{_q(idc)} AS id FROM {src} WHERE {where} ORDER BY 1 LIMIT {N_EXAMPLES}",
                            params)
        self.findings.append(Finding(table=table.name, rows=n, examples=tuple(ex["id"].tolist()), **finding))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ checks
    def structure(self, table: Table) -> None:
        have = self.columns[table.name]
        for f in table.fields:
            if f.name not in have:
                if f.required:
                    self.findings.append(Finding("required column", "error", table.name, f.name, 0,
                                                 message="required column is missing from the table"))
                continue
            if not any(have[f.name].startswith(p) for p in _TYPE_FAMILIES[f.kind]):
                self.mistyped.add((table.name, f.name))
                self.findings.append(Finding("column type", "error", table.name, f.name, 0,
                                             message=f"column is {have[f.name]}; the spec says {f.datatype}"))

    def required_values(self, table: Table) -> None:
        for f in table.fields:
            if f.required and self.has(table.name, f.name):
                self.count(table, f"t.{_q(f.name)} IS NULL", check="required value", severity="error",
                           field=f.name, message="required field is NULL")

    def primary_key(self, table: Table) -> None:
        pk = table.primary_key
        if not pk or not self.has(table.name, pk):
            return
        n = int(self.cdm.scalar(f"SELECT count(*) FROM (SELECT {_q(pk)} FROM {_q(table.name)} GROUP BY {_q(pk)} "
                                f"HAVING count(*) > 1) AS d") or 0)
        if n:
            ex = self.cdm.query(f"SELECT {_q(pk)} AS id FROM {_q(table.name)} GROUP BY {_q(pk)} HAVING count(*) > 1 "
                                f"ORDER BY 1 LIMIT {N_EXAMPLES}")
            self.findings.append(Finding("primary key unique", "error", table.name, pk, n, tuple(ex["id"].tolist()),
                                         "the same primary key value is used by more than one row"))

    def person_reference(self, table: Table) -> None:
        if table.name == "person" or not self.has(table.name, "person_id"):
            return
        if "person" not in self.columns:
            where = "t.person_id IS NOT NULL"
        else:
            where = "t.person_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM person p WHERE p.person_id = t.person_id)"
        self.count(table, where, check="person reference", severity="error", field="person_id",
                   message="person_id is not in person")

    def date_order(self, table: Table) -> None:
        start, end = DATE_PAIRS.get(table.name, (None, None))
        if start and self.has(table.name, start, end):
            self.count(table, f"t.{_q(end)} < t.{_q(start)}", check="start before end", severity="error",
                       field=end, message=f"{end} is before {start}")

    def event_timing(self, table: Table) -> None:
        date = EVENT_DATES.get(table.name)
        if not date or not self.has(table.name, date, "person_id"):
            return
        if self.has("observation_period", "person_id"):
            self.count(table, f"NOT EXISTS (SELECT 1 FROM observation_period op WHERE op.person_id = t.person_id "
                              f"AND t.{_q(date)} BETWEEN op.observation_period_start_date "
                              f"AND op.observation_period_end_date)",
                       check="inside observation period", severity="warning", field=date,
                       message="event date lies outside every observation period of the person")
        if self.has("death", "person_id", "death_date"):
            self.count(table, f"EXISTS (SELECT 1 FROM death d WHERE d.person_id = t.person_id "
                              f"AND t.{_q(date)} > d.death_date)",
                       check="not after death", severity="warning", field=date,
                       message="event date is after the person's death_date")
        if self.has("person", "person_id", "year_of_birth"):
            self.count(table, f"EXISTS (SELECT 1 FROM person p WHERE p.person_id = t.person_id "
                              f"AND year(t.{_q(date)}) < p.year_of_birth)",
                       check="not before birth", severity="warning", field=date,
                       message="event date is before the person's year_of_birth")

    def persons_observed(self) -> None:
        if self.has("person", "person_id") and self.has("observation_period", "person_id"):
            self.count(schema()["person"],
                       "NOT EXISTS (SELECT 1 FROM observation_period op WHERE op.person_id = t.person_id)",
                       check="has observation period", severity="warning", field="person_id",
                       message="person has no observation_period (every person needs one)")


def validate(cdm: CDM, progress: Callable[[str], None] | None = None) -> ValidationReport:
    """Run every check on the non-empty CDM tables of ``cdm``; ``progress(table)`` is called per table."""
    chk = _Checker(cdm)
    counts = cdm.row_counts()
    report = ValidationReport(checked_tables={t: n for t, n in counts.items() if n})
    tables = [schema()[name] for name in report.checked_tables]
    for table in tables:  # first, so value checks can skip mistyped columns everywhere
        chk.structure(table)
    for table in tables:
        if progress:
            progress(table.name)
        chk.required_values(table)
        chk.primary_key(table)
        chk.person_reference(table)
        chk.date_order(table)
        chk.event_timing(table)
    if counts.get("person"):
        chk.persons_observed()
    report.findings = chk.findings
    return report
