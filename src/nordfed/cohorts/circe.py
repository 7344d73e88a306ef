"""Parse the subset of OHDSI Circe cohort JSON (what ATLAS exports) that nordfed can run.

Every object is checked against the keys we understand; anything else fails with a :class:`CirceError`
naming its JSON path, so a definition never runs with part of its logic silently ignored.

>>> cd = parse_cohort(json.loads(Path("studies/cohorts/crc_resection.json").read_text()))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nordfed.cohorts.circe_json import (
    CirceError,
    check_keys,
    is_unset,
    json_bool,
    json_int,
    json_list,
    json_object,
    no_duplicates,
    object_pairs,
)

DOMAINS = ("ConditionOccurrence", "ProcedureOccurrence", "DrugExposure", "Measurement", "Observation",
           "VisitOccurrence", "Death")
LIMITS = ("First", "All", "Last")
GROUP_TYPES = ("ALL", "ANY", "AT_LEAST", "AT_MOST")
_OPS = ("lt", "lte", "gt", "gte", "eq", "neq", "bt", "!bt")


@dataclass(frozen=True)
class ConceptSetItem:
    concept_id: int
    is_excluded: bool = False
    include_descendants: bool = False
    include_mapped: bool = False


@dataclass(frozen=True)
class ConceptSet:
    id: int
    name: str
    items: tuple[ConceptSetItem, ...]


@dataclass(frozen=True)
class Range:
    """A Circe numeric or date range (``{"Value": .., "Op": .., "Extent": ..}``)."""

    op: str
    value: Any
    extent: Any = None


@dataclass(frozen=True)
class DomainCriterion:
    domain: str
    codeset_id: int | None
    first: bool = False
    occurrence_start_date: Range | None = None
    age: Range | None = None
    gender: tuple[int, ...] = ()


@dataclass(frozen=True)
class WindowBound:
    days: int | None  # None: unbounded
    coeff: int


@dataclass(frozen=True)
class Window:
    start: WindowBound
    end: WindowBound
    use_index_end: bool = False
    use_event_end: bool = False


@dataclass(frozen=True)
class Occurrence:
    type: int  # 0 exactly, 1 at most, 2 at least
    count: int
    is_distinct: bool = False
    count_column: str = "DOMAIN_CONCEPT"


@dataclass(frozen=True)
class CorrelatedCriterion:
    criterion: DomainCriterion
    start_window: Window
    end_window: Window | None
    occurrence: Occurrence
    ignore_observation_period: bool = False


@dataclass(frozen=True)
class Group:
    type: str = "ALL"
    count: int | None = None
    criteria: tuple[CorrelatedCriterion, ...] = ()
    groups: tuple[Group, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.criteria and not self.groups


@dataclass(frozen=True)
class InclusionRule:
    name: str
    expression: Group


@dataclass(frozen=True)
class CohortDefinition:
    concept_sets: tuple[ConceptSet, ...]
    primary: tuple[DomainCriterion, ...]
    prior_days: int = 0
    post_days: int = 0
    primary_limit: str = "First"
    additional: Group | None = None  # None: no AdditionalCriteria, so QualifiedLimit does not apply (as Circe)
    qualified_limit: str = "First"
    inclusion_rules: tuple[InclusionRule, ...] = ()
    expression_limit: str = "First"
    end_offset: tuple[str, int] | None = None  # (StartDate|EndDate, days); None: end of observation period
    censoring: tuple[DomainCriterion, ...] = ()
    censor_window: tuple[dt.date | None, dt.date | None] = (None, None)
    era_pad: int = 0
    title: str = ""


# ---------------------------------------------------------------------------------------------- helpers
def _limit(value: Any, path: str) -> str:
    if value is None:
        return "First"
    obj = json_object(value, path)
    check_keys(obj, path, {"Type"})
    t = obj.get("Type", "First")
    if t not in LIMITS:
        raise CirceError(f"{path}.Type", f"must be one of {', '.join(LIMITS)}, got {t!r}")
    return str(t)


def _range(value: Any, path: str, dates: bool) -> Range | None:
    if value is None:
        return None
    obj = json_object(value, path)
    check_keys(obj, path, {"Value", "Op", "Extent"})
    op = obj.get("Op")
    if op not in _OPS:
        raise CirceError(f"{path}.Op", f"must be one of {', '.join(_OPS)}, got {op!r}")

    def conv(v: Any, p: str) -> Any:
        if v is None:
            return None
        if dates:
            try:
                return dt.date.fromisoformat(str(v)[:10])
            except ValueError:
                raise CirceError(p, f"expected a date YYYY-MM-DD, got {v!r}") from None
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
            raise CirceError(p, f"expected a number, got {v!r}")
        return v

    value_ = conv(obj.get("Value"), f"{path}.Value")
    extent = conv(obj.get("Extent"), f"{path}.Extent")
    if value_ is None:
        raise CirceError(f"{path}.Value", "is required")
    if op in ("bt", "!bt") and extent is None:
        raise CirceError(f"{path}.Extent", f"is required for Op {op!r}")
    if op in ("bt", "!bt") and extent < value_:
        # between 80 and 18 matches nothing (and its negation everything): a swapped range, not a criterion
        raise CirceError(f"{path}.Extent", f"{obj.get('Extent')!r} is below Value {obj.get('Value')!r}; "
                                           "give the range low to high")
    return Range(op, value_, extent)


# ---------------------------------------------------------------------------------------------- parsing
def _concept_sets(value: Any, path: str) -> tuple[ConceptSet, ...]:
    out = []
    seen: set[int] = set()
    for i, cs in enumerate(json_list(value, path)):
        p = f"{path}[{i}]"
        cs = json_object(cs, p)
        check_keys(cs, p, {"id", "name", "expression"})
        cs_id = json_int(cs.get("id"), f"{p}.id")
        if cs_id in seen:
            raise CirceError(f"{p}.id", f"concept set id {cs_id} is defined twice")
        seen.add(cs_id)
        expr = json_object(cs.get("expression", {"items": []}), f"{p}.expression")
        check_keys(expr, f"{p}.expression", {"items"})
        items = []
        for j, it in enumerate(json_list(expr.get("items"), f"{p}.expression.items")):
            ip = f"{p}.expression.items[{j}]"
            it = json_object(it, ip)
            check_keys(it, ip, {"concept", "isExcluded", "includeDescendants", "includeMapped"})
            concept = json_object(it.get("concept"), f"{ip}.concept")
            items.append(ConceptSetItem(
                concept_id=json_int(concept.get("CONCEPT_ID"), f"{ip}.concept.CONCEPT_ID"),
                is_excluded=json_bool(it.get("isExcluded"), f"{ip}.isExcluded"),
                include_descendants=json_bool(it.get("includeDescendants"), f"{ip}.includeDescendants"),
                include_mapped=json_bool(it.get("includeMapped"), f"{ip}.includeMapped"),
            ))
        out.append(ConceptSet(cs_id, str(cs.get("name", "")), tuple(items)))
    return tuple(out)


def _domain_criterion(value: Any, path: str, codesets: set[int]) -> DomainCriterion:
    obj = json_object(value, path)
    if len(obj) != 1:
        raise CirceError(path, f"expected exactly one criteria type ({', '.join(DOMAINS)}), got {sorted(obj)}")
    domain, body = next(iter(obj.items()))
    if domain not in DOMAINS:
        raise CirceError(f"{path}.{domain}", f"criteria type is not supported (supported: {', '.join(DOMAINS)})")
    p = f"{path}.{domain}"
    body = json_object(body, p)
    known = {"CodesetId", "First", "OccurrenceStartDate", "Age", "Gender"}
    if domain == "Death":
        known = {"CodesetId", "OccurrenceStartDate", "Age", "Gender"}
    check_keys(body, p, known)
    codeset = body.get("CodesetId")
    if codeset is not None:
        codeset = json_int(codeset, f"{p}.CodesetId")
        if codeset not in codesets:
            raise CirceError(f"{p}.CodesetId", f"refers to concept set {codeset}, which is not defined in ConceptSets")
    elif domain != "Death":
        raise CirceError(f"{p}.CodesetId", "is required (criteria without a concept set are not supported)")
    genders = tuple(
        json_int(json_object(g, f"{p}.Gender[{k}]").get("CONCEPT_ID"), f"{p}.Gender[{k}].CONCEPT_ID")
        for k, g in enumerate(json_list(body.get("Gender"), f"{p}.Gender"))
    )
    return DomainCriterion(
        domain=domain,
        codeset_id=codeset,
        first=json_bool(body.get("First"), f"{p}.First"),
        occurrence_start_date=_range(body.get("OccurrenceStartDate"), f"{p}.OccurrenceStartDate", dates=True),
        age=_range(body.get("Age"), f"{p}.Age", dates=False),
        gender=genders,
    )


def _window(value: Any, path: str) -> Window:
    obj = json_object(value, path)
    check_keys(obj, path, {"Start", "End", "UseIndexEnd", "UseEventEnd"})

    def bound(v: Any, p: str) -> WindowBound:
        b = json_object(v if v is not None else {}, p)
        check_keys(b, p, {"Days", "Coeff"})
        days = b.get("Days")
        coeff = json_int(b.get("Coeff"), f"{p}.Coeff", default=1)
        if coeff not in (-1, 1):
            raise CirceError(f"{p}.Coeff", f"must be -1 or 1, got {coeff}")
        if days is not None and json_int(days, f"{p}.Days") < 0:
            # Circe multiplies: Days -90 with Coeff -1 is 90 days AFTER the index, not before
            raise CirceError(f"{p}.Days", f"must not be negative, got {days} (Coeff gives the direction: "
                                          "-1 before the index date, 1 after)")
        return WindowBound(None if days is None else json_int(days, f"{p}.Days"), coeff)

    window = Window(
        start=bound(obj.get("Start"), f"{path}.Start"),
        end=bound(obj.get("End"), f"{path}.End"),
        use_index_end=json_bool(obj.get("UseIndexEnd"), f"{path}.UseIndexEnd"),
        use_event_end=json_bool(obj.get("UseEventEnd"), f"{path}.UseEventEnd"),
    )
    lo, hi = window.start, window.end
    if lo.days is not None and hi.days is not None and lo.days * lo.coeff > hi.days * hi.coeff:
        # no date lies in such a window: "at least 1" would drop everyone and "exactly 0" keep everyone
        raise CirceError(path, f"starts {_signed(lo)} and ends {_signed(hi)} the index date: it starts after "
                               "it ends, so no event can fall in it")
    return window


def _signed(b: WindowBound) -> str:
    days = int(b.days or 0)
    return f"{days} days {'before' if b.coeff < 0 else 'after'}"


def _occurrence(value: Any, path: str) -> Occurrence:
    obj = json_object(value, path)
    check_keys(obj, path, {"Type", "Count", "IsDistinct", "CountColumn"})
    t = json_int(obj.get("Type"), f"{path}.Type")
    if t not in (0, 1, 2):
        raise CirceError(f"{path}.Type", f"must be 0 (exactly), 1 (at most) or 2 (at least), got {t}")
    col = obj.get("CountColumn") or "DOMAIN_CONCEPT"
    if col not in ("DOMAIN_CONCEPT", "START_DATE"):
        raise CirceError(f"{path}.CountColumn", f"must be DOMAIN_CONCEPT or START_DATE, got {col!r}")
    count = json_int(obj.get("Count"), f"{path}.Count", minimum=0)
    return Occurrence(t, count, json_bool(obj.get("IsDistinct"), f"{path}.IsDistinct"), col)


def _group(value: Any, path: str, codesets: set[int]) -> Group:
    obj = json_object(value, path)
    check_keys(obj, path, {"Type", "Count", "CriteriaList", "Groups", "DemographicCriteriaList"})
    gtype = obj.get("Type", "ALL")
    if gtype not in GROUP_TYPES:
        raise CirceError(f"{path}.Type", f"must be one of {', '.join(GROUP_TYPES)}, got {gtype!r}")
    count = None
    if gtype in ("AT_LEAST", "AT_MOST"):
        count = json_int(obj.get("Count"), f"{path}.Count")
    if json_list(obj.get("DemographicCriteriaList"), f"{path}.DemographicCriteriaList"):
        raise CirceError(f"{path}.DemographicCriteriaList", "is not supported by nordfed's Circe subset")
    criteria = []
    for i, c in enumerate(json_list(obj.get("CriteriaList"), f"{path}.CriteriaList")):
        p = f"{path}.CriteriaList[{i}]"
        c = json_object(c, p)
        check_keys(c, p, {"Criteria", "StartWindow", "EndWindow", "Occurrence", "IgnoreObservationPeriod"})
        if c.get("StartWindow") is None:
            # Circe has no default; reading a missing window as "any time" would change what the rule means
            raise CirceError(f"{p}.StartWindow", "is required (the days before and after the index date to look "
                                                 "in; Days null for no limit)")
        criteria.append(CorrelatedCriterion(
            criterion=_domain_criterion(c.get("Criteria"), f"{p}.Criteria", codesets),
            start_window=_window(c["StartWindow"], f"{p}.StartWindow"),
            end_window=_window(c["EndWindow"], f"{p}.EndWindow") if c.get("EndWindow") else None,
            occurrence=_occurrence(c.get("Occurrence"), f"{p}.Occurrence"),
            ignore_observation_period=json_bool(c.get("IgnoreObservationPeriod"), f"{p}.IgnoreObservationPeriod"),
        ))
    groups = tuple(_group(g, f"{path}.Groups[{i}]", codesets)
                   for i, g in enumerate(json_list(obj.get("Groups"), f"{path}.Groups")))
    return Group(str(gtype), count, tuple(criteria), groups)


def _end_strategy(value: Any, path: str) -> tuple[str, int] | None:
    if is_unset(value):
        return None
    obj = json_object(value, path)
    if obj.get("CustomEra") is not None:  # even {}: Circe would run a custom era with its defaults
        raise CirceError(f"{path}.CustomEra", "is not supported by nordfed's Circe subset (use DateOffset)")
    check_keys(obj, path, {"DateOffset"})
    if obj.get("DateOffset") is None:
        return None  # {"CustomEra": null}: neither strategy, so the end of the observation period, as Circe
    off = json_object(obj["DateOffset"], f"{path}.DateOffset")
    check_keys(off, f"{path}.DateOffset", {"DateField", "Offset"})
    date_field = off.get("DateField", "StartDate")
    if date_field not in ("StartDate", "EndDate"):
        raise CirceError(f"{path}.DateOffset.DateField", f"must be StartDate or EndDate, got {date_field!r}")
    return str(date_field), json_int(off.get("Offset"), f"{path}.DateOffset.Offset", default=0)


def _censor_window(value: Any, path: str) -> tuple[dt.date | None, dt.date | None]:
    if is_unset(value):
        return None, None
    obj = json_object(value, path)
    check_keys(obj, path, {"StartDate", "EndDate"})
    out = []
    for key in ("StartDate", "EndDate"):
        v = obj.get(key)
        try:
            out.append(None if v is None else dt.date.fromisoformat(str(v)[:10]))
        except ValueError:
            raise CirceError(f"{path}.{key}", f"expected a date YYYY-MM-DD, got {v!r}") from None
    if out[0] is not None and out[1] is not None and out[0] > out[1]:
        raise CirceError(f"{path}.EndDate", f"{out[1]} is before StartDate {out[0]}: the window would censor every "
                                            "entry")
    return out[0], out[1]


def parse_cohort(definition: dict[str, Any] | str) -> CohortDefinition:
    """Parse Circe JSON (a dict or JSON text) into a :class:`CohortDefinition`; errors name the JSON path."""
    if isinstance(definition, str):
        try:
            definition = json.loads(definition, object_pairs_hook=object_pairs)
        except json.JSONDecodeError as exc:
            raise CirceError("$", f"not valid JSON: {exc}") from None
        no_duplicates(definition, "$")
    root = json_object(definition, "$")
    check_keys(root, "$", {
        "ConceptSets", "PrimaryCriteria", "QualifiedLimit", "ExpressionLimit", "InclusionRules", "EndStrategy",
        "CensoringCriteria", "CollapseSettings", "CensorWindow", "AdditionalCriteria",
    }, ignored={"cdmVersionRange", "Title", "title", "name", "description", "id"})
    concept_sets = _concept_sets(root.get("ConceptSets"), "$.ConceptSets")
    codesets = {cs.id for cs in concept_sets}
    if "PrimaryCriteria" not in root:
        raise CirceError("$.PrimaryCriteria", "is required")
    pc = json_object(root["PrimaryCriteria"], "$.PrimaryCriteria")
    check_keys(pc, "$.PrimaryCriteria", {"CriteriaList", "ObservationWindow", "PrimaryCriteriaLimit"})
    primary = tuple(_domain_criterion(c, f"$.PrimaryCriteria.CriteriaList[{i}]", codesets)
                    for i, c in enumerate(json_list(pc.get("CriteriaList"), "$.PrimaryCriteria.CriteriaList")))
    if not primary:
        raise CirceError("$.PrimaryCriteria.CriteriaList", "needs at least one criterion")
    ow = json_object(pc.get("ObservationWindow") or {}, "$.PrimaryCriteria.ObservationWindow")
    check_keys(ow, "$.PrimaryCriteria.ObservationWindow", {"PriorDays", "PostDays"})
    rules = []
    for i, r in enumerate(json_list(root.get("InclusionRules"), "$.InclusionRules")):
        p = f"$.InclusionRules[{i}]"
        r = json_object(r, p)
        check_keys(r, p, {"name", "expression"}, ignored={"description"})
        if r.get("expression") is None:
            # a rule without an expression would keep every entry: its criteria were lost, not absent
            raise CirceError(f"{p}.expression", "is required")
        rules.append(InclusionRule(str(r.get("name") or f"rule {i}"), _group(r["expression"], f"{p}.expression",
                                                                              codesets)))
    collapse = json_object(root.get("CollapseSettings") or {}, "$.CollapseSettings")
    check_keys(collapse, "$.CollapseSettings", {"CollapseType", "EraPad"})
    if collapse.get("CollapseType", "ERA") != "ERA":
        raise CirceError("$.CollapseSettings.CollapseType", "only ERA is supported")
    additional = root.get("AdditionalCriteria")
    return CohortDefinition(
        concept_sets=concept_sets,
        primary=primary,
        prior_days=json_int(ow.get("PriorDays"), "$.PrimaryCriteria.ObservationWindow.PriorDays", default=0,
                        minimum=0),
        post_days=json_int(ow.get("PostDays"), "$.PrimaryCriteria.ObservationWindow.PostDays", default=0, minimum=0),
        primary_limit=_limit(pc.get("PrimaryCriteriaLimit"), "$.PrimaryCriteria.PrimaryCriteriaLimit"),
        # null means none; {} is an (empty) group to Circe, which then applies QualifiedLimit (see cohorts.sql)
        additional=None if additional is None else _group(additional, "$.AdditionalCriteria", codesets),
        qualified_limit=_limit(root.get("QualifiedLimit"), "$.QualifiedLimit"),
        inclusion_rules=tuple(rules),
        expression_limit=_limit(root.get("ExpressionLimit"), "$.ExpressionLimit"),
        end_offset=_end_strategy(root.get("EndStrategy"), "$.EndStrategy"),
        censoring=tuple(_domain_criterion(c, f"$.CensoringCriteria[{i}]", codesets)
                        for i, c in enumerate(json_list(root.get("CensoringCriteria"), "$.CensoringCriteria"))),
        censor_window=_censor_window(root.get("CensorWindow"), "$.CensorWindow"),
        era_pad=json_int(collapse.get("EraPad"), "$.CollapseSettings.EraPad", default=0, minimum=0),
        title=str(root.get("Title") or root.get("title") or root.get("name") or ""),
    )


def load_cohort(path: str | Path) -> CohortDefinition:
    """Read and parse a Circe JSON file; errors name the file and the JSON path."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:  # a folder, no permission, ...
        raise CirceError(str(p), f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise CirceError(str(p), f"not UTF-8 text (byte {exc.start}): save the JSON as UTF-8") from None
    try:
        return parse_cohort(text)
    except CirceError as exc:
        raise CirceError(f"{p}:{exc.path}", str(exc).split(": ", 1)[1]) from None
