"""Turn a study's results (the JSON-able dict of a runner) into the HTML report and the JSON beside it.

The PLP report uses :func:`nordfed.reports.plp_report` and adds the ground-truth section (truth variables are
matched to covariates, so their names differ from the model's); the survival report uses
:func:`nordfed.reports.survival_report`. Both files are written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

PLP_SECTION_TITLES = ("Summary", "Cohort & attrition", "Model", "Internal performance", "External validation by site",
                      "Risk groups", "Demographic summary", "Ground truth comparison")


def jsonable(obj: Any) -> Any:
    """json.dumps hook for numpy values and dataclasses."""
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if isinstance(obj, tuple | set):
        return list(obj)
    return str(obj)


def write_json(results: dict[str, Any], path: Path) -> Path:
    text = json.dumps(results, indent=2, default=jsonable, allow_nan=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _short(text: str, limit: int = 80) -> str:
    """``text`` cut at a word to at most ``limit`` characters, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + "…"


def min_cell_count(results: dict[str, Any]) -> int:
    """The minimum cell count the report states: the highest the sites applied (a node may raise the study's), or
    the study's for results written before sites reported theirs."""
    sites = [int(v) for v in (results.get("min_cell_count") or {}).values() if v]
    return max(sites) if sites else int(results["settings"]["disclosure"]["min_cell_count"])


def _metadata(results: dict[str, Any], transport: str, algorithms: list[str]) -> Any:
    from nordfed.fed.protocol import algorithms as registry
    from nordfed.reports import ReportMetadata

    reg = registry()
    extra = {"transport": transport}
    by_site = {s: v for s, v in (results.get("min_cell_count") or {}).items() if v}
    if len(set(by_site.values())) > 1:
        extra["minimum cell count by site"] = ", ".join(f"{s} {v}" for s, v in by_site.items())
    return ReportMetadata(study=results["study"], sites=list(results["sites"]),
                          sites_left_out=list(results.get("sites_left_out") or []),
                          synthetic="ground_truth" in results or bool(results.get("synthetic")),
                          algorithms={a: f"{reg[a].version} ({reg[a].code_hash[:12]})" for a in algorithms if a in reg},
                          extra=extra)


