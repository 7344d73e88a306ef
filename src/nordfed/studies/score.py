"""Apply a PLP study's model to a site's patients (PatientLevelPrediction's ``predictPlp`` / ``applyModel``).

A site scores its own patients on its own CDM; nothing leaves it. :func:`load_results` reads and checks the
study's results JSON, :func:`score_patients` builds the study's ``plp`` table for the patients (the same
cohort, covariates and normalisation as the study, through :func:`nordfed.features.design.plp_dataset`) and
applies the model as the study's evaluation does (:func:`nordfed.fed.lasso_site.linear_predictor`), and
:func:`mdt_report` lays the list out as a printable HTML page for the multidisciplinary team meeting.

>>> spec = load_spec("studies/crc_1y_mortality.yaml")                       # doctest: +SKIP
>>> results = load_results("reports/crc_1y_mortality.json", spec)          # doctest: +SKIP
>>> score_patients(spec, results, open_cdm(url), since=date(2021, 6, 1))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import expit

from nordfed.features import analyses as A
from nordfed.features.covariates import CovariateSettings, analysis_of, covariate_ref, extract_covariates
from nordfed.features.design import StudyData, design_frame, plp_dataset, study_data
from nordfed.fed.lasso_site import linear_predictor
from nordfed.omop.characterization import sex_label
from nordfed.omop.store import CDM
from nordfed.studies.partials import persons as persons_of
from nordfed.studies.plp import study_params
from nordfed.studies.spec import PlpStudy

COLUMNS = ["person_id", "cohort_start_date", "age", "sex", "risk", "risk_group", "bundle", "reasons",
           "reason_details"]
#: a smaller contribution to the log-odds (a few percent on the odds) is not named as a reason
MIN_CONTRIBUTION = 0.05
#: what a reason's contribution is measured against (the HTML list and the CLI say it too)
REFERENCE = ("contributions to the log-odds relative to the average patient of this site's cohort, among what the "
             "patient has recorded: coefficient × (the patient's covariate − its mean over the cohort), as the "
             "model sees them (measurement values divided by the study's normalisation maximum)")


class ResultsError(ValueError):
    """A results JSON that cannot score patients; the message names the file and the field."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        super().__init__(f"{path}: {problem}")


