"""The PLP study runner: cohort → attrition → preprocessing → LASSO with CV → covariate summary → evaluation →
risk groups → truth.

Every step goes through a :class:`~nordfed.fed.protocol.Federation`, so the same run works in process or
through a hub. :func:`run_plp` returns a JSON-able dict of every number; :mod:`nordfed.studies.report`
turns it into the HTML report.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from nordfed.features.preprocessing import plan_preprocessing
from nordfed.fed.covariate_summary import covariate_summary
from nordfed.fed.evaluation import evaluate, hanley_mcneil_ci, score_round, temporal_validation
from nordfed.fed.lasso import fit_lasso
from nordfed.fed.protocol import AlgorithmError, Federation
from nordfed.fed.risk_groups import risk_groups
from nordfed.fed.score_curves import calibration_curve, prediction_distribution, roc_curve
from nordfed.models.logistic import FederatedLogisticRegression
from nordfed.studies import partials
from nordfed.studies.spec import OutcomeCohort, PlpStudy
from nordfed.studies.truth import load_truth, recover

Step = Callable[[str], None]
STEPS = ("cohort", "attrition", "preprocessing", "model", "covariate summary", "internal validation",
         "external validation", "temporal validation", "risk groups", "ground truth")
OUTCOME = "outcome"
_UNNAMED_UNIT = re.compile(r"\(unit \d+\)$")


def cohort_id(definition: Any) -> int:
    """A stable cohort_definition_id for a definition, so every site writes the same id."""
    return 1_000_000 + zlib.crc32(json.dumps(definition, sort_keys=True).encode("utf-8")) % 1_000_000_000


def study_params(spec: PlpStudy | Any) -> dict[str, Any]:
    """The dataset parameters every site receives: target and outcome definitions, population, covariates."""
    target = json.loads(spec.resolve(spec.target).read_text(encoding="utf-8"))
    params: dict[str, Any] = {"target": {"definition": target, "cohort_definition_id": cohort_id(target)},
                              "population": spec.population.settings()}
    if isinstance(spec.outcome, OutcomeCohort):
        oc = json.loads(spec.resolve(spec.outcome.cohort).read_text(encoding="utf-8"))
        params["outcome"] = {"definition": oc, "cohort_definition_id": cohort_id(oc)}
    else:
        params["outcome"] = "death"
    if isinstance(spec, PlpStudy):
        params["covariates"] = spec.covariates
    return params


def pool_attrition(per_site: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Sum the sites' attrition step by step; a step with a withheld site count is marked."""
    steps = next(iter(per_site.values()))
    out = []
    for i, step in enumerate(steps):
        cells = [rows[i] for rows in per_site.values()]
        row: dict[str, Any] = {"step": step["step"]}
        for k in ("rows", "persons", "outcomes"):
            shown = [c[k] for c in cells if c[k] is not None]
            row[k] = sum(shown)
            row[f"{k}_sites_suppressed"] = len(cells) - len(shown)
        out.append(row)
    return out


def identical_covariates(fed: Federation, dataset: dict[str, Any]) -> set[int]:
    """Covariates identical to another one at every site (all but the lowest id of each such group)."""
    res = fed.run("nordfed.studies.duplicates", {"dataset": dataset})
    signature: dict[int, list[int]] = {int(c): [] for c in dataset["covariate_ids"]}
    for r in res.values():
        member = {c: k for k, g in enumerate(r["groups"]) for c in g}
        for c, sig in signature.items():
            sig.append(member.get(c, -1 - c))  # not grouped at a site: a value no other covariate shares
    by_sig: dict[tuple[int, ...], list[int]] = {}
    for c, sig in signature.items():
        by_sig.setdefault(tuple(sig), []).append(c)
    return {c for group in by_sig.values() if len(group) > 1 for c in sorted(group)[1:]}


