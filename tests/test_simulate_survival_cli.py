"""`nordfed simulate km|cox|glm` on CSV files: JSON output equals the reference libraries; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter, KaplanMeierFitter
from typer.testing import CliRunner

from nordfed.cli import app
from test_survival_support import rossi

runner = CliRunner()


@pytest.fixture
def rossi_csv(tmp_path: Path) -> Path:
    df = rossi().assign(site=lambda d: np.array(["DK", "NO", "SE"])[np.arange(len(d)) % 3])
    path = tmp_path / "rossi.csv"
    df.to_csv(path, index=False)
    return path


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["simulate", *args])
    return res.exit_code, res.stdout, res.stderr


def test_km_json_equals_lifelines(rossi_csv: Path) -> None:
    code, out, _ = _run("km", "--csv", str(rossi_csv), "--site-column", "site", "--duration", "week",
                        "--event", "arrest", "--group", "fin", "--json")
    assert code == 0
    got = json.loads(out)
    df = pd.read_csv(rossi_csv)
    ref = KaplanMeierFitter().fit(df.week, df.arrest)
    times = np.unique(df.week[df.arrest == 1])
    assert got["times"] == times.tolist()
    np.testing.assert_allclose(got["survival"], ref.survival_function_.loc[times].iloc[:, 0], atol=1e-9, rtol=0)
    np.testing.assert_allclose(got["ci_lower"], ref.confidence_interval_.loc[times].iloc[:, 0], atol=1e-9, rtol=0)
    np.testing.assert_allclose(got["ci_upper"], ref.confidence_interval_.loc[times].iloc[:, 1], atol=1e-9, rtol=0)
    assert got["logrank"]["df"] == 1


def test_km_strict_policy_is_refused(rossi_csv: Path) -> None:
    code, _, err = _run("km", "--csv", str(rossi_csv), "--site-column", "site", "--duration", "week",
                        "--event", "arrest", "--no-exact-event-times", "--json")
    assert code == 2
    assert "site DK: refused" in err and "minimum cell count (10)" in err


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_cox_json(rossi_csv: Path, ties: str) -> None:
    covs = ["fin", "age", "prio"]
    code, out, _ = _run("cox", "--csv", str(rossi_csv), "--site-column", "site", "--duration", "week",
                        "--event", "arrest", "--covariates", ",".join(covs), "--ties", ties, "--json")
    assert code == 0
    got = json.loads(out)
    df = pd.read_csv(rossi_csv)
    if ties == "efron":
        ref = CoxPHFitter().fit(df[["week", "arrest", *covs]], "week", "arrest", fit_options={"precision": 1e-12})
        params, se, llf = ref.params_, ref.standard_errors_, ref.log_likelihood_
    else:
        from statsmodels.duration.hazard_regression import PHReg

        fit = PHReg(df.week, df[covs], status=df.arrest, ties="breslow").fit()
        params, se, llf = pd.Series(fit.params, covs), pd.Series(fit.bse, covs), fit.llf
    for c in covs:
        assert got["coefficients"][c] == pytest.approx(params[c], abs=1e-6)
        assert got["standard_errors"][c] == pytest.approx(se[c], abs=1e-6)
    assert got["log_likelihood"] == pytest.approx(llf, abs=1e-6)
    assert got["iterations"] >= 1


def test_cox_says_concordance_is_within_site(rossi_csv: Path) -> None:
    args = ["cox", "--csv", str(rossi_csv), "--site-column", "site", "--duration", "week", "--event", "arrest",
            "--covariates", "age,prio"]
    code, out, err = _run(*args, "--json")
    assert code == 0
    got = json.loads(out)  # the note goes to stderr, so stdout stays plain JSON
    assert got["concordance_scope"] == "within-site pairs" and got["concordance_pairs"] == 14166
    assert "only pairs of rows from the same site" in " ".join(err.split())
    code, _, err = _run(*args, "--strata-by-site")
    assert code == 0 and err == ""


def test_cox_strata_by_site_under_strict_policy(rossi_csv: Path) -> None:
    code, out, _ = _run("cox", "--csv", str(rossi_csv), "--site-column", "site", "--duration", "week",
                        "--event", "arrest", "--covariates", "fin,age", "--strata-by-site",
                        "--no-exact-event-times", "--json")
    assert code == 0
    df = pd.read_csv(rossi_csv)
    ref = CoxPHFitter().fit(df[["week", "arrest", "fin", "age", "site"]], "week", "arrest", strata=["site"],
                            fit_options={"precision": 1e-12})
    assert json.loads(out)["coefficients"]["age"] == pytest.approx(ref.params_["age"], abs=1e-6)


def test_glm_json_equals_statsmodels(rossi_csv: Path) -> None:
    code, out, _ = _run("glm", "--csv", str(rossi_csv), "--site-column", "site", "--outcome", "prio",
                        "--covariates", "fin,age,mar", "--family", "poisson", "--json")
    assert code == 0
    got = json.loads(out)
    df = pd.read_csv(rossi_csv)
    ref = sm.GLM(df.prio, sm.add_constant(df[["fin", "age", "mar"]]), family=sm.families.Poisson()).fit(tol=1e-12)
    assert got["coefficients"]["intercept"] == pytest.approx(ref.params["const"], abs=1e-6)
    assert got["standard_errors"]["age"] == pytest.approx(ref.bse["age"], abs=1e-6)
    assert got["deviance"] == pytest.approx(ref.deviance, abs=1e-6)
    assert got["iterations"] >= 1


def test_bad_input_names_file_line_and_column(rossi_csv: Path, tmp_path: Path) -> None:
    code, _, err = _run("cox", "--csv", str(rossi_csv), "--site-column", "site", "--duration", "week",
                        "--event", "arrest", "--covariates", "fin,agex")
    assert code == 2 and f"{rossi_csv}: missing column(s) agex" in err

    df = pd.read_csv(rossi_csv).astype({"age": object})
    df.loc[6, "age"] = "old"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    code, _, err = _run("glm", "--csv", str(bad), "--site-column", "site", "--outcome", "arrest",
                        "--covariates", "age")
    assert code == 2 and f"{bad}: line 8, column 'age': 'old' is not a number" in err

    code, _, err = _run("km", "--csv", str(rossi_csv), "--site-column", "site", "--duration", "week",
                        "--event", "arrest", "--min-cell-count", "150")
    assert code == 2 and "too few rows per site (at least 150 needed): DK (144 rows)" in err

    code, _, err = _run("glm", "--csv", str(rossi_csv), "--site-column", "site", "--outcome", "arrest",
                        "--covariates", "age", "--family", "gamma")
    assert code == 2 and "--family must be one of binomial, gaussian, poisson" in err

    code, _, err = _run("km", "--csv", str(tmp_path / "nope.csv"), "--site-column", "site", "--duration", "week",
                        "--event", "arrest")
    assert code == 2 and "nope.csv: no such file" in err


def test_help_on_every_command() -> None:
    for cmd in ("km", "cox", "glm"):
        res = runner.invoke(app, ["simulate", cmd, "--help"])
        assert res.exit_code == 0 and "--site-column" in res.stdout
