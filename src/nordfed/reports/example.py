"""Example reports from SYNTHETIC data: a PLP study and a survival study across three simulated sites.

The numbers are real computations on simulated rows (scikit-learn for the prediction model, nordfed's risk
groups, federated Kaplan-Meier and Cox fits for survival), so the report shows what a study would look like.
Run ``python -m nordfed.reports.example OUTDIR`` to write ``plp_example.html`` and ``survival_example.html``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score, roc_curve

from nordfed.fed.evaluation import hanley_mcneil_ci
from nordfed.fed.protocol import InProcessFederation
from nordfed.fed.risk_groups import risk_groups
from nordfed.privacy.disclosure import DisclosurePolicy
from nordfed.reports.html import ReportMetadata, StudyReport
from nordfed.reports.layouts import PlpResults, SurvivalResults, plp_report, survival_report

SITES = {"Oslo (synthetic)": 1400, "Uppsala (synthetic)": 1000, "Tartu (synthetic)": 450}
TRUE_BETA = {"age_per_10y": 0.45, "male": 0.30, "diabetes": 0.55, "heart_failure": 0.80, "ckd": 0.40,
             "statin": -0.35, "smoker": 0.25, "copd": 0.0, "anemia": 0.0}
TRUE_INTERCEPT = -2.6
MIN_CELL = 10


def _sites(seed: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    frames = {}
    for k, (site, n) in enumerate(SITES.items()):
        x = pd.DataFrame({
            "age_per_10y": rng.normal(6.5 + 0.3 * k, 1.2, n), "male": rng.binomial(1, 0.5, n),
            "diabetes": rng.binomial(1, 0.15 + 0.03 * k, n), "heart_failure": rng.binomial(1, 0.08, n),
            "ckd": rng.binomial(1, 0.1, n), "statin": rng.binomial(1, 0.3, n), "smoker": rng.binomial(1, 0.2, n),
            "copd": rng.binomial(1, 0.07, n), "anemia": rng.binomial(1, 0.05, n)})
        lp = TRUE_INTERCEPT + 0.1 * k + (x["age_per_10y"] - 6.5) * TRUE_BETA["age_per_10y"] + sum(
            x[c] * b for c, b in TRUE_BETA.items() if c != "age_per_10y")
        x["outcome"] = rng.binomial(1, 1 / (1 + np.exp(-lp)))
        x["time"] = np.ceil(rng.exponential(900 * np.exp(-(lp - TRUE_INTERCEPT)), n)).clip(1)
        cens = np.ceil(rng.uniform(200, 1500, n))
        x["event"] = (x["time"] <= cens).astype(int)
        x["time"] = np.minimum(x["time"], cens)
        x["stage"] = np.where(lp > np.median(lp), "high risk", "low risk")
        frames[site] = x
    return frames


def _lasso() -> LogisticRegression:
    return LogisticRegression(l1_ratio=1.0, C=0.3, solver="liblinear")


def _suppress(n: int) -> int | None:
    return None if 0 < n < MIN_CELL else int(n)


def _metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    auc = roc_auc_score(y, p)
    _, lo, hi = hanley_mcneil_ci(auc, int(y.sum()), int((1 - y).sum()))
    logit = np.log(p / (1 - p)).reshape(-1, 1)
    slope = LogisticRegression(C=np.inf).fit(logit, y).coef_[0, 0]
    intercept = 0.0  # calibration-in-the-large: logistic intercept with offset logit(p), by Newton steps
    for _ in range(25):
        q = 1 / (1 + np.exp(-(intercept + logit[:, 0])))
        intercept += (y - q).sum() / (q * (1 - q)).sum()
    return {"n": len(y), "outcomes": _suppress(int(y.sum())), "auroc": auc, "auroc_ci": (lo, hi),
            "auprc": average_precision_score(y, p), "brier": brier_score_loss(y, p),
            "calibration_intercept": intercept, "calibration_slope": slope}


def _calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, Any]]:
    edges = np.quantile(p, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        m = idx == b
        obs = _suppress(int(y[m].sum()))
        rows.append({"bin": b + 1, "n": int(m.sum()) if obs is not None else None,
                     "observed": obs, "expected": float(p[m].sum()) if obs is not None else None})
    return rows


def synthetic_plp(seed: int = 7) -> tuple[PlpResults, ReportMetadata]:
    frames = _sites(seed)
    cov = list(TRUE_BETA)
    pooled = pd.concat(frames.values())
    model = _lasso().fit(pooled[cov], pooled["outcome"])
    coefs = {"(Intercept)": float(model.intercept_[0]), **dict(zip(cov, map(float, model.coef_[0]), strict=True))}
    y, p = pooled["outcome"].to_numpy(), model.predict_proba(pooled[cov])[:, 1]
    internal = {**_metrics(y, p), "calibration_table": _calibration(y, p),
                "per_site": {s: _metrics(f["outcome"].to_numpy(), model.predict_proba(f[cov])[:, 1])
                             for s, f in frames.items()}}
    fpr, tpr, _ = roc_curve(y, p)
    internal_roc = {"pooled": {"fpr": fpr, "tpr": tpr, "auroc": internal["auroc"], "auroc_ci": internal["auroc_ci"]}}
    for s, f in frames.items():
        fs, ts, _ = roc_curve(f["outcome"], model.predict_proba(f[cov])[:, 1])
        internal_roc[s] = {"fpr": fs, "tpr": ts, **{k: internal["per_site"][s][k] for k in ("auroc", "auroc_ci")}}
    external, external_roc = {}, {}
    for s, f in frames.items():
        train = pd.concat(g for t, g in frames.items() if t != s)
        m = _lasso().fit(train[cov], train["outcome"])
        ps = m.predict_proba(f[cov])[:, 1]
        external[s] = _metrics(f["outcome"].to_numpy(), ps)
        fs, ts, _ = roc_curve(f["outcome"], ps)
        external_roc[s] = {"fpr": fs, "tpr": ts, "auroc": external[s]["auroc"], "auroc_ci": external[s]["auroc_ci"]}
    # the network's own risk-group algorithm on the same rows, so the table shows its merged spans as a study would
    bundles = ["usual care", "nurse follow-up call", "geriatric assessment", "intensive follow-up"]
    model_dict = {"covariates": cov, "coef": [float(c) for c in model.coef_[0]],
                  "intercept": float(model.intercept_[0])}
    groups = risk_groups(InProcessFederation.from_frames(frames, DisclosurePolicy(min_cell_count=MIN_CELL)),
                         model_dict, "outcome", cutoffs=[0.05, 0.15, 0.30], bundles=bundles).to_dict()
    sex = {s: [{"sex": "female", "persons": _suppress(int((f["male"] == 0).sum()))},
               {"sex": "male", "persons": _suppress(int((f["male"] == 1).sum()))}] for s, f in frames.items()}
    dq = {s: [{"check": "missing year_of_birth", "failed": 0}, {"check": "visit end before start",
                                                                "failed": _suppress(3 + 4 * k)},
              {"check": "measurement without unit", "failed": _suppress(12 + 20 * k)}]
          for k, s in enumerate(frames)}
    n_all = sum(SITES.values())
    res = PlpResults(
        target="Adults with a first hospitalisation for heart failure (synthetic)",
        outcome="30-day readmission", time_at_risk="1–30 days after discharge",
        attrition=[{"step": "Persons with an index hospitalisation", "persons": int(n_all * 1.6)},
                   {"step": "≥365 days prior observation", "persons": int(n_all * 1.2)},
                   {"step": "No prior outcome", "persons": n_all, "outcomes": int(y.sum())}],
        coefficients=coefs, hyperparameters={"penalty": "L1 (LASSO)", "C": 0.3, "covariates offered": len(cov)},
        internal=internal, internal_roc=internal_roc, external=external, external_roc=external_roc,
        risk_groups=groups,
        characterization={"Persons by sex": {"tables": sex, "keys": "sex", "value": "persons"},
                          "Data-quality checks failed": {"tables": dq, "keys": "check", "value": "failed"}},
        truth={"(Intercept)": TRUE_INTERCEPT - 6.5 * TRUE_BETA["age_per_10y"], **TRUE_BETA},
        notes=["SYNTHETIC DATA: simulated persons at three simulated sites; the numbers show the report layout "
               "and mean nothing clinically."])
    meta = ReportMetadata(study="Example PLP study (synthetic)", sites=list(SITES), synthetic=True,
                          algorithms={"sklearn.linear_model.LogisticRegression": "l1 / liblinear (example only)"})
    return res, meta


def synthetic_survival(seed: int = 7) -> tuple[SurvivalResults, ReportMetadata]:
    from nordfed.fed.cox import fit_cox
    from nordfed.fed.km import fit_km

    frames = _sites(seed)
    fed = InProcessFederation.from_frames(frames, DisclosurePolicy(exact_event_times=True))
    by_group = fit_km(fed, duration="time", event="event", group="stage")
    cov = ["age_per_10y", "diabetes", "heart_failure", "statin"]
    cox = fit_cox(fed, duration="time", event="event", covariates=cov)
    times = [0, 250, 500, 750, 1000, 1250]
    pooled = pd.concat(frames.values())

    def at_risk(frame: pd.DataFrame) -> list[int | None]:
        return [_suppress(int((frame["time"] >= t).sum())) for t in times]

    res = SurvivalResults(
        target="Adults after heart-failure hospitalisation (synthetic)", outcome="death from any cause",
        attrition=[{"step": "Cohort entry", "persons": len(pooled), "outcomes": int(pooled["event"].sum())}],
        km_by_group=by_group.by_group, km_by_site=by_group.per_site, at_risk_times=times,
        at_risk_by_group={g: at_risk(pooled[pooled["stage"] == g]) for g in by_group.by_group},
        at_risk_by_site={s: at_risk(f) for s, f in frames.items()}, logrank=by_group.logrank, cox=cox,
        notes=["SYNTHETIC DATA: simulated persons; the hazards were generated from the readmission model."])
    meta = ReportMetadata(study="Example survival study (synthetic)", sites=list(SITES), synthetic=True,
                          algorithms={"nordfed.km.counts": "1", "nordfed.cox.*": "1"})
    return res, meta


def build_examples(seed: int = 7) -> dict[str, StudyReport]:
    plp, pmeta = synthetic_plp(seed)
    surv, smeta = synthetic_survival(seed)
    return {"plp_example.html": plp_report(plp, "30-day readmission after heart failure", "Patient-level "
                                           "prediction across three sites — SYNTHETIC EXAMPLE", pmeta, MIN_CELL),
            "survival_example.html": survival_report(surv, "Survival after heart-failure hospitalisation",
                                                     "Kaplan-Meier and Cox — SYNTHETIC EXAMPLE", smeta, MIN_CELL)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else ".")
    out.mkdir(parents=True, exist_ok=True)
    for name, rep in build_examples().items():
        print(rep.write(out / name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