def covariate_cap(attrition: dict[str, list[dict[str, Any]]], cv_folds: int, max_covariates: int | None,
                  test_fraction: float = 0.0, params_per_row: float = 0.33) -> int:
    """Most covariates the smallest site accepts in a CV training fold of its training part (DataSHIELD's
    nfilter.glm default)."""
    rows = [steps[-1]["rows"] for steps in attrition.values() if steps and steps[-1]["rows"] is not None]
    smallest = min(rows) if rows else 0
    train = smallest * (1 - test_fraction) - 2  # the split rounds per outcome class
    auto = int(params_per_row * train * (cv_folds - 1) / cv_folds) - 2  # - intercept, - rounding of folds
    return max(1, min(auto, max_covariates)) if max_covariates is not None else max(1, auto)


def _curves(pos: list[np.ndarray], neg: list[np.ndarray], smooth: bool) -> dict[str, Any]:
    out: dict[str, Any] = roc_curve(pos, neg)
    if smooth:
        out |= {"calibration": calibration_curve(pos, neg), "distribution": prediction_distribution(pos, neg)}
    return out


def scored(fed: Federation, model: dict[str, Any], dataset: dict[str, Any],
           sites: list[str] | None = None, where: dict[str, Any] | None = None,
           smooth: bool = False) -> dict[str, Any]:
    """Pooled and per-site AUROC (with CI) and ROC points of ``model`` from one round of score aggregates;
    ``smooth`` adds the smooth calibration curve and the prediction distribution drawn from the same blocks."""
    site_list = sites or fed.sites
    base = {"dataset": dataset, "model": model, "outcome": OUTCOME, "where": where}
    res, auc, n_pos, n_neg = score_round(fed, base, site_list)
    _, lo, hi = hanley_mcneil_ci(auc, n_pos, n_neg)
    out: dict[str, Any] = {"pooled": {"auroc": auc, "auroc_ci": [lo, hi], "n": n_pos + n_neg, "events": n_pos,
                                      **_curves([r["blocks"]["pos"] for r in res.values()],
                                                [r["blocks"]["neg"] for r in res.values()], smooth)}}
    for s, r in res.items():
        ev, n = r["events"], r["n"]
        a = r["u"] / (ev * (n - ev)) if 0 < ev < n else None
        ci = list(hanley_mcneil_ci(a, ev, n - ev)[1:]) if a is not None else None
        out[s] = {"auroc": a, "auroc_ci": ci, "n": n, "events": ev,
                  **_curves([r["blocks"]["pos"]], [r["blocks"]["neg"]], smooth)}
    return out


def covariate_names(fed: Federation, covariate_ids: list[int]) -> dict[int, str]:
    """Names from every site's vocabulary: a measurement value's unit is named by a site that records it (a site
    without that unit can only say ``(unit N)``, the residue its id keeps)."""
    res = fed.run("nordfed.studies.covariate_names", {"covariate_ids": covariate_ids})
    answers = [r["names"] for r in res.values()]
    out: dict[int, str] = {}
    for c in covariate_ids:
        given = [a[str(c)] for a in answers if str(c) in a]
        named = [n for n in given if not _UNNAMED_UNIT.search(n)]
        if named or given:
            out[int(c)] = (named or given)[0]
    return out


def _named(model: dict[str, Any], names: dict[int, str]) -> dict[str, float]:
    coef = {names.get(int(c), f"covariate {c}"): float(b) for c, b in zip(model["covariates"], model["coef"],
                                                                         strict=True) if b}
    return {"(Intercept)": float(model["intercept"]), **dict(sorted(coef.items(), key=lambda kv: -abs(kv[1])))}


def model_covariate_summary(fed: Federation, model: dict[str, Any], names: dict[int, str], dataset: Any,
                            train: dict[str, Any] | None, test: dict[str, Any] | None,
                            scale: dict[str, float] | None = None) -> dict[str, Any]:
    """PatientLevelPrediction's covariate summary of the model's non-zero covariates on the training and the test
    part (``test`` None: no split, the training part is every row), named and with their coefficients; ``scale``
    (column → factor) multiplies means and SDs."""
    coef = {c: float(b) for c, b in zip(model["covariates"], model["coef"], strict=True) if b}
    scale = {str(k): float(v) for k, v in (scale or {}).items() if v}
    out: dict[str, Any] = {}
    for part, where in (("train", train), ("test", test)):
        if part == "test" and test is None:
            out[part] = None
            continue
        res = covariate_summary(fed, list(coef), OUTCOME, dataset=dataset, where=where, scale=scale)
        for table in (res["pooled"], *res["per_site"].values()):
            for row in table["rows"]:
                c = row["covariate"]
                row |= {"name": names.get(int(c), f"covariate {c}"), "coefficient": coef[c]}
        out[part] = res
    return out


