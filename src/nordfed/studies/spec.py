"""The study YAML: pydantic models of a PLP study and a survival study, loaded with errors naming file and field.

>>> spec = load_spec("studies/crc_1y_mortality.yaml")      # doctest: +SKIP
>>> spec.kind, spec.model.type                               # doctest: +SKIP
('plp', 'lasso')
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from nordfed.cohorts.circe import CirceError, load_cohort
from nordfed.features.covariates import CovariateSettings


class SpecError(ValueError):
    """A study YAML that cannot be used; the message names the file and the field."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{path}: " + ("; ".join(problems) if len(problems) == 1 else
                                        "\n  " + "\n  ".join(problems)))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Population(_Strict):
    """PatientLevelPrediction's createStudyPopulation settings, under PLP's own (camelCase) names."""

    washout_period: int = Field(0, alias="washoutPeriod", ge=0)
    first_exposure_only: bool = Field(False, alias="firstExposureOnly")
    remove_subjects_with_prior_outcome: bool = Field(True, alias="removeSubjectsWithPriorOutcome")
    prior_outcome_lookback: int = Field(99999, alias="priorOutcomeLookback", ge=0)
    require_time_at_risk: bool = Field(True, alias="requireTimeAtRisk")
    min_time_at_risk: int = Field(364, alias="minTimeAtRisk", ge=0)
    risk_window_start: int = Field(1, alias="riskWindowStart")
    start_anchor: Literal["cohort start", "cohort end"] = Field("cohort start", alias="startAnchor")
    risk_window_end: int = Field(365, alias="riskWindowEnd")
    end_anchor: Literal["cohort start", "cohort end"] = Field("cohort start", alias="endAnchor")
    include_all_outcomes: bool = Field(True, alias="includeAllOutcomes")

    @model_validator(mode="after")
    def _window(self) -> Population:
        if self.start_anchor == self.end_anchor and self.risk_window_end < self.risk_window_start:
            raise ValueError(f"riskWindowEnd ({self.risk_window_end}) is before riskWindowStart "
                             f"({self.risk_window_start})")
        longest = self.risk_window_end - self.risk_window_start + 1
        if self.start_anchor == self.end_anchor and self.require_time_at_risk and self.min_time_at_risk > longest:
            # nobody can be at risk that long: every person without the outcome would leave the population
            # (PatientLevelPrediction only warns), and the outcome rate would read as 100 %
            raise ValueError(f"minTimeAtRisk ({self.min_time_at_risk}) is longer than the risk window "
                             f"(riskWindowStart {self.risk_window_start} to riskWindowEnd {self.risk_window_end}: "
                             f"{longest} days); lower it or set requireTimeAtRisk: false")
        return self

    def settings(self) -> dict[str, Any]:
        """As :meth:`nordfed.cohorts.population.PopulationSettings.from_dict` takes them."""
        return self.model_dump(by_alias=False)

    def describe(self) -> str:
        return (f"{self.risk_window_start} to {self.risk_window_end} days after {self.end_anchor}"
                + (f" (at least {self.min_time_at_risk} days at risk unless the outcome occurred)"
                   if self.require_time_at_risk else ""))


class OutcomeCohort(_Strict):
    cohort: str = Field(description="Circe JSON of the outcome cohort (path relative to the YAML)")


class Preprocessing(_Strict):
    min_fraction: float = Field(0.001, ge=0, lt=1)
    #: keep only the most prevalent covariates (a site refuses models with more than 0.33 parameters per row)
    max_covariates: int | None = Field(None, ge=1)
    normalize: bool = True
    remove_redundancy: bool = True


class Model(_Strict):
    type: Literal["lasso", "elastic_net", "ridge"] = "lasso"
    alpha: float | None = Field(None, ge=0, le=1, description="L1 share; lasso = 1, ridge = 0")
    n_lambda: int = Field(50, ge=2, le=1000)
    lambda_min_ratio: float | None = Field(None, gt=0, lt=1)
    cv_folds: int = Field(5, ge=2, le=20)
    selection: Literal["min", "1se"] = "min"
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _alpha(self) -> Model:
        fixed = {"lasso": 1.0, "ridge": 0.0}
        if self.type in fixed and self.alpha is not None and self.alpha != fixed[self.type]:
            raise ValueError(f"alpha {self.alpha} contradicts type {self.type} (alpha = {fixed[self.type]})")
        if self.type == "elastic_net" and (self.alpha is None or not 0 < self.alpha < 1):
            raise ValueError("elastic_net needs alpha strictly between 0 and 1")
        return self

    @property
    def l1(self) -> float:
        return {"lasso": 1.0, "ridge": 0.0}.get(self.type, self.alpha if self.alpha is not None else 0.5)