def _field(doc: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return None
        cur = cur[part]
    return cur


def check_results(results: Any, spec: PlpStudy, path: str | Path = "<results>") -> dict[str, Any]:
    """``results`` if it is a PLP run of ``spec``'s study with a model, a preprocessing plan and risk-group
    cut-offs, else :class:`ResultsError` naming the field."""
    if not isinstance(results, dict) or "kind" not in results or "study" not in results:
        raise ResultsError(path, "not the results of a nordfed study (no kind and study fields; give the JSON "
                                 "that `nordfed study run` writes beside the HTML report)")
    if results["kind"] != "plp":
        raise ResultsError(path, f"kind is {results['kind']!r}: only a PLP study's results have a model to score "
                                 "patients with")
    if results["study"] != spec.name:
        raise ResultsError(path, f"study is {results['study']!r}, but {spec.source} is study {spec.name!r}: give "
                                 "the results of that study")
    for name in ("model.covariates", "model.coef", "model.intercept", "preprocessing.plan.covariate_ids",
                 "preprocessing.plan.max_values", "risk_groups.cutoffs", "risk_groups.bundles"):
        if _field(results, name) is None:
            raise ResultsError(path, f"lacks {name} (written by an older or failed run? rerun `nordfed study run "
                                     f"{spec.source}`)")
    model, plan = results["model"], results["preprocessing"]["plan"]
    if len(model["covariates"]) != len(model["coef"]):
        raise ResultsError(path, f"model.covariates has {len(model['covariates'])} entries but model.coef "
                                 f"{len(model['coef'])}")
    unplanned = sorted({str(c) for c in model["covariates"]} - {str(c) for c in plan["covariate_ids"]})
    if unplanned:
        raise ResultsError(path, f"model.covariates {', '.join(unplanned[:5])} are not in "
                                 "preprocessing.plan.covariate_ids")
    cuts, bundles = results["risk_groups"]["cutoffs"], results["risk_groups"]["bundles"]
    if len(bundles) != len(cuts) + 1:
        raise ResultsError(path, f"risk_groups: {len(cuts)} cutoffs make {len(cuts) + 1} groups but there are "
                                 f"{len(bundles)} bundles")
    # a YAML edited after the run would build other rows or columns than the model learnt from
    mine = json.loads(spec.model_dump_json())
    for name in ("population", "covariates"):
        if name in results.get("settings", {}) and results["settings"][name] != mine[name]:
            raise ResultsError(path, f"settings.{name} differ from {name}: in {spec.source} (the YAML was changed "
                                     "after the run): rerun the study or use the YAML it ran with")
    return results


def load_results(path: str | Path, spec: PlpStudy) -> dict[str, Any]:
    """Read and check a study's results JSON (:class:`ResultsError` on a missing file, bad JSON or wrong study)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(p, f"cannot read: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(p, f"not a JSON file ({exc})") from None
    return check_results(doc, spec, p)


def scoring_params(spec: PlpStudy, results: Mapping[str, Any]) -> dict[str, Any]:
    """The study's ``plp`` dataset parameters for patients referred today: the study's cohort, covariates and
    preprocessing plan, and its population rules except those needing follow-up (requireTimeAtRisk)."""
    params = study_params(spec)
    # a patient referred today has no time at risk yet; washout, first exposure and prior outcomes look back
    params["population"] = {**params["population"], "require_time_at_risk": False}
    plan = results["preprocessing"]["plan"]
    return {**params, "builder": "plp", "covariate_ids": [int(c) for c in plan["covariate_ids"]],
            "max_values": {str(k): v for k, v in plan["max_values"].items()}}


def covariate_names(results: Mapping[str, Any], cdm: CDM | None = None) -> dict[int, str]:
    """The model's covariates named as the study report names them (``model.named``); names the JSON cannot
    give (two covariates of one name) come from ``cdm``'s vocabulary, else ``covariate <id>``."""
    model = results["model"]
    named = {k: v for k, v in (model.get("named") or {}).items() if k != "(Intercept)"}
    ids = [(int(c), float(b)) for c, b in zip(model["covariates"], model["coef"], strict=True) if b]
    # ``named`` lists the non-zero covariates in model order, stably sorted by |coefficient|
    ranked = sorted(ids, key=lambda cb: -abs(cb[1]))
    out: dict[int, str] = {}
    if len(named) == len(ranked) and all(abs(v - b) <= 1e-12 * max(1.0, abs(b))
                                         for (_, b), v in zip(ranked, named.values(), strict=True)):
        out = {c: name for (c, _), name in zip(ranked, named, strict=True)}
    missing = [c for c, _ in ids if c not in out]
    if missing and cdm is not None:
        ref = covariate_ref(cdm, np.asarray(missing, dtype=np.int64))
        out |= {int(c): str(n) for c, n in zip(ref["covariate_id"], ref["covariate_name"], strict=True)}
    return {c: out.get(c, f"covariate {c}") for c, _ in ids}


def risk_groups_of(risk: np.ndarray, cutoffs: Iterable[float]) -> np.ndarray:
    """Group numbers 1..k of ``risk`` by the cut-offs: a risk equal to a cut-off goes up, as the study's groups
    (``nordfed.eval.groups``) count it."""
    return np.searchsorted(np.asarray(list(cutoffs), dtype=float), np.asarray(risk, dtype=float), side="right") + 1


def _value_text(v: float) -> str:
    return f"{v:.4g}"


def _reasons(x: np.ndarray, coef: np.ndarray, mean: np.ndarray, ids: list[int], names: Mapping[int, str],
             scale: np.ndarray, valued: np.ndarray, top: int) -> list[list[dict[str, Any]]]:
    """Per row the ``top`` largest positive contributions ``coef * (x - mean)``, largest first (ties by model
    order), among the covariates the patient has (``x`` not 0): a linear model's SHAP values against ``mean`` as
    the background. Measured from 0 instead, a value everyone has (sodium about 138) would be a "reason" for
    everyone."""
    # only what the patient has: a covariate not recorded (x = 0) whose coefficient is negative would score above
    # the average too, but "no record of a protective factor" is not a reason a clinician can act on
    contrib = np.where(x != 0, (x - mean) * coef, 0.0)
    out: list[list[dict[str, Any]]] = []
    for row in range(len(x)):
        c = contrib[row]
        order = [j for j in np.argsort(-c, kind="stable")[:top] if c[j] >= MIN_CONTRIBUTION]
        out.append([{"covariate_id": ids[j], "name": names.get(ids[j], f"covariate {ids[j]}"),
                     # the patient's own value (not the normalised one) where the covariate has a value
                     "value": float(f"{x[row, j] * scale[j]:.12g}") if valued[j] else None,
                     "contribution": float(c[j])} for j in order])
    return out


def reasons_text(details: Iterable[Mapping[str, Any]]) -> str:
    """``name = value (+0.83); name (+0.41)``."""
    return "; ".join(f"{d['name']}" + (f" = {_value_text(d['value'])}" if d["value"] is not None else "")
                     + f" ({d['contribution']:+.2f})" for d in details)


def _empty(message: str) -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in COLUMNS})
    frame.attrs["message"] = message
    return frame


