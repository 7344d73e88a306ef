"""`nordfed simulate km|cox|glm` on CSV files: JSON output equals the reference libraries; bad input exits 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.utils import median_survival_times
from typer.testing import CliRunner

from nordfed.cli import app
from test_survival_support import lung, rossi

runner = CliRunner()


@pytest.fixture
def rossi_csv(tmp_path: Path) -> Path:
    df = rossi().assign(site=lambda d: np.array(["DK", "NO", "SE"])[np.arange(len(d)) % 3])
    path = tmp_path / "rossi.csv"
    df.to_csv(path, index=False)
    return path


def _with_blanks(csv: Path, tmp_path: Path, blanks: dict[str, list[int]]) -> Path:
    """A copy of ``csv`` with empty cells at the given (0-based) rows of each column."""
    df = pd.read_csv(csv)
    for col, rows in blanks.items():
        df.loc[rows, col] = np.nan
    path = tmp_path / "blanks.csv"
    df.to_csv(path, index=False)
    return path


def _row(out: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == [first]]
    assert len(rows) == 1, out
    return rows[0]


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


def test_km_prints_survival_table_and_median(tmp_path: Path) -> None:
    df = lung().assign(site=lambda d: np.array(["DK", "NO", "SE"])[np.arange(len(d)) % 3])
    csv = tmp_path / "lung.csv"
    df.to_csv(csv, index=False)
    code, out, err = _run("km", "--csv", str(csv), "--site-column", "site", "--duration", "time",
                          "--event", "status")
    assert code == 0, err
    assert "{" not in out  # a table, not JSON
    ref = KaplanMeierFitter().fit(df.time, df.status)
    table = ref.event_table.join(ref.survival_function_).join(ref.confidence_interval_)
    at = table.loc[310.0]
    assert _row(out, "310") == ["310", f"{at.at_risk:.0f}", f"{at.observed:.0f}", f"{at.KM_estimate:.4f}",
                                f"{at['KM_estimate_lower_0.95']:.4f}", f"{at['KM_estimate_upper_0.95']:.4f}"]
    ci = median_survival_times(ref.confidence_interval_)
    assert (f"median survival {ref.median_survival_time_:.0f} (95% CI {ci.iloc[0, 0]:.0f} to "
            f"{ci.iloc[0, 1]:.0f})") in out


def test_km_by_group_prints_medians_and_logrank(rossi_csv: Path) -> None:
    code, out, _ = _run("km", "--csv", str(rossi_csv), "--site-column", "site", "--duration", "week",
                        "--event", "arrest", "--group", "fin")
    assert code == 0
    assert _row(out, "0.0")[:2] == ["0.0", "66"] and "not reached" in " ".join(_row(out, "1.0"))
    assert "log-rank chi2 3.8376   df 1   p 0.0501" in out


def test_cox_prints_hazard_ratio_table(rossi_csv: Path) -> None:
    covs = ["fin", "age", "prio"]
    code, out, _ = _run("cox", "--csv", str(rossi_csv), "--site-column", "site", "--duration", "week",
                        "--event", "arrest", "--covariates", ",".join(covs))
    assert code == 0
    df = pd.read_csv(rossi_csv)
    ref = CoxPHFitter().fit(df[["week", "arrest", *covs]], "week", "arrest").summary.loc["age"]
    assert _row(out, "age") == ["age", f"{ref.coef:.4f}", f"{ref['exp(coef)']:.4f}", f"{ref['se(coef)']:.4f}",
                                f"{ref.z:.2f}", f"{ref.p:.4f}", f"{ref['exp(coef) lower 95%']:.4f}",
                                f"{ref['exp(coef) upper 95%']:.4f}"]
    assert "HR lower 95%" in out and "n 432   events 114   concordance 0." in out
    assert "(within-site pairs)" in out


def test_glm_prints_coefficient_table(rossi_csv: Path) -> None:
    code, out, _ = _run("glm", "--csv", str(rossi_csv), "--site-column", "site", "--outcome", "arrest",
                        "--covariates", "fin,age")
    assert code == 0
    df = pd.read_csv(rossi_csv)
    ref = sm.GLM(df.arrest, sm.add_constant(df[["fin", "age"]]), family=sm.families.Binomial()).fit()
    ci = ref.conf_int()
    assert _row(out, "age") == ["age", f"{ref.params.age:.4f}", f"{np.exp(ref.params.age):.4f}",
                                f"{ref.bse.age:.4f}", f"{ref.tvalues.age:.2f}", f"{ref.pvalues.age:.4f}",
                                f"{ci.loc['age', 0]:.4f}", f"{ci.loc['age', 1]:.4f}"]
    assert "odds ratio" in out and "n 432   df resid 429" in out
    code, out, _ = _run("glm", "--csv", str(rossi_csv), "--site-column", "site", "--outcome", "week",
                        "--covariates", "fin,age", "--family", "gaussian")
    assert code == 0 and "exp(coef)" not in out and len(_row(out, "age")) == 7


@pytest.mark.parametrize(("command", "blanks", "dropped"), [
    (["cox", "--duration", "week", "--event", "arrest", "--covariates", "fin,age,prio"],
     {"age": [3, 10, 20, 30, 40], "prio": [3, 50, 60, 70, 80], "mar": [1, 2]},
     "9 rows with a missing value in age, prio"),
    (["glm", "--outcome", "arrest", "--covariates", "fin,age,prio"],
     {"arrest": [5], "site": [6, 7]}, "3 rows with a missing value in arrest, site"),
    (["km", "--duration", "week", "--event", "arrest", "--group", "fin"],
     {"fin": [0]}, "1 row with a missing value in fin"),
])
def test_dropped_rows_are_reported(rossi_csv: Path, tmp_path: Path, command: list[str],
                                   blanks: dict[str, list[int]], dropped: str) -> None:
    csv = _with_blanks(rossi_csv, tmp_path, blanks)
    args = [command[0], "--csv", str(csv), "--site-column", "site", *command[1:]]
    code, out, err = _run(*args, "--json")
    assert code == 0, err
    assert f"note: {csv}: dropped {dropped} (complete cases)" in " ".join(err.split())
    got = json.loads(out)  # the note stays out of the JSON
    assert (got["at_risk"][0] if command[0] == "km" else got["n"]) == 432 - int(dropped.split()[0])
    code, _, err = _run(*args)
    assert code == 0 and f"dropped {dropped}" in " ".join(err.split())
    code, _, err = _run(*[str(rossi_csv) if a == str(csv) else a for a in args])
    assert code == 0 and "dropped" not in err


def test_help_on_every_command() -> None:
    for cmd in ("km", "cox", "glm"):
        res = runner.invoke(app, ["simulate", cmd, "--help"])
        assert res.exit_code == 0 and "--site-column" in res.stdout