def _optional(results: dict[str, Any], key: str, fn: Callable[[], Any]) -> None:
    """Run an optional validation; a site's refusal or too few rows is recorded, not fatal."""
    try:
        results[key] = fn()
    except (AlgorithmError, ValueError) as exc:
        results[key] = {"error": str(exc)}


def run_plp(spec: PlpStudy, fed: Federation, truth_files: dict[str, Any] | None = None,
            step: Step | None = None) -> dict[str, Any]:
    """Run the PLP study on ``fed``; ``truth_files`` (site -> truth JSON) enables the ground-truth comparison."""
    def tick(name: str) -> None:
        if step:
            step(name)

    params = study_params(spec)
    out: dict[str, Any] = {"study": spec.name, "kind": "plp", "description": spec.description,
                           "sites": list(fed.sites), "settings": json.loads(spec.model_dump_json())}
    tick("cohort")
    inst = fed.run("nordfed.cohorts.instantiate", params["target"])
    out["cohort"] = {s: {k: r[k] for k in ("entries", "persons", "attrition")} for s, r in inst.items()}
    tick("attrition")
    att = fed.run("nordfed.studies.attrition", params)
    per_site = {s: r["steps"] for s, r in att.items()}
    out["attrition"] = {"pooled": pool_attrition(per_site), "per_site": per_site}
    out["min_cell_count"] = {s: r.get("min_cell_count") for s, r in att.items()}
    tick("preprocessing")
    pp = spec.preprocessing
    plan = plan_preprocessing(fed, params, pp.min_fraction, pp.normalize, pp.remove_redundancy)
    if not plan.covariate_ids:
        raise ValueError(f"{spec.source}: no covariate is common enough across sites to model "
                         f"(preprocessing.min_fraction = {pp.min_fraction})")
    names = covariate_names(fed, plan.covariate_ids)
    cap = covariate_cap(per_site, spec.model.cv_folds, pp.max_covariates, spec.evaluation.test_fraction)
    # copies first, then the cap: a slot under the cap must not go to a covariate dropped as a copy afterwards
    dropped = identical_covariates(fed, {**params, "builder": "study", "covariate_ids": plan.covariate_ids,
                                         "max_values": {str(k): v for k, v in plan.max_values.items()}})
    if dropped:
        plan.removed["identical to another"] = sorted(dropped)
        plan.covariate_ids = [c for c in plan.covariate_ids if c not in dropped]
    if len(plan.covariate_ids) > cap:
        ranked = sorted(plan.covariate_ids, key=lambda c: (-plan.counts.get(c, 0), c))
        keep = set(ranked[:cap])
        plan.removed["beyond max_covariates"] = [c for c in plan.covariate_ids if c not in keep]
        plan.covariate_ids = [c for c in plan.covariate_ids if c in keep]
    kept = set(plan.covariate_ids)
    plan.max_values = {c: v for c, v in plan.max_values.items() if c in kept}
    out["preprocessing"] = {"n": plan.n, "covariates": len(plan.covariate_ids), "cap": cap,
                            "removed": {k: len(v) for k, v in plan.removed.items()}}
    dataset = {**params, "builder": "study", "covariate_ids": plan.covariate_ids,
               "max_values": {str(k): v for k, v in plan.max_values.items()}}
    covariates = [str(c) for c in plan.covariate_ids]
    out["preprocessing"]["plan"] = {"covariate_ids": dataset["covariate_ids"], "max_values": dataset["max_values"]}
    tick("model")
    m = spec.model
    # PatientLevelPrediction's split: the model learns (and cross-validates) on the training part and is
    # evaluated on the test part; at each site, stratified by outcome and keyed by the site's secret
    train = test = None
    if spec.evaluation.test_fraction:
        split = {"test_fraction": spec.evaluation.test_fraction, "seed": m.seed}
        train, test = {**split, "split": "train"}, {**split, "split": "test"}
    clf = FederatedLogisticRegression(alpha=m.l1, cv=m.cv_folds, select=m.selection, n_lambda=m.n_lambda,
                                      lambda_min_ratio=m.lambda_min_ratio, seed=m.seed, tol=1e-7, max_iter=50)
    clf.fit(fed, covariates, OUTCOME, dataset=dataset, where=train)
    model = clf.to_model()
    cv = clf.fit_.cv if clf.fit_ is not None else None
    out["model"] = {**model, "lambda": clf.lambda_, "alpha": m.l1, "type": m.type, "selection": m.selection,
                    "n": clf.meta_["n"], "events": clf.meta_["n_events"], "rounds": clf.meta_["rounds"],
                    "non_zero": int(np.count_nonzero(model["coef"])), "named": _named(model, names),
                    "cv": None if cv is None else {"lambdas": cv.lambdas.tolist(), "cvm": cv.cvm.tolist(),
                                                   "cvsd": cv.cvsd.tolist(), "lambda_min": cv.lambda_min,
                                                   "lambda_1se": cv.lambda_1se, "folds": cv.n_folds}}
    tick("covariate summary")
    # normalised covariates were divided by their maximum: their means and SDs go back to the covariate's units
    out["covariate_summary"] = model_covariate_summary(fed, model, names, dataset, train, test,
                                                       scale=dataset["max_values"])
    tick("internal validation")
    out["internal"] = {**evaluate(fed, model, OUTCOME, dataset=dataset, where=test, age_column="age",
                                  sex_column="sex").to_dict(),
                       "on": "test part" if test else "training rows", "test_fraction": spec.evaluation.test_fraction}
    out["internal_roc"] = scored(fed, model, dataset, where=test, smooth=True)
    # next to the logistic-recalibration ICI: the same measure from the smooth (kernel) calibration curve
    out["internal"]["ici_smoothed"] = out["internal_roc"]["pooled"]["calibration"]["ici"]
    tick("external validation")
    if spec.evaluation.leave_one_site_out and len(fed.sites) > 1:
        _optional(out, "external", lambda: _leave_one_site_out(fed, covariates, dataset, clf.lambda_, m.l1))
    tick("temporal validation")
    if spec.evaluation.temporal_split is not None:
        cut = spec.evaluation.temporal_split.isoformat()

        def temporal() -> dict[str, Any]:
            tm, ev = temporal_validation(fed, covariates, OUTCOME, "index_date", cut, clf.lambda_, m.l1,
                                         dataset=dataset, age_column="age", sex_column="sex")
            return {"split": cut, "model": tm, "evaluation": ev.to_dict()}

        _optional(out, "temporal", temporal)
    tick("risk groups")
    rg = spec.risk_groups
    # observed rates from persons the model did not learn from
    out["risk_groups"] = risk_groups(fed, model, OUTCOME, cutoffs=rg.cutoffs,
                                     quantiles=rg.quantiles or (0.25, 0.5, 0.75), bundles=rg.bundles,
                                     dataset=dataset, where=test).to_dict()
    out["risk_groups"]["by"] = "fixed cut-offs" if rg.cutoffs is not None else "pooled quantiles"
    tick("ground truth")
    if truth_files and set(truth_files) >= set(fed.sites):
        out["ground_truth"] = ground_truth(spec, fed, model, dataset, plan, truth_files, test)
    return out