class Evaluation(_Strict):
    test_fraction: float = Field(0.25, description="share of each site's persons held out (stratified by outcome) "
                                 "for internal validation, as PatientLevelPrediction's testFraction; 0: evaluate "
                                 "on the training rows (apparent performance, optimistic)")
    leave_one_site_out: bool = True
    temporal_split: dt.date | None = Field(None, description="train before this index date, test on or after")

    @field_validator("test_fraction")
    @classmethod
    def _fraction(cls, f: float) -> float:
        from nordfed.fed.lasso_site import SPLIT_FRACTIONS

        lo, hi = SPLIT_FRACTIONS
        if f != 0 and not lo <= f <= hi:
            raise ValueError(f"must be 0 (no test part) or between {lo} and {hi}")
        return f


class RiskGroups(_Strict):
    quantiles: list[float] | None = None
    cutoffs: list[float] | None = None
    bundles: list[str] | None = None

    @model_validator(mode="after")
    def _groups(self) -> RiskGroups:
        if self.quantiles is not None and self.cutoffs is not None:
            raise ValueError("give quantiles or cutoffs, not both")
        cuts = self.cutoffs if self.cutoffs is not None else self.quantiles
        if cuts is None:
            self.quantiles = cuts = [0.25, 0.5, 0.75]
        if not cuts or any(not 0 < c < 1 for c in cuts) or any(b <= a for a, b in itertools.pairwise(cuts)):
            raise ValueError("quantiles / cutoffs must be increasing and strictly between 0 and 1")
        if self.bundles is not None and len(self.bundles) != len(cuts) + 1:
            raise ValueError(f"{len(cuts)} cut points make {len(cuts) + 1} groups but {len(self.bundles)} bundles "
                             "are named")
        return self


class Disclosure(_Strict):
    min_cell_count: int = Field(10, ge=1)
    exact_event_times: bool = False
    time_grid_days: int | None = Field(None, ge=1)


class Synthetic(_Strict):
    sites: list[str] = Field(min_length=1)
    persons: int = Field(ge=100)
    seed: int = Field(0, ge=0)
    dir: str = "data/synthetic"

    @field_validator("sites", mode="before")
    @classmethod
    def _norway(cls, sites: Any) -> Any:
        return _quoted_codes(sites, '["DK", "NO", "SE"]')

    @field_validator("sites")
    @classmethod
    def _known(cls, sites: list[str]) -> list[str]:
        from nordfed.synth import SITES

        bad = [s for s in sites if s.upper() not in SITES]
        if bad:
            raise ValueError(f"unknown synthetic site(s) {', '.join(bad)}; known: {', '.join(SITES)}")
        if len({s.upper() for s in sites}) != len(sites):
            raise ValueError("a synthetic site is listed twice")
        return [s.upper() for s in sites]


def _quoted_codes(sites: Any, example: str) -> Any:
    """Site codes (a list, or a mapping's keys) as given, unless YAML read one as a boolean: a bare NO (or YES,
    ON, OFF) is one."""
    if isinstance(sites, list | dict) and any(isinstance(s, bool) for s in sites):
        raise ValueError("a site code read as true/false: YAML turns a bare NO (or YES, ON, OFF) into a "
                         f"boolean; quote the codes, e.g. {example}")
    return sites


class GroundTruth(_Strict):
    #: truth variables whose |beta| x SD(term) reaches this are the "main risk factors" of the acceptance check
    main_factor_min_effect: float = Field(0.2, gt=0)
    auroc_tolerance: float = Field(0.02, gt=0, lt=1)


