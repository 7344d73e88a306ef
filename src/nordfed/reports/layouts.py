"""Standard study reports: the section order a patient-level prediction (PLP) or survival study uses.

Study runners fill a :class:`PlpResults` or :class:`SurvivalResults` with plain data (dicts or result
dataclasses) and call :func:`plp_report` / :func:`survival_report`. Every part is optional; a missing part
leaves its section out rather than showing an empty one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nordfed.reports import group_tables, plots, prediction_plots, tables
from nordfed.reports.html import ReportMetadata, StudyReport
from nordfed.reports.tables import as_mapping, pick

PLP_SECTIONS = ("Summary", "Cohort & attrition", "Model", "Internal performance", "External validation by site",
                "Risk groups", "Ground truth comparison")
SURVIVAL_SECTIONS = ("Summary", "Cohort & attrition", "Survival by group", "Survival by site", "Cox model",
                     "Ground truth comparison")


@dataclass
class PlpResults:
    """Inputs of a PLP report. ``internal`` is an evaluation (``Evaluation`` or its dict) of the pooled model."""

    target: str = ""
    outcome: str = ""
    time_at_risk: str = ""
    attrition: Sequence[Any] | None = None
    coefficients: Mapping[str, float] | None = None
    coefficient_ci: Mapping[str, tuple[float, float]] | None = None
    hyperparameters: Mapping[str, Any] | None = None
    internal: Any = None
    #: ROC curves keyed by label (``fpr``, ``tpr``, optional ``auroc``/``auroc_ci``)
    internal_roc: Mapping[str, Any] | None = None
    #: per-site validation rows (leave-one-site-out, temporal, …) keyed by site/setting label
    external: Mapping[str, Any] | None = None
    external_roc: Mapping[str, Any] | None = None
    risk_groups: Any = None
    characterization: Mapping[str, Any] | None = None
    #: synthetic data only: the generating coefficients and (optionally) the true AUROC
    truth: Mapping[str, float] | None = None
    truth_metrics: Mapping[str, float] | None = None
    #: continuous covariates were divided by their maximum before fitting (PatientLevelPrediction's normalisation)
    normalised: bool = False
    #: the covariate summary shown: ``rows`` (:func:`~nordfed.reports.tables.covariate_summary_table`) and ``on``
    #: (which persons, e.g. "test part")
    covariate_summary: Mapping[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class SurvivalResults:
    target: str = ""
    outcome: str = ""
    attrition: Sequence[Any] | None = None
    km_by_group: Mapping[str, Any] | None = None
    km_by_site: Mapping[str, Any] | None = None
    at_risk_times: Sequence[float] | None = None
    at_risk_by_group: Mapping[str, Sequence[int | None]] | None = None
    at_risk_by_site: Mapping[str, Sequence[int | None]] | None = None
    logrank: Mapping[str, float] | None = None
    cox: Any = None
    truth: Mapping[str, float] | None = None
    time_label: str = "Time (days)"
    #: what ``km_by_group`` is grouped by (e.g. "stage"): titles the group figure and its legend
    group_label: str = ""
    notes: list[str] = field(default_factory=list)


def _ci_text(est: float | None, ci: Sequence[float] | None, digits: int = 3) -> tuple[str, str]:
    if est is None:
        return "–", ""
    return f"{est:.{digits}f}", (f"95% CI {ci[0]:.{digits}f}–{ci[1]:.{digits}f}" if ci and None not in ci else "")


def _count(n: Any, min_cell_count: int) -> str:
    return tables.format_cell(n, tables.Column("n", "n", "count"), min_cell_count).text


def _headcount(steps: Sequence[Any] | None) -> tuple[Any, Any]:
    if not steps:
        return None, None
    last = as_mapping(steps[-1])
    return pick(last, "persons", "n"), pick(last, "outcomes", "events")


NORMALISED_NOTE = ("Continuous covariates (lab values, scores, counts) were divided by their largest value across the "
                   "sites before fitting, as PatientLevelPrediction does: their odds ratio compares the largest "
                   "value with zero, not one unit more with one unit less. Binary covariates (0/1) are unaffected.")


def _short_setting(label: str) -> str:
    """``"DK (trained on NO, SE)"`` → ``"DK"``, ``"temporal: trained before …"`` → ``"temporal"``."""
    return label.split(":")[0].split(" (")[0]


def _report(title: str, subtitle: str, metadata: ReportMetadata | Mapping[str, Any] | None,
            min_cell_count: int) -> StudyReport:
    return StudyReport(title, subtitle, metadata, min_cell_count=min_cell_count)


def plp_report(res: PlpResults, title: str, subtitle: str = "",
               metadata: ReportMetadata | Mapping[str, Any] | None = None, min_cell_count: int = 10) -> StudyReport:
    """A PLP study report with the sections of :data:`PLP_SECTIONS` (those with data)."""
    rep = _report(title, subtitle, metadata, min_cell_count)
    ev = as_mapping(res.internal) if res.internal is not None else {}
    # measured on the rows the model was fitted on: every number and figure that is copied out of the report
    # must say so, not only the section's introduction
    apparent = str(ev.get("on")) == "training rows"
    kind = "apparent" if apparent else "internal"
    persons, outcomes = _headcount(res.attrition)
    if persons is not None:
        rep.add_headline("Persons", _count(persons, min_cell_count),
                         f"{_count(outcomes, min_cell_count)} with the outcome" if outcomes is not None else "")
    if ev.get("auroc") is not None:
        value, ci = _ci_text(ev["auroc"], ev.get("auroc_ci"))
        rep.add_headline(f"AUROC ({kind})", value, f"{ci}; optimistic: training rows" if apparent else ci)
    if ev.get("calibration_slope") is not None:
        rep.add_headline("Calibration slope (apparent)" if apparent else "Calibration slope",
                         f"{ev['calibration_slope']:.2f}",
                         f"intercept {ev.get('calibration_intercept', float('nan')):.2f}")
    if res.external:
        aucs = [as_mapping(v).get("auroc") for v in res.external.values()]
        aucs = [a for a in aucs if a is not None]
        if aucs:
            # the range may include a temporal validation: the detail says what it spans
            temporal = any(str(k).startswith("temporal") for k in res.external)
            rep.add_headline("AUROC across sites and time" if temporal else "AUROC across sites",
                             f"{min(aucs):.3f}–{max(aucs):.3f}",
                             f"lowest–highest of {len(aucs)} external validation{'s' if len(aucs) != 1 else ''}"
                             f" ({', '.join(_short_setting(k) for k in res.external)})")
    if res.coefficients is not None:
        nz = sum(1 for k, v in res.coefficients.items() if v and k != "(Intercept)")
        rep.add_headline("Model", f"{nz} covariates", "non-zero coefficients")

    s = rep.add_section("Summary")
    lines = [x for x in (f"Target cohort: {res.target}." if res.target else "",
                         f"Outcome: {res.outcome}." if res.outcome else "",
                         f"Time at risk: {res.time_at_risk}." if res.time_at_risk else "") if x]
    if lines:
        s.add_text(" ".join(lines))
    for n in res.notes:
        s.add_note(n)
    if res.attrition or res.characterization:
        s = rep.add_section("Cohort & attrition")
        if res.attrition:
            s.add_table(tables.attrition_table(res.attrition))
        for name, spec in (res.characterization or {}).items():
            s.add_table(tables.sites_side_by_side(**{"caption": name, **spec}))
    if res.coefficients is not None:
        s = rep.add_section("Model", "Coefficients of the pooled model, largest effects first.")
        if res.normalised:
            # an odds ratio of 8 for CRP reads as "per mg/L" unless the scale is stated
            s.add_note(NORMALISED_NOTE)
        if res.hyperparameters:
            s.add_metrics({k: str(v) for k, v in res.hyperparameters.items()})
        if any(v and k != "(Intercept)" for k, v in res.coefficients.items()):
            s.add_figure(plots.coefficient_plot(res.coefficients, res.coefficient_ci, odds_ratios=True,
                                                title="Odds ratios of non-zero coefficients"),
                         "Odds ratios (exp of the coefficients); orange: raises risk, blue: lowers it.")
        s.add_table(tables.coefficient_table(res.coefficients, res.coefficient_ci))
        if res.covariate_summary and res.covariate_summary.get("rows"):
            cs = res.covariate_summary
            outcome = f" ({res.outcome})" if res.outcome else ""
            s.add_table(tables.covariate_summary_table(
                cs["rows"], f"Covariates by outcome{outcome}, {cs.get('on') or 'all persons'}"))
    if ev or res.internal_roc:
        on = {"test part": f"On the test part: {ev.get('test_fraction', 0):.0%} of each site's persons, held out "
                           "(stratified by outcome) before the model was fitted.",
              "training rows": "On the persons the model was fitted on: apparent performance, optimistic."}
        s = rep.add_section("Internal performance", "" if apparent else on.get(str(ev.get("on")), ""))
        if apparent:
            s.add_note(on["training rows"] + " No persons were held out (evaluation.test_fraction: 0); judge the "
                       "model by the external validation below.")
        tag = "apparent: training rows, optimistic" if apparent else "internal validation"
        figs = []
        if res.internal_roc:
            figs.append((prediction_plots.roc_plot(res.internal_roc, f"ROC, {tag}"), "Receiver operating "
                         "characteristic of the pooled model."))
        # smooth curves and distributions come with the ROC points, from the same released score blocks
        curves = {k: as_mapping(v) for k, v in (res.internal_roc or {}).items()}
        smooth = {k: v["calibration"] for k, v in curves.items() if v.get("calibration")}
        from_blocks = (f"Drawn from the score blocks each site releases for the ROC curve (every block holds at "
                       f"least {min_cell_count} persons of one outcome class); no further data left the sites.")
        if ev.get("calibration_table"):
            figs.append((prediction_plots.calibration_plot(ev["calibration_table"], ev.get("calibration_intercept"),
                                                ev.get("calibration_slope"), ev.get("e_avg"), ev.get("ici"),
                                                title=f"Calibration, {tag}", min_cell_count=min_cell_count,
                                                smooth=smooth.get("pooled")),
                         "Observed vs expected risk by decile of predicted risk (neighbouring deciles merged "
                         "where a site would have suppressed one)."
                         + (" Black line: kernel-smoothed observed risk of all sites (ICI (smoothed): mean "
                            "distance from the diagonal over all persons). " + from_blocks
                            if "pooled" in smooth else "")))
        if any(v.get("predicted") for v in smooth.values()):
            mass = max(v.get("min_mass", 0) for v in smooth.values())
            figs.append((prediction_plots.smooth_calibration_plot(smooth, f"Smooth calibration by site, {tag}"),
                         "Observed risk as a kernel-smoothed function of predicted risk, all sites (black) and each "
                         f"site, drawn where at least {mass:g} persons with and without the outcome lie within one "
                         "bandwidth. " + from_blocks))
        if curves.get("pooled", {}).get("distribution"):
            figs.append((prediction_plots.prediction_distribution_plot(curves["pooled"]["distribution"],
                                                            f"Prediction distribution, {tag}"),
                         "Predicted risk of persons with and without the outcome, all sites. " + from_blocks))
        if figs:
            s.add_figures(figs)
        caption = "Apparent performance (training rows, optimistic)" if apparent else "Internal performance"
        if ev:
            s.add_table(tables.validation_table({f"pooled ({kind})": ev}, caption))
        if ev.get("per_site"):
            s.add_table(tables.validation_table(ev["per_site"], f"{caption} by site"))
    if res.external or res.external_roc:
        s = rep.add_section("External validation by site", "Each site scored by a model trained on the other sites "
                            "(leave one site out), unless labelled otherwise.")
        if res.external:
            s.add_table(tables.validation_table(res.external, "External validation", "Held-out site / setting"))
        if res.external_roc:
            s.add_figure(prediction_plots.roc_plot(res.external_roc, "ROC by held-out site", pooled=None),
                         "ROC of each held-out site.")
            held_out = {k: as_mapping(v).get("calibration") or {} for k, v in res.external_roc.items()}
            if any(v.get("predicted") for v in held_out.values()):
                s.add_figure(prediction_plots.smooth_calibration_plot(held_out, "Smooth calibration by held-out site",
                                                           pooled=None),
                             "Observed risk (kernel-smoothed) against the risk predicted by the model trained on the "
                             "other sites; drawn from the score blocks each held-out site releases for its ROC curve.")
    if res.risk_groups is not None:
        rg = as_mapping(res.risk_groups)
        s = rep.add_section("Risk groups")
        s.add_table(group_tables.risk_group_table(rg["pooled"], rg.get("per_site"), rg.get("spans")))
    if res.truth is not None:
        s = rep.add_section("Ground truth comparison", "Synthetic data only: the simulation's true parameters next "
                            "to what the federated fit recovered.")
        fitted = {k: float(v) for k, v in (res.coefficients or {}).items()}
        s.add_table(tables.ground_truth_table(res.truth, fitted, res.coefficient_ci))
        if res.truth_metrics:
            s.add_table(tables.ground_truth_table(res.truth_metrics, {k: ev.get(k) for k in res.truth_metrics
                                                                      if ev.get(k) is not None},
                                                  caption="Performance: truth vs estimated"))
        if fitted and any(fitted.values()):
            s.add_figure(plots.coefficient_plot(fitted, res.coefficient_ci, truth=res.truth,
                                                title="Fitted coefficients and ground truth"),
                         "Diamonds: the generating (true) coefficients.")
    return rep


def survival_report(res: SurvivalResults, title: str, subtitle: str = "",
                    metadata: ReportMetadata | Mapping[str, Any] | None = None,
                    min_cell_count: int = 10) -> StudyReport:
    """A survival study report: KM by group and site, the Cox table and (synthetic) ground truth."""
    rep = _report(title, subtitle, metadata, min_cell_count)
    persons, outcomes = _headcount(res.attrition)
    if persons is not None:
        rep.add_headline("Persons", _count(persons, min_cell_count),
                         f"{_count(outcomes, min_cell_count)} events" if outcomes is not None else "")
    cox = as_mapping(res.cox) if res.cox is not None else {}
    if cox.get("concordance") is not None:
        rep.add_headline("Concordance (Cox)", f"{cox['concordance']:.3f}")
    if res.logrank and res.logrank.get("p_value") is not None:
        p = res.logrank["p_value"]
        rep.add_headline("Log-rank test", "p<0.001" if p < 0.001 else f"p={p:.3f}", "between groups")
    s = rep.add_section("Summary")
    lines = [x for x in (f"Target cohort: {res.target}." if res.target else "",
                         f"Outcome: {res.outcome}." if res.outcome else "") if x]
    if lines:
        s.add_text(" ".join(lines))
    for n in res.notes:
        s.add_note(n)
    if res.attrition:
        rep.add_section("Cohort & attrition").add_table(tables.attrition_table(res.attrition))
    for name, curves, at_risk in (("Survival by group", res.km_by_group, res.at_risk_by_group),
                                  ("Survival by site", res.km_by_site, res.at_risk_by_site)):
        if curves:
            caption = ""
            if name == "Survival by group" and res.logrank and res.logrank.get("p_value") is not None:
                lr = res.logrank
                p = lr["p_value"]
                caption = (f"Log-rank test: χ² = {lr.get('chi2', float('nan')):.1f}, "
                           + ("p < 0.001." if p < 0.001 else f"p = {p:.3f}."))
            by = res.group_label if name == "Survival by group" and res.group_label else name.split()[-1]
            rep.add_section(name).add_figure(plots.km_plot(
                curves, f"Kaplan-Meier: survival by {by}", res.at_risk_times, at_risk, res.time_label, min_cell_count,
                legend_title=by.capitalize()), caption)
    if cox:
        s = rep.add_section("Cox model")
        s.add_table(tables.cox_table(cox))
        hr = {k: v for k, v in cox["coefficients"].items()}
        ci = {k: (cox["ci_lower"][k], cox["ci_upper"][k]) for k in hr if k in cox.get("ci_lower", {})}
        if any(hr.values()):
            s.add_figure(plots.coefficient_plot(hr, ci, truth=res.truth, odds_ratios=True, effect="Hazard ratio",
                                                title="Hazard ratios (95% CI)"))
    if res.truth is not None and cox:
        rep.add_section("Ground truth comparison", "Synthetic data only.").add_table(tables.ground_truth_table(
            res.truth, cox["coefficients"], {k: (cox["ci_lower"][k], cox["ci_upper"][k]) for k in cox["coefficients"]
                                             if k in cox.get("ci_lower", {})}))
    return rep
