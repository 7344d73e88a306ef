"""Hand-written Circe cohort JSON: every definition nordfed cannot run as written is an error naming its JSON
path, never a part silently ignored or given a meaning Circe does not give it, and never a Python traceback."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nordfed.cohorts.circe import CirceError, load_cohort, parse_cohort
from nordfed.cohorts.instantiate import cohort_rows, instantiate
from test_cohorts_support import D, concept, condition, cs, new_cdm, person

STUDIES = Path(__file__).resolve().parents[1] / "studies"
CRC = json.loads((STUDIES / "cohorts" / "crc_resection.json").read_text(encoding="utf-8"))
RULE = "$.InclusionRules[0].expression.CriteriaList[0]"
PRIMARY = "$.PrimaryCriteria.CriteriaList[0].ProcedureOccurrence"


def _criterion(d: dict[str, Any]) -> dict[str, Any]:
    return d["InclusionRules"][0]["expression"]["CriteriaList"][0]


def _primary(d: dict[str, Any]) -> dict[str, Any]:
    return d["PrimaryCriteria"]["CriteriaList"][0]["ProcedureOccurrence"]


Mutation = Callable[[dict[str, Any]], None]


@pytest.mark.parametrize(("mutate", "path", "says"), [
    # Circe multiplies Days by Coeff: "Days": -90, "Coeff": -1 is 90 days AFTER the index, not before
    (lambda d: _criterion(d)["StartWindow"]["Start"].update(Days=-90, Coeff=-1), f"{RULE}.StartWindow.Start.Days",
     "must not be negative"),
    # a window that starts after it ends holds no event: "at least 1" would silently empty the cohort
    (lambda d: _criterion(d)["StartWindow"].update(Start={"Days": 0, "Coeff": 1}, End={"Days": 90, "Coeff": -1}),
     f"{RULE}.StartWindow", "starts after it ends"),
    # Circe has no default window; "any time" would change what the rule means
    (lambda d: _criterion(d).pop("StartWindow"), f"{RULE}.StartWindow", "is required"),
    # an inclusion rule without its expression would keep every entry
    (lambda d: d["InclusionRules"][0].update(expression=None), "$.InclusionRules[0].expression", "is required"),
    # unknown keys in a limit object were dropped without a word
    (lambda d: d["PrimaryCriteria"].update(PrimaryCriteriaLimit={"Type": "First", "Count": 2}),
     "$.PrimaryCriteria.PrimaryCriteriaLimit.Count", "not supported"),
    (lambda d: d.update(QualifiedLimit={"Type": "First", "Foo": "x"}), "$.QualifiedLimit.Foo", "not supported"),
    # between 80 and 18 matches nobody
    (lambda d: _primary(d).update(Age={"Op": "bt", "Value": 80, "Extent": 18}), f"{PRIMARY}.Age.Extent",
     "is below Value 80"),
    (lambda d: d.update(CensorWindow={"StartDate": "2020-01-01", "EndDate": "2010-01-01"}), "$.CensorWindow.EndDate",
     "is before StartDate"),
    (lambda d: d["PrimaryCriteria"]["ObservationWindow"].update(PriorDays=-365),
     "$.PrimaryCriteria.ObservationWindow.PriorDays", "must be at least 0"),
    (lambda d: d["CollapseSettings"].update(EraPad=-1), "$.CollapseSettings.EraPad", "must be at least 0"),
    # an empty custom era is still a custom era (Circe would run one with its defaults); it raised KeyError
    (lambda d: d.update(EndStrategy={"CustomEra": {}}), "$.EndStrategy.CustomEra", "not supported"),
    # NaN and Infinity are numbers to Python's json module; int() of them used to raise a bare ValueError or
    # OverflowError (a traceback from `nordfed study run`)
    (lambda d: d["CollapseSettings"].update(EraPad=float("inf")), "$.CollapseSettings.EraPad",
     "expected an integer, got inf"),
    (lambda d: _primary(d).update(Age={"Op": "gt", "Value": float("nan")}), f"{PRIMARY}.Age.Value",
     "expected a number"),
])
def test_definitions_nordfed_would_misread_are_errors_naming_the_json_path(mutate: Mutation, path: str,
                                                                           says: str) -> None:
    d = copy.deepcopy(CRC)
    mutate(d)
    with pytest.raises(CirceError) as err:
        parse_cohort(d)
    assert err.value.path == path and says in str(err.value), str(err.value)


def test_an_end_strategy_with_neither_strategy_ends_at_the_observation_period() -> None:
    # {"CustomEra": null} is no strategy at all (Circe: end of the observation period); it raised KeyError
    d = copy.deepcopy(CRC)
    d["EndStrategy"] = {"CustomEra": None}
    assert parse_cohort(d).end_offset is None
    d["EndStrategy"] = {"DateOffset": None}
    assert parse_cohort(d).end_offset is None
    d["EndStrategy"] = {"DateOffset": {}}  # a date offset with Circe's defaults: the start date + 0 days
    assert parse_cohort(d).end_offset == ("StartDate", 0)


def test_a_key_given_twice_is_an_error_not_the_last_one_silently() -> None:
    text = json.dumps(CRC, indent=1)
    # a second InclusionRules list (e.g. pasted from another definition) replaced the first one unnoticed
    twice = text.replace('"InclusionRules": [', '"InclusionRules": [],\n "InclusionRules": [', 1)
    with pytest.raises(CirceError) as err:
        parse_cohort(twice)
    assert err.value.path == "$.InclusionRules" and "appears twice" in str(err.value)
    # nested too, with the path of the object that has it
    nested = text.replace('"Type": 2,', '"Type": 2, "Type": 0,', 1)
    assert nested != text
    with pytest.raises(CirceError) as err:
        parse_cohort(nested)
    assert err.value.path == f"{RULE}.Occurrence.Type"
    assert parse_cohort(text).inclusion_rules  # the definition itself is fine


def test_unreadable_cohort_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CirceError, match=rf"^{re.escape(str(tmp_path))}: cannot read: Is a directory"):
        load_cohort(tmp_path)
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(json.dumps({**CRC, "Title": "Résection"}, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(CirceError, match=rf"^{re.escape(str(latin1))}: not UTF-8 text"):
        load_cohort(latin1)


def test_type_errors_say_what_json_gave() -> None:
    d = copy.deepcopy(CRC)
    del _criterion(d)["Occurrence"]
    with pytest.raises(CirceError, match=r"Occurrence: expected an object, got null \(or nothing\)"):
        parse_cohort(d)


def test_qualified_limit_applies_only_with_additional_criteria(cdm_url: str) -> None:
    # ATLAS writes QualifiedLimit {"Type": "First"} into every definition; Circe applies it only when the
    # definition has AdditionalCriteria, so "all events" in the primary criteria kept only each person's first
    cdm = new_cdm(cdm_url)
    concept(cdm, {100: "Colon cancer"})
    person(cdm, 1, 1950)
    condition(cdm, 1, 100, "2015-03-01")
    condition(cdm, 1, 100, "2016-03-01")
    d = {"ConceptSets": [cs(0, (100, False, False))],
         "PrimaryCriteria": {"CriteriaList": [{"ConditionOccurrence": {"CodesetId": 0}}],
                             "PrimaryCriteriaLimit": {"Type": "All"}},
         "QualifiedLimit": {"Type": "First"}, "ExpressionLimit": {"Type": "All"},
         "EndStrategy": {"DateOffset": {"DateField": "StartDate", "Offset": 0}}}
    instantiate(cdm, d, 1)
    assert cohort_rows(cdm, 1)["cohort_start_date"].dt.date.tolist() == [D("2015-03-01"), D("2016-03-01")]
    # with AdditionalCriteria given (even an empty group), Circe keeps the first qualifying event
    instantiate(cdm, {**d, "AdditionalCriteria": {"Type": "ALL", "CriteriaList": [], "Groups": []}}, 2)
    assert cohort_rows(cdm, 2)["cohort_start_date"].dt.date.tolist() == [D("2015-03-01")]
    cdm.close()