class _Study(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    target: str = Field(description="Circe JSON of the target cohort (path relative to the YAML)")
    outcome: Literal["death"] | OutcomeCohort = "death"
    population: Population = Field(default_factory=Population)
    sites: dict[str, str] | None = None
    synthetic: Synthetic | None = None
    disclosure: Disclosure = Field(default_factory=Disclosure)
    ground_truth: GroundTruth = Field(default_factory=GroundTruth)
    _source: str = PrivateAttr(".")

    @field_validator("sites", mode="before")
    @classmethod
    def _norway(cls, sites: Any) -> Any:
        return _quoted_codes(sites, '"NO": duckdb:///no.duckdb')

    @field_validator("sites")
    @classmethod
    def _urls(cls, sites: dict[str, str] | None) -> dict[str, str] | None:
        from nordfed.omop.store import CDMError, CDMUrl

        for site, url in (sites or {}).items():
            try:  # a bare path (dk.duckdb) is not a URL: found here, not as a traceback when the study opens it
                CDMUrl.parse(url)
            except CDMError as exc:
                raise ValueError(f"{site}: {exc}") from None
        return sites

    @model_validator(mode="after")
    def _where(self) -> _Study:
        if self.sites is not None and self.synthetic is not None:
            raise ValueError("give sites or synthetic, not both")
        return self

    @property
    def source(self) -> Path:
        return Path(self._source)

    def resolve(self, path: str) -> Path:
        """A path of the YAML, relative to the YAML's folder."""
        p = Path(path)
        return p if p.is_absolute() else (self.source.parent / p)


class PlpStudy(_Study):
    kind: Literal["plp"] = "plp"
    covariates: dict[str, Any] = Field(default_factory=dict)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    model: Model = Field(default_factory=Model)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    risk_groups: RiskGroups = Field(default_factory=RiskGroups)

    @field_validator("covariates")
    @classmethod
    def _covariates(cls, value: dict[str, Any]) -> dict[str, Any]:
        settings = CovariateSettings.from_dict(value)  # unknown names and wrong types raise ValueError
        for start in ("long_term_start_days", "short_term_start_days"):
            if getattr(settings, start) > settings.end_days:
                raise ValueError(f"{start} ({getattr(settings, start)}) is after end_days ({settings.end_days}): "
                                 "its windows would be empty")
        return value


def _ordered_window(window: tuple[int, int]) -> tuple[int, int]:
    if window[0] > window[1]:
        raise ValueError(f"window {window[0]}, {window[1]} starts after it ends (give the first day first, in "
                         "days relative to the index date, e.g. -90, 0)")
    return window


class Categorical(_Strict):
    """A grouping read from one domain in a window before the index date: label -> concept ids."""

    domain: Literal["measurement", "condition_occurrence", "observation"] = "measurement"
    window: tuple[int, int] = (-90, 0)
    levels: dict[str, list[int]] = Field(min_length=2)
    reference: str | None = None

    @field_validator("window")
    @classmethod
    def _ordered(cls, window: tuple[int, int]) -> tuple[int, int]:
        return _ordered_window(window)

    @model_validator(mode="after")
    def _reference(self) -> Categorical:
        if self.reference is not None and self.reference not in self.levels:
            raise ValueError(f"reference {self.reference!r} is not one of the levels {', '.join(self.levels)}")
        # a concept in two levels would be read as the last of them only
        seen: dict[int, str] = {}
        for label, ids in self.levels.items():
            if not ids:
                raise ValueError(f"level {label!r} lists no concept id")
            for cid in ids:
                if cid in seen:
                    raise ValueError(f"concept {cid} is in level {seen[cid]!r} and in level {label!r}")
                seen[cid] = label
        return self


class Value(_Strict):
    """The latest ``value_as_number`` of a measurement in a window."""

    concept_id: int
    window: tuple[int, int] = (-30, 0)

    @field_validator("window")
    @classmethod
    def _ordered(cls, window: tuple[int, int]) -> tuple[int, int]:
        return _ordered_window(window)


class SurvivalCovariates(_Strict):
    age: bool = True
    sex: bool = True
    categorical: dict[str, Categorical] = Field(default_factory=dict)
    values: dict[str, Value] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _distinct(self) -> SurvivalCovariates:
        """Every covariate becomes a column of the sites' analysis table (a categorical one also one column per
        level, ``<name>_<level>``); a second covariate of the same name would silently overwrite the first."""
        taken = {"row_id": "a column of the analysis table", "subject_id": "a column of the analysis table",
                 "index_date": "a column of the analysis table", "duration": "a column of the analysis table",
                 "event": "a column of the analysis table"}
        if self.age:
            taken["age"] = "age: true"
        if self.sex:
            taken["male"] = "sex: true"
        columns = [(n, f"categorical.{n}") for n in self.categorical]
        columns += [(f"{n}_{label}", f"categorical.{n} level {label!r}") for n, c in self.categorical.items()
                    for label in c.levels]
        columns += [(n, f"values.{n}") for n in self.values]
        for name, what in columns:
            if name in taken:
                raise ValueError(f"{what} makes a column {name!r}, as does {taken[name]}; rename one")
            taken[name] = what
        return self


class SurvivalAnalysis(_Strict):
    km_by: str | None = Field(None, description="a categorical covariate to draw KM curves by")
    cox: list[str] = Field(default_factory=list, description="Cox covariates: age, male, <categorical>, <value>")
    ties: Literal["efron", "breslow"] = "efron"
    strata_by_site: bool = False
    at_risk_times: list[int] = Field(default_factory=lambda: [0, 90, 180, 270, 365])

    @field_validator("cox")
    @classmethod
    def _once(cls, cox: list[str]) -> list[str]:
        twice = sorted({c for c in cox if cox.count(c) > 1})
        if twice:  # the same column twice makes the Cox model's information matrix singular
            raise ValueError(f"names {', '.join(twice)} twice")
        return cox


class SurvivalStudy(_Study):
    kind: Literal["survival"]
    covariates: SurvivalCovariates = Field(default_factory=SurvivalCovariates)
    analysis: SurvivalAnalysis = Field(default_factory=SurvivalAnalysis)

    @model_validator(mode="after")
    def _names(self) -> SurvivalStudy:
        cov = self.covariates
        known = {"age"} if cov.age else set()
        known |= {"male"} if cov.sex else set()
        known |= set(cov.categorical) | set(cov.values)
        if self.analysis.km_by is not None and self.analysis.km_by not in cov.categorical:
            raise ValueError(f"analysis.km_by {self.analysis.km_by!r} is not a categorical covariate "
                             f"({', '.join(cov.categorical) or 'none defined'})")
        bad = [c for c in self.analysis.cox if c not in known]
        if bad:
            raise ValueError(f"analysis.cox names unknown covariate(s) {', '.join(bad)}; known: "
                             f"{', '.join(sorted(known))}")
        if self.analysis.cox and not self.analysis.strata_by_site and not self.disclosure.exact_event_times:
            raise ValueError("a pooled Cox model releases per-time risk sets, which needs "
                             "disclosure.exact_event_times: true; otherwise set analysis.strata_by_site: true")
        return self


StudySpec = Annotated[PlpStudy | SurvivalStudy, Field(discriminator="kind")]


class _Doc(BaseModel):
    study: StudySpec


def _fields(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """The YAML keys of a pydantic error location (without the model's own ``study`` and kind tags)."""
    if loc[:1] == ("study",):
        loc = loc[1:]
        if loc[:1] in (("plp",), ("survival",)):
            loc = loc[1:]
    return loc


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in map(str, _fields(loc)):
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "(top level)"


class _StudyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error: safe_load keeps the last, so a
    second ``model:`` block would silently replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                twice = key in seen
            except TypeError:
                continue  # an unhashable key: PyYAML's own construct_mapping says so
            if twice:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice in this mapping (YAML would keep only the last)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def _line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based YAML line of the deepest node on an error's path; None for the document itself."""
    line = None
    for part in _fields(loc):
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if str(k.value) == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            node = None
        if node is None:
            break
        line = node.start_mark.line + 1
    return line


def parse_spec(doc: Any, source: str | Path = "<study>", nodes: yaml.Node | None = None) -> PlpStudy | SurvivalStudy:
    """Validate a loaded YAML document; :class:`SpecError` lists every problem as ``field: message``, with the
    YAML line where ``nodes`` (the composed document) gives it."""
    if not isinstance(doc, dict):
        got = "an empty file" if doc is None else f"a {type(doc).__name__}"
        raise SpecError(source, [f"expected a mapping of study settings (name:, target:, ...), got {got}"])
    doc = {"kind": "plp", **doc}
    try:
        spec = _Doc(study=doc).study
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            line = _line(nodes, tuple(err["loc"]))
            problems.append(f"{_loc(tuple(err['loc']))}: {msg}" + (f" (line {line})" if line else ""))
        raise SpecError(source, problems) from None
    spec._source = str(source)
    return spec


def _read_yaml(path: Path, text: str) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree (for line numbers); YAML errors become a :class:`SpecError`."""
    loader = _StudyLoader(text)
    try:
        nodes = loader.get_single_node()
        return (loader.construct_document(nodes) if nodes is not None else None), nodes
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecError(path, [f"{where}not valid YAML ({getattr(exc, 'problem', None) or exc})"]) from None
    finally:
        loader.dispose()


def load_spec(path: str | Path) -> PlpStudy | SurvivalStudy:
    """Read and validate a study YAML; also checks that referenced cohort files exist."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(p, [f"cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(p, [f"not UTF-8 text (byte {exc.start}): save the YAML as UTF-8"]) from None
    doc, nodes = _read_yaml(p, text)
    spec = parse_spec(doc, p, nodes)
    problems = []
    cohorts = [("target", spec.target)]
    if isinstance(spec.outcome, OutcomeCohort):
        cohorts.append(("outcome.cohort", spec.outcome.cohort))
    for field_name, rel in cohorts:
        where = _line(nodes, tuple(field_name.split(".")))
        at = f" (line {where})" if where else ""
        if not spec.resolve(rel).exists():
            problems.append(f"{field_name}: cohort file {rel} not found (looked in {spec.resolve(rel).parent}){at}")
            continue
        if not spec.resolve(rel).is_file():
            problems.append(f"{field_name}: {rel} is a folder, not a cohort JSON file{at}")
            continue
        try:
            load_cohort(spec.resolve(rel))
        except (CirceError, ValueError) as exc:
            problems.append(f"{field_name}: {exc}")
    if problems:
        raise SpecError(p, problems)
    return spec