def _leave_one_site_out(fed: Federation, covariates: list[str], dataset: dict[str, Any], lam: float,
                        alpha: float) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for site in fed.sites:
        others = [s for s in fed.sites if s != site]
        step = f"training on {', '.join(others)}"
        # one held-out site that cannot be validated (a refusal, too few rows) leaves the others' results
        try:
            fit = fit_lasso(fed, covariates, OUTCOME, lam=lam, alpha=alpha, dataset=dataset, sites=others,
                            tol=1e-7, max_iter=50)
            step = f"evaluating at {site}"
            ev = evaluate(fed, fit, OUTCOME, dataset=dataset, sites=[site], age_column="age", sex_column="sex")
            roc = scored(fed, fit.to_model(), dataset, [site], smooth=True)[site]
        except (AlgorithmError, ValueError) as exc:
            res[site] = {"trained_on": others, "error": f"{step}: {exc}"}
            continue
        res[site] = {"trained_on": others, "evaluation": ev.to_dict(), "roc": roc}
    if all("error" in r for r in res.values()):  # nothing to show: one note for the report, as before
        raise AlgorithmError("all", "; ".join(f"held out {s}: {r['error']}" for s, r in res.items()))
    return res


def term_sds(fed: Federation, dataset: dict[str, Any], columns: list[str]) -> list[float]:
    """Pooled population SDs of ``columns`` from the sites' moments (the LASSO's standardisation round)."""
    from nordfed.fed.lasso_solver import pooled_moments

    mom = fed.run("nordfed.lasso.moments", {"dataset": dataset, "covariates": columns, "outcome": OUTCOME,
                                            "n_folds": 0, "seed": 0})
    n, _, m2 = pooled_moments([(r["parts"][0]["n"], r["parts"][0]["mean"], r["parts"][0]["m2"])
                               for r in mom.values()])
    return [float(v) for v in np.sqrt(np.asarray(m2) / n)]