def score_patients(spec: PlpStudy, results: Mapping[str, Any], cdm: CDM, since: dt.date | None = None,
                   persons: Iterable[int] | None = None, top: int = 3) -> pd.DataFrame:
    """Risk, risk group, bundle and main reasons of every cohort entry on ``cdm``, highest risk first.

    The population is the study's target cohort with its washout, first-exposure and prior-outcome rules but
    without the time-at-risk rules (a patient referred today has no follow-up); ``since`` keeps entries on or
    after that date, ``persons`` those persons. Columns: ``person_id, cohort_start_date, risk`` (predicted
    probability), ``risk_group`` (1..k by the results' cut-offs), ``bundle``, ``reasons`` (text) and
    ``reason_details``: per entry up to ``top`` dicts ``covariate_id, name, value, contribution`` of the
    covariates with the largest positive ``contribution`` to the log-odds, ``coefficient × (x − x̄)`` with ``x``
    the covariate as the model sees it (a measurement value divided by the study's normalisation maximum) and
    ``x̄`` its mean over every entry of the site's cohort (before the filters), among the covariates the patient
    has: the reasons say why a patient's risk is above that of the site's average patient. ``value`` is the
    patient's own value of a measurement value, Charlson index or visit count, ``None`` for a covariate that is
    present or not.

    An empty result carries the reason in ``attrs["message"]`` (no cohort entry on this CDM, none after the
    population rules or the filters); persons asked for but not found are named there too.
    """
    params = scoring_params(spec, results)
    frame = plp_dataset(cdm, params)
    attrition = study_data(cdm, params).attrition
    entries = int(attrition["rows"].iloc[0]) if len(attrition) else 0
    if entries == 0:
        return _empty(f"no entries of the study's target cohort ({spec.target}) on this CDM: nobody matches its "
                      "definition (are its concepts in this CDM's vocabulary and data?)")
    if frame.empty:
        return _empty(f"{entries} entries of the study's target cohort on this CDM, none left after the "
                      f"study's population rules ({', '.join(attrition['step'].iloc[1:])})")
    notes: list[str] = []
    keep = np.ones(len(frame), dtype=bool)
    starts = pd.to_datetime(frame["index_date"])
    if since is not None:
        keep &= (starts >= pd.Timestamp(since)).to_numpy()
        if not keep.any():
            notes.append(f"no cohort entry on or after {since.isoformat()} (the latest of {len(frame)} is "
                         f"{starts.max().date().isoformat()})")
    if persons is not None:
        wanted = {int(p) for p in persons}
        keep &= frame["subject_id"].isin(wanted).to_numpy()
        absent = sorted(wanted - set(frame.loc[keep, "subject_id"].astype(int)))
        if absent:
            notes.append(f"person(s) {', '.join(map(str, absent))} not scored: not in the study's target cohort on "
                         "this CDM, removed by its population rules" + (", or entered before --since"
                                                                          if since is not None else ""))
    if not keep.any():
        return _empty("; ".join(notes) or "no cohort entry left after the filters")
    columns = [str(c) for c in results["model"]["covariates"]]
    return _scored(frame, keep, results, cdm, frame[columns].to_numpy(dtype=float).mean(axis=0), top, notes)


