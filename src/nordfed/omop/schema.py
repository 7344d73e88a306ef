"""The OMOP CDM v5.4 schema, read from OHDSI's machine-readable specification.

``spec/OMOP_CDMv5.4_Field_Level.csv`` is the one source of truth for table and column names, types,
required fields and keys; DDL for every dialect, the loader's checks and the validator derive from it.

>>> schema().tables["person"].primary_key
'person_id'
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

#: tables whose rows are about one person (their ``person_id`` must exist in ``person``)
DATE_PAIRS: dict[str, tuple[str, str]] = {
    "observation_period": ("observation_period_start_date", "observation_period_end_date"),
    "visit_occurrence": ("visit_start_date", "visit_end_date"),
    "visit_detail": ("visit_detail_start_date", "visit_detail_end_date"),
    "condition_occurrence": ("condition_start_date", "condition_end_date"),
    "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date"),
    "device_exposure": ("device_exposure_start_date", "device_exposure_end_date"),
    "procedure_occurrence": ("procedure_date", "procedure_end_date"),
    "payer_plan_period": ("payer_plan_period_start_date", "payer_plan_period_end_date"),
    "drug_era": ("drug_era_start_date", "drug_era_end_date"),
    "condition_era": ("condition_era_start_date", "condition_era_end_date"),
    "dose_era": ("dose_era_start_date", "dose_era_end_date"),
    "episode": ("episode_start_date", "episode_end_date"),
}

#: the date that places each clinical event in time (checked against observation periods and death)
EVENT_DATES: dict[str, str] = {
    "visit_occurrence": "visit_start_date",
    "condition_occurrence": "condition_start_date",
    "drug_exposure": "drug_exposure_start_date",
    "procedure_occurrence": "procedure_date",
    "device_exposure": "device_exposure_start_date",
    "measurement": "measurement_date",
    "observation": "observation_date",
    "note": "note_date",
    "specimen": "specimen_date",
}

#: indexed columns beyond primary keys (OHDSI's indices file indexes person, concept and date columns)
_INDEX_PATTERN = re.compile(r"^(person_id|subject_id|.*_concept_id|.*_start_date|.*_date|concept_id_[12]|"
                            r"ancestor_concept_id|descendant_concept_id|cohort_definition_id)$")


@dataclass(frozen=True)
class Field:
    name: str
    datatype: str  # as the spec spells it: integer, float, date, datetime, varchar(N), varchar(MAX)
    required: bool
    primary_key: bool
    fk_table: str | None

    @property
    def kind(self) -> str:
        """integer | float | date | datetime | text"""
        dt = self.datatype.lower()
        return "text" if dt.startswith("varchar") else dt

    @property
    def max_length(self) -> int | None:
        m = re.match(r"varchar\((\d+)\)", self.datatype.lower())
        return int(m.group(1)) if m else None

    @property
    def is_big_id(self) -> bool:
        # row identifiers may pass 2**31 at national scale; concept ids never do
        return self.kind == "integer" and self.name.endswith("_id") and not self.name.endswith("concept_id")


@dataclass(frozen=True)
class Table:
    name: str
    group: str  # CDM, VOCAB or RESULTS
    fields: tuple[Field, ...]

    @property
    def columns(self) -> list[str]:
        return [f.name for f in self.fields]

    @property
    def primary_key(self) -> str | None:
        return next((f.name for f in self.fields if f.primary_key), None)

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no column {name!r}")

    @property
    def has_person(self) -> bool:
        return "person_id" in self.columns and self.name != "person"


@dataclass(frozen=True)
class Schema:
    tables: dict[str, Table]

    def __getitem__(self, name: str) -> Table:
        try:
            return self.tables[name.lower()]
        except KeyError:
            raise KeyError(f"{name!r} is not an OMOP CDM v5.4 table") from None


def _read(name: str) -> list[dict[str, str]]:
    text = files("nordfed.omop.spec").joinpath(name).read_text(encoding="utf-8-sig")
    return list(csv.DictReader(text.splitlines(keepends=True)))


@cache
def schema() -> Schema:
    groups = {r["cdmTableName"].lower(): r["schema"] for r in _read("OMOP_CDMv5.4_Table_Level.csv")}
    fields: dict[str, list[Field]] = {t: [] for t in groups}
    for r in _read("OMOP_CDMv5.4_Field_Level.csv"):
        table = r["cdmTableName"].lower()
        fk = r["fkTableName"].lower() if r["fkTableName"] not in ("", "NA") else None
        fields[table].append(
            Field(
                name=r["cdmFieldName"].strip('"').lower(),
                datatype=r["cdmDatatype"].lower(),
                required=r["isRequired"] == "Yes",
                primary_key=r["isPrimaryKey"] == "Yes",
                fk_table=fk,
            )
        )
    return Schema({t: Table(t, groups[t], tuple(fs)) for t, fs in fields.items()})


_TYPES = {
    "duckdb": {"integer": "INTEGER", "bigint": "BIGINT", "float": "DOUBLE", "date": "DATE",
               "datetime": "TIMESTAMP", "text": "VARCHAR"},
    "postgres": {"integer": "INTEGER", "bigint": "BIGINT", "float": "DOUBLE PRECISION", "date": "DATE",
                 "datetime": "TIMESTAMP", "text": "TEXT"},
}


def sql_type(f: Field, dialect: str) -> str:
    types = _TYPES[dialect]
    if f.is_big_id:
        return types["bigint"]
    if f.kind == "text":
        return "VARCHAR" if f.max_length is None else f"VARCHAR({f.max_length})"
    return types[f.kind]


def create_table_sql(table: Table, dialect: str, name: str | None = None, constraints: bool = True,
                     in_schema: str | None = None) -> str:
    cols = []
    for f in table.fields:
        null = " NOT NULL" if f.required and constraints else ""
        cols.append(f'  "{f.name}" {sql_type(f, dialect)}{null}')
    if constraints and table.primary_key:
        cols.append(f'  PRIMARY KEY ("{table.primary_key}")')
    where = f'"{in_schema}".' if in_schema else ""
    return f'CREATE TABLE IF NOT EXISTS {where}"{name or table.name}" (\n' + ",\n".join(cols) + "\n)"


def index_sql(table: Table) -> list[str]:
    """CREATE INDEX statements for person, concept and date columns (same text in every dialect)."""
    out = []
    for f in table.fields:
        if f.primary_key or not _INDEX_PATTERN.match(f.name):
            continue
        out.append(f'CREATE INDEX IF NOT EXISTS "idx_{table.name}_{f.name}" ON "{table.name}" ("{f.name}")')
    return out


def ddl(dialect: str = "duckdb", indices: bool = True) -> list[str]:
    """All CREATE TABLE (and CREATE INDEX) statements of the CDM for ``dialect`` (duckdb or postgres)."""
    if dialect not in _TYPES:
        raise ValueError(f"no DDL for dialect {dialect!r}; choose one of {', '.join(_TYPES)}")
    tables = schema().tables.values()
    stmts = [create_table_sql(t, dialect) for t in tables]
    if indices:
        stmts += [s for t in tables for s in index_sql(t)]
    return stmts
