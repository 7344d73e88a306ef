"""Instantiate a cohort definition at a node into the CDM ``cohort`` table, and its inclusion-rule attrition.

>>> n = instantiate(cdm, parse_cohort(json_text), cohort_definition_id=1)   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from nordfed.cohorts.circe import CirceError, CohortDefinition, load_cohort, parse_cohort
from nordfed.cohorts.sql import cohort_sql, inclusion_sql
from nordfed.fed.protocol import SiteData, algorithm, dataset
from nordfed.omop.store import CDM
from nordfed.privacy.disclosure import suppress_counts, suppress_part, suppress_steps

#: ready definitions shipped with the repository (studies/cohorts/<name>.json)
STUDY_COHORTS = Path(__file__).resolve().parents[3] / "studies" / "cohorts"


def as_definition(definition: CohortDefinition | dict[str, Any] | str) -> CohortDefinition:
    """A parsed definition from a definition, Circe JSON (dict or text), a file path or a bundled cohort name."""
    if isinstance(definition, CohortDefinition):
        return definition
    if isinstance(definition, str) and not definition.lstrip().startswith("{"):
        path = Path(definition)
        if not path.exists():
            path = STUDY_COHORTS / f"{definition.removesuffix('.json')}.json"
        if not path.exists():
            raise CirceError(definition, f"no such cohort definition file (nor {STUDY_COHORTS}/<name>.json)")
        return load_cohort(path)
    return parse_cohort(definition)


def instantiate(cdm: CDM, definition: CohortDefinition | dict[str, Any] | str, cohort_definition_id: int) -> int:
    """Replace the rows of ``cohort_definition_id`` in ``cohort`` by the cohort's entries (one transaction).

    Returns the number of cohort entries written.
    """
    cd = as_definition(definition)
    cid = int(cohort_definition_id)
    select = cohort_sql(cd)
    cdm.ensure_results()
    table = cdm.cohort_table
    with cdm.transaction(), cdm.hash_joins():
        cdm.execute(f"DELETE FROM {table} WHERE cohort_definition_id = :cid", {"cid": cid})
        cdm.execute(
            f"INSERT INTO {table} (cohort_definition_id, subject_id, cohort_start_date, cohort_end_date) "
            f"SELECT CAST(:cid AS INTEGER), subject_id, cohort_start_date, cohort_end_date FROM ({select}) c",
            {"cid": cid},
        )
    return int(cdm.scalar(f"SELECT count(*) FROM {table} WHERE cohort_definition_id = :cid", {"cid": cid}))


def cohort_rows(cdm: CDM, cohort_definition_id: int) -> pd.DataFrame:
    """The entries of one cohort: ``subject_id, cohort_start_date, cohort_end_date`` ordered by subject and date."""
    df = cdm.query(
        f"SELECT subject_id, cohort_start_date, cohort_end_date FROM {cdm.cohort_table} "
        "WHERE cohort_definition_id = :cid ORDER BY subject_id, cohort_start_date",
        {"cid": int(cohort_definition_id)},
    )
    for col in ("cohort_start_date", "cohort_end_date"):
        df[col] = pd.to_datetime(df[col])
    return df


def inclusion_attrition(cdm: CDM, definition: CohortDefinition | dict[str, Any] | str) -> pd.DataFrame:
    """Circe's inclusion report: after each rule in order, the events and persons that still qualify.

    Columns: ``step`` (0 = qualified events), ``rule``, ``events``, ``persons``, ``events_satisfying_rule``
    (the rule on its own, as ATLAS shows it).
    """
    cd = as_definition(definition)
    with cdm.hash_joins():
        flags = cdm.query(inclusion_sql(cd))
    rows = [{"step": 0, "rule": "qualifying events", "events": len(flags),
             "persons": int(flags["person_id"].nunique()), "events_satisfying_rule": len(flags)}]
    keep = pd.Series(True, index=flags.index)
    for i, rule in enumerate(cd.inclusion_rules):
        ok = flags[f"rule_{i}"].astype(int) == 1
        keep &= ok
        rows.append({"step": i + 1, "rule": rule.name, "events": int(keep.sum()),
                     "persons": int(flags.loc[keep, "person_id"].nunique()), "events_satisfying_rule": int(ok.sum())})
    return pd.DataFrame(rows)


@algorithm("nordfed.cohorts.instantiate", version="1")
def instantiate_partial(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Instantiate ``params["definition"]`` as ``params["cohort_definition_id"]`` at this node.

    Returns entry and person counts and the inclusion attrition, each count suppressed below the node's
    minimum cell count.
    """
    if data.cdm is None:
        raise ValueError(f"site {data.site} has no CDM")
    cd = as_definition(params["definition"])
    cid = int(params["cohort_definition_id"])
    entries = instantiate(data.cdm, cd, cid)
    persons = int(data.cdm.scalar(f"SELECT count(DISTINCT subject_id) FROM {data.cdm.cohort_table} "
                                  "WHERE cohort_definition_id = :c",
                                  {"c": cid}))
    attrition = inclusion_attrition(data.cdm, cd)
    # events and persons are chains (a rule's removals are differences of steps); a rule on its own is a part of
    # the qualifying events, whose count is step 0
    chains = {k: suppress_steps(attrition[k].astype(int).tolist(), data.policy) for k in ("events", "persons")}
    qualifying = int(attrition["events"].iloc[0]) if len(attrition) else 0
    table = [
        {"step": int(r["step"]), "rule": str(r["rule"]), **{k: chains[k][i] for k in chains},
         "events_satisfying_rule": suppress_part(int(r["events_satisfying_rule"]), qualifying, data.policy)}
        for i, (_, r) in enumerate(attrition.iterrows())
    ]
    return {**suppress_counts({"entries": entries, "persons": persons}, data.policy), "attrition": table}


@dataset("cohort")
def cohort_dataset(cdm: CDM, params: dict[str, Any]) -> pd.DataFrame:
    """Entries of cohort ``cohort_definition_id``; with ``definition`` given, instantiated first."""
    cid = int(params["cohort_definition_id"])
    if params.get("definition") is not None:
        instantiate(cdm, params["definition"], cid)
    return cohort_rows(cdm, cid)