def score_at(spec: PlpStudy, results: Mapping[str, Any], cdm: CDM, persons: Iterable[int], at: dt.date,
             top: int = 3) -> pd.DataFrame:
    """As :func:`score_patients`, for ``persons`` as if they entered the study's cohort on ``at`` (a planned
    operation, before it happens): the study's covariates as recorded up to ``at``, whatever the cohort says of
    them. Reasons are measured against the site's cohort average as in :func:`score_patients` (against the
    persons scored when this CDM has no cohort entries)."""
    params = scoring_params(spec, results)
    wanted = sorted({int(p) for p in persons})
    if not wanted:
        return _empty("no person given to score")
    ids = sorted(int(p) for p in persons_of(cdm, np.asarray(wanted))["subject_id"])
    notes = [f"person(s) {', '.join(map(str, sorted(set(wanted) - set(ids))))} not in this CDM's person table"] \
        if len(ids) < len(wanted) else []
    if not ids:
        return _empty("; ".join(notes))
    population = pd.DataFrame({"row_id": np.arange(1, len(ids) + 1, dtype=np.int64), "subject_id": ids,
                               "cohort_start_date": pd.Timestamp(at), "outcome": 0, "time_at_risk": 0.0,
                               "days_to_event": np.nan})
    covariates = extract_covariates(cdm, population, CovariateSettings.from_dict(params.get("covariates")))
    frame = design_frame(StudyData(population, pd.DataFrame(), covariates), params["covariate_ids"],
                         params["max_values"])
    columns = [str(c) for c in results["model"]["covariates"]]
    cohort = plp_dataset(cdm, params)
    reference = (cohort if len(cohort) else frame)[columns].to_numpy(dtype=float).mean(axis=0)
    return _scored(frame, np.ones(len(frame), dtype=bool), results, cdm, reference, top, notes)


def _scored(frame: pd.DataFrame, keep: np.ndarray, results: Mapping[str, Any], cdm: CDM, reference: np.ndarray,
            top: int, notes: list[str]) -> pd.DataFrame:
    """The list for ``frame``'s rows in ``keep``: risk, group, bundle, reasons against ``reference``, age, sex."""
    model = results["model"]
    starts = pd.to_datetime(frame["index_date"])
    # every row of the population, then the filter: a matrix product over fewer rows may round differently, and
    # a patient's risk must not depend on who else is on the list
    risk = expit(linear_predictor(frame, model))[keep]
    rows = frame.loc[keep].reset_index(drop=True)
    cuts, bundles = results["risk_groups"]["cutoffs"], results["risk_groups"]["bundles"]
    group = risk_groups_of(risk, cuts)
    ids = [int(c) for c in model["covariates"]]
    max_values = {int(k): float(v) for k, v in results["preprocessing"]["plan"]["max_values"].items() if v}
    scale = np.array([max_values.get(c, 1.0) for c in ids])
    valued = np.isin(analysis_of(np.asarray(ids, dtype=np.int64)), list(A.CONTINUOUS))
    columns = [str(c) for c in ids]
    details = _reasons(rows[columns].to_numpy(dtype=float), np.asarray(model["coef"], dtype=float), reference, ids,
                       covariate_names(results, cdm), scale, valued, top)
    people = persons_of(cdm, rows["subject_id"].to_numpy()).set_index("subject_id")
    person_ids = rows["subject_id"].astype(np.int64).to_numpy()
    born = people["year_of_birth"].reindex(person_ids).to_numpy(dtype=float)
    out = pd.DataFrame({
        "person_id": person_ids,
        "cohort_start_date": starts[keep].dt.date.to_numpy(),
        # as the study's age groups count it: index year minus year of birth
        "age": pd.array(starts[keep].dt.year.to_numpy() - born, dtype="Int64"),
        "sex": [sex_label(g) for g in people["gender_concept_id"].reindex(person_ids)],
        "risk": risk,
        "risk_group": group.astype(int),
        "bundle": [bundles[g - 1] for g in group],
        "reasons": [reasons_text(d) for d in details],
        "reason_details": details,
    })
    out = out.sort_values(["risk", "cohort_start_date", "person_id"], ascending=[False, True, True],
                          kind="stable").reset_index(drop=True)
    if notes:
        out.attrs["message"] = "; ".join(notes)
    return out