def ground_truth(spec: PlpStudy, fed: Federation, model: dict[str, Any], dataset: dict[str, Any], plan: Any,
                 truth_files: dict[str, Any], where: dict[str, Any] | None = None) -> dict[str, Any]:
    """Recovered risk factors and AUROC of the fitted vs the generating model on the same persons."""
    truth = load_truth(next(iter(truth_files.values())))
    candidates = sorted({*plan.covariate_ids, *plan.removed.get("redundant", [])})
    ds = {**dataset, "truth": "crc_surgery"}
    names = [v["name"] for v in truth["model"]["variables"]]
    sds = dict(zip(names, term_sds(fed, ds, [f"truth:{n}" for n in names]), strict=True))
    factors = [f.to_dict() for f in recover(truth["model"], model, candidates, sds,
                                            spec.ground_truth.main_factor_min_effect)]
    # the truth column joins the fitted model with coefficient 0 so both are scored on exactly the same rows
    fitted = {"covariates": [*model["covariates"], partials.TRUTH_COLUMN], "coef": [*model["coef"], 0.0],
              "intercept": model["intercept"]}
    generating = {"covariates": [partials.TRUTH_COLUMN], "coef": [1.0], "intercept": 0.0}
    fit_scores, truth_scores = scored(fed, fitted, ds, where=where), scored(fed, generating, ds, where=where)
    strip = ("fpr", "tpr")
    main = [f for f in factors if f["main"]]
    diff = fit_scores["pooled"]["auroc"] - truth_scores["pooled"]["auroc"]
    return {
        "factors": factors,
        "main_factors": [f["name"] for f in main],
        "main_recovered": [f["name"] for f in main if f["status"] == "recovered"],
        "all_main_recovered": all(f["status"] == "recovered" for f in main),
        "auroc_fitted": {s: {k: v for k, v in r.items() if k not in strip} for s, r in fit_scores.items()},
        "auroc_truth": {s: {k: v for k, v in r.items() if k not in strip} for s, r in truth_scores.items()},
        "auroc_difference": diff,
        "auroc_tolerance": spec.ground_truth.auroc_tolerance,
        "auroc_within_tolerance": abs(diff) <= spec.ground_truth.auroc_tolerance,
        "truth_roc": truth_scores["pooled"],
        "truth_intercept": truth["model"]["intercept"],
    }