def _external(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    rows, rocs, notes = {}, {}, []
    ext = results.get("external")
    if isinstance(ext, dict) and "error" in ext:
        notes.append(f"Leave-one-site-out validation not available: {ext['error']}")
    elif ext:
        for site, r in ext.items():
            if "error" in r:
                notes.append(f"{site} held out (trained on {', '.join(r['trained_on'])}): not available: {r['error']}")
                continue
            label = f"{site} (trained on {', '.join(r['trained_on'])})"
            rows[label] = r["evaluation"]
            rocs[site] = r["roc"]
    tmp = results.get("temporal")
    if isinstance(tmp, dict) and "error" in tmp:
        notes.append(f"Temporal validation not available: {tmp['error']}")
    elif tmp:
        rows[f"temporal: trained before {tmp['split']}, tested on or after"] = tmp["evaluation"]
    return rows, rocs, notes


def _covariate_summary(results: dict[str, Any]) -> dict[str, Any] | None:
    """The pooled covariate summary the report shows: the training part's, the development data TRIPOD asks to
    describe (the test part's stays in the JSON: with a quarter of the persons, sites withheld most of its cells
    in the demo, 19 of 66 covariates at every site against 5)."""
    cs = results.get("covariate_summary") or {}
    if cs.get("train"):
        return {"rows": cs["train"]["pooled"]["rows"], "on": "training part" if cs.get("test") else "all persons"}
    return None


def plp_html(results: dict[str, Any], transport: str = "in-process") -> Any:
    """The :class:`~nordfed.reports.StudyReport` of a PLP run."""
    from nordfed.reports import PlpResults, plp_report

    s = results["settings"]
    pop = s["population"]
    mdl = results["model"]
    internal = dict(results["internal"])
    internal["per_site"] = {site: {**v, "auroc_ci": results["internal_roc"].get(site, {}).get("auroc_ci")}
                            for site, v in internal.get("per_site", {}).items()}
    roc = {("pooled" if k == "pooled" else k): v for k, v in results["internal_roc"].items()}
    external, external_roc, notes = _external(results)
    attrition = [{"step": r["step"], "persons": r["persons"] if not r["persons_sites_suppressed"] else None,
                  "outcomes": r["outcomes"] if not r["outcomes_sites_suppressed"] else None}
                 for r in results["attrition"]["pooled"]]
    pp = results["preprocessing"]
    if pp["removed"].get("beyond max_covariates"):
        notes.append(f"Covariates limited to the {pp['cap']} most prevalent: a site "
                     "refuses a model with more than 0.33 parameters per row of a cross-validation fold.")
    if results.get("ground_truth"):
        notes.insert(0, "SYNTHETIC DATA: the sites were generated by nordfed.synth; the numbers test the method.")
    res = PlpResults(
        target=s["target"], outcome="death" if s["outcome"] == "death" else str(s["outcome"]),
        time_at_risk=f"day {pop['risk_window_start']} to day {pop['risk_window_end']} after {pop['end_anchor']}",
        attrition=attrition, coefficients=mdl["named"],
        hyperparameters={"model": mdl["type"], "alpha (L1 share)": mdl["alpha"], "lambda": f"{mdl['lambda']:.4g}",
                         "selection": f"{mdl['selection']} over {s['model']['cv_folds']}-fold CV",
                         "covariates offered": results["preprocessing"]["covariates"],
                         "non-zero": mdl["non_zero"],
                         **{f"removed: {k}": v for k, v in results["preprocessing"]["removed"].items() if v}},
        normalised=bool(s["preprocessing"]["normalize"]),
        internal=internal, internal_roc=roc, external=external or None, external_roc=external_roc or None,
        covariate_summary=_covariate_summary(results),
        risk_groups=results["risk_groups"], notes=[*notes, *([results["description"]] if results["description"]
                                                            else [])],
        characterization={"Study population by site (persons)": {
            "tables": {site: [{"step": r["step"], "persons": r["persons"]} for r in rows]
                       for site, rows in results["attrition"]["per_site"].items()},
            "keys": "step", "value": "persons"}},
    )
    algos = ["nordfed.cohorts.instantiate", "nordfed.studies.attrition", "nordfed.features.covariate_stats",
             "nordfed.lasso.moments", "nordfed.lasso.newton", "nordfed.lasso.deviance", "nordfed.eval.scores",
             "nordfed.plp.covariate_summary", "nordfed.eval.cross_u", "nordfed.eval.groups"]
    rep = plp_report(res, f"{results['study']}: {_short(s['description']) or 'patient-level prediction'}",
                     subtitle=f"{len(results['sites'])} sites: {', '.join(results['sites'])}",
                     metadata=_metadata(results, transport, algos), min_cell_count=min_cell_count(results))
    _demographic_section(rep, internal, min_cell_count(results))
    if results.get("ground_truth"):
        _truth_section(rep, results)
    return rep


def _demographic_section(rep: Any, internal: dict[str, Any], mcc: int) -> None:
    """PatientLevelPrediction's demographic summary of the internal evaluation, placed after the risk groups (the
    other observed-vs-expected table) or, without them, after the internal performance."""
    from nordfed.reports import group_tables, prediction_plots

    demo = {k: v for k, v in (internal.get("demographics") or {}).items() if v}
    if not demo:
        return  # the sites' data had no age or sex column
    spans = internal.get("demographic_spans") or {}
    on = {"test part": "the test part", "training rows": "the persons the model was fitted on (apparent, optimistic)"}
    by = " and ".join({"age_group": "age group", "sex": "sex"}.get(k, k.replace("_", " ")) for k in demo)
    sec = rep.add_section("Demographic summary", f"Observed outcome rate and mean predicted risk (expected) by {by}, "
                          f"on {on.get(str(internal.get('on')), 'the evaluated persons')}, pooled over sites." + (
                              " Age groups are over both sexes and sexes over all ages: the sites release no "
                              "age-by-sex cells." if len(demo) > 1 else ""))
    # as in the internal performance section: a number copied out of the report still says what it measured
    tag = "apparent: training rows, optimistic" if internal.get("on") == "training rows" else "internal validation"
    sec.add_figure(prediction_plots.demographic_plot(demo, spans, f"Observed vs expected by {by}, {tag}",
                                                     min_cell_count=mcc),
                   "Points: observed outcome rate (95% Wilson interval) and expected risk per group. A bar over "
                   "several age groups is one rate for them together, where sites released their outcomes only "
                   "merged; a withheld group is left out and marked suppr.")
    sec.add_table(group_tables.demographic_table(demo, spans, f"Demographic summary, {tag}"))
    rep.sections.remove(sec)
    titles = [s.title for s in rep.sections]
    after = next((t for t in ("Risk groups", "External validation by site", "Internal performance") if t in titles),
                 None)
    rep.sections.insert(titles.index(after) + 1 if after else len(titles), sec)


def _truth_section(rep: Any, results: dict[str, Any]) -> None:
    from nordfed.reports import Column, Table, plots, roc_plot

    gt = results["ground_truth"]
    sec = rep.add_section("Ground truth comparison", "Synthetic data only: the generating logistic model (truth "
                          "JSON beside each CDM) next to what the federated fit recovered.")
    fa, tr = gt["auroc_fitted"], gt["auroc_truth"]
    rows = [{"site": s, "n": fa[s]["n"], "fitted": fa[s]["auroc"], "truth": tr[s]["auroc"],
             "diff": None if fa[s]["auroc"] is None or tr[s]["auroc"] is None else fa[s]["auroc"] - tr[s]["auroc"]}
            for s in fa]
    sec.add_table(Table([Column("site", "Site"), Column("n", "Persons", "count"),
                         Column("fitted", "AUROC fitted model", "number"),
                         Column("truth", "AUROC generating model", "number"),
                         Column("diff", "Fitted − generating", "number")], rows,
                        "Discrimination on the same persons",
                        [f"Tolerance {gt['auroc_tolerance']:g}: "
                         + ("within" if gt["auroc_within_tolerance"] else "NOT within") + " (pooled)."]))
    frows = [{"name": f["name"], "beta": f["beta"], "importance": f["importance"], "effect": f["effect"],
              "n": len(f["covariates"]), "status": f["status"], "main": "yes" if f["main"] else ""}
             for f in sorted(gt["factors"], key=lambda f: -(f["importance"] or 0.0))]
    recovered = f"{len(gt['main_recovered'])} of {len(gt['main_factors'])} main risk factors recovered"
    sec.add_table(Table([Column("name", "Truth variable"), Column("beta", "True beta", "number"),
                         Column("importance", "|beta|·SD", "number"), Column("effect", "Fitted effect", "number"),
                         Column("n", "Covariates", "count"), Column("status", "Status"),
                         Column("main", "Main factor")], frows, f"Risk factors: {recovered}",
                        ["Fitted effect: sum of the coefficients of the covariates carrying the variable (age: slope "
                         "per 10 years over age groups; male: male minus female); values are on the model's "
                         "(normalised) covariate scale, so compare signs, not sizes."]))
    truth_betas = {f["name"]: f["beta"] for f in gt["factors"] if f["effect"] is not None}
    fitted = {f["name"]: f["effect"] for f in gt["factors"] if f["effect"] is not None}
    if any(fitted.values()):
        sec.add_figure(plots.coefficient_plot(fitted, truth=truth_betas, title="Fitted effects and true betas"),
                       "Diamonds: the generating coefficients.")
    roc_pooled = results["internal_roc"]["pooled"]
    sec.add_figure(roc_plot({"fitted model": roc_pooled, "generating model": gt["truth_roc"]},
                            "ROC: fitted vs generating model", pooled=None), "Pooled over sites.")


def survival_html(results: dict[str, Any], transport: str = "in-process") -> Any:
    """The :class:`~nordfed.reports.StudyReport` of a survival run."""
    from nordfed.reports import SurvivalResults, survival_report

    s = results["settings"]
    km = results["km"]
    attrition = [{"step": r["step"], "persons": r["persons"] if not r["persons_sites_suppressed"] else None,
                  "outcomes": r["outcomes"] if not r["outcomes_sites_suppressed"] else None}
                 for r in results["attrition"]["pooled"]]
    notes = [n for n in (results.get("description"),) if n] + results.get("notes", [])
    res = SurvivalResults(
        target=s["target"], outcome="death" if s["outcome"] == "death" else str(s["outcome"]),
        attrition=attrition, km_by_group=km.get("by_group") or None, km_by_site=km.get("per_site") or None,
        at_risk_times=results.get("at_risk_times"), at_risk_by_group=results.get("at_risk_by_group"),
        at_risk_by_site=results.get("at_risk_by_site"), logrank=km.get("logrank"),
        cox=_labelled_cox(results.get("cox"), cox_labels(s["covariates"])), notes=notes,
        group_label=s["analysis"].get("km_by") or "")
    algos = ["nordfed.cohorts.instantiate", "nordfed.studies.attrition", "nordfed.km.counts",
             "nordfed.cox.summary", "nordfed.cox.risk_sets", "nordfed.cox.stratum", "nordfed.cox.concordance"]
    return survival_report(res, f"{results['study']}: survival", f"{len(results['sites'])} sites: "
                           f"{', '.join(results['sites'])}", _metadata(results, transport, algos),
                           min_cell_count=min_cell_count(results))


def cox_labels(covariates: dict[str, Any]) -> dict[str, str]:
    """What a reader calls each Cox column: a level against its reference, age per year, male against female.

    >>> cox_labels({"categorical": {"stage": {"levels": {"I-II": [1], "III": [2]}, "reference": None}}})
    {'age': 'age (per year)', 'male': 'male vs female', 'stage_III': 'stage III vs I-II'}
    """
    labels = {"age": "age (per year)", "male": "male vs female"}
    for name, cat in (covariates.get("categorical") or {}).items():
        ref = cat.get("reference") or next(iter(cat["levels"]))
        labels |= {f"{name}_{level}": f"{name} {level} vs {ref}" for level in cat["levels"] if level != ref}
    return labels


def _labelled_cox(cox: dict[str, Any] | None, labels: dict[str, str]) -> dict[str, Any] | None:
    """The Cox result with its covariates named for the report (the JSON keeps the column names)."""
    if not cox:
        return cox
    out = dict(cox)
    for key, value in cox.items():
        if isinstance(value, dict) and set(value) <= set(cox.get("coefficients", {})):
            out[key] = {labels.get(k, k): v for k, v in value.items()}
    if isinstance(cox.get("covariates"), list):
        out["covariates"] = [labels.get(k, k) for k in cox["covariates"]]
    return out


def write_report(results: dict[str, Any], out: Path, transport: str = "in-process") -> tuple[Path, Path]:
    """Write ``out`` (HTML) and ``out`` with suffix .json; returns both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rep = plp_html(results, transport) if results["kind"] == "plp" else survival_html(results, transport)
    json_path = write_json(results, out.with_suffix(".json"))
    try:
        rep.write(out)
    except BaseException:
        json_path.unlink(missing_ok=True)
        raise
    return out, json_path