def group_counts(scores: pd.DataFrame, bundles: list[str]) -> list[dict[str, Any]]:
    """Patients per risk group (every group, empty ones too)."""
    counts = scores["risk_group"].value_counts().to_dict() if len(scores) else {}
    return [{"group": g, "bundle": b, "patients": int(counts.get(g, 0))} for g, b in enumerate(bundles, start=1)]


def summary_line(scores: pd.DataFrame, bundles: list[str]) -> str:
    """``812 patients: group 1 (standard pathway) 310, group 2 (...) 201, ...``."""
    parts = [f"group {c['group']} ({c['bundle']}) {c['patients']}" for c in group_counts(scores, bundles)]
    return f"{len(scores)} patient{'s' if len(scores) != 1 else ''}: " + ", ".join(parts)


def to_csv(scores: pd.DataFrame, path: str | Path) -> Path:
    """The list as CSV; ``reason_details`` as JSON text (one array per row)."""
    out = scores.assign(reason_details=[json.dumps(d) for d in scores["reason_details"]])
    out.to_csv(path, index=False)
    return Path(path)


def mdt_report(scores: pd.DataFrame, results: Mapping[str, Any], site: str, synthetic: bool = False,
               subtitle: str = "") -> Any:
    """A printable MDT list (:class:`~nordfed.reports.StudyReport`): patients by risk with group, bundle and
    reasons, and how to read them."""
    from nordfed.reports import Column, ReportMetadata, StudyReport, Table

    cuts, bundles = results["risk_groups"]["cutoffs"], results["risk_groups"]["bundles"]
    meta = ReportMetadata(study=str(results["study"]), sites=[site], synthetic=synthetic,
                          extra={"scored at": f"{site}, on its own CDM (no patient data leaves the site)",
                                 "model": f"{results['model'].get('non_zero', len(results['model']['coef']))} "
                                          "non-zero coefficients, from the study's results JSON"})
    report = StudyReport(f"MDT list: {results['study']}", subtitle, meta, aggregates=False)
    for c in group_counts(scores, bundles):
        report.add_headline(f"group {c['group']}", str(c["patients"]), c["bundle"])
    sec = report.add_section("Patients", "Highest predicted risk first.")
    if scores.attrs.get("message"):
        sec.add_note(str(scores.attrs["message"]))
    cols = [Column("person_id", "Person"), Column("cohort_start_date", "Cohort entry"), Column("age", "Age"),
            Column("sex", "Sex"),
            Column("risk", "Risk", "percent", 3), Column("risk_group", "Group"), Column("bundle", "Bundle"),
            Column("reasons", "Main reasons (contribution to the log-odds)")]
    rows = [{**r, "person_id": str(r["person_id"]), "cohort_start_date": str(r["cohort_start_date"]),
             "age": "" if pd.isna(r["age"]) else str(r["age"]),
             "risk_group": str(r["risk_group"]), "reasons": r["reasons"] or "none above the reference"}
            for r in scores.drop(columns="reason_details").to_dict("records")]
    sec.add_table(Table(cols, rows, f"{len(scores)} patients"))
    bounds = [0.0, *map(float, cuts), 1.0]
    how = report.add_section("How to read this list")
    how.add_text("Risk groups by predicted risk: " + "; ".join(
        f"group {i + 1} ({bundles[i]}): {100 * bounds[i]:.1f} % to {100 * bounds[i + 1]:.1f} %"
        for i in range(len(bundles))) + ".")
    how.add_text("Each row is an entry of the study's target cohort: the cohort entry date is its index date (for a "
                 "surgery cohort, the operation), and the covariates are those recorded up to it. The cut-offs are "
                 "the study's, over all its sites' patients; one site's or one period's patients need not split "
                 "evenly between the groups.")
    how.add_text(f"Reasons are the covariates with the largest {REFERENCE}; contributions below "
                 f"{MIN_CONTRIBUTION:g} are not named. A value after '=' is the patient's own measured value. 'Long "
                 "term' covers the year before the cohort entry, 'short term' the 30 days before it.")
    return report
