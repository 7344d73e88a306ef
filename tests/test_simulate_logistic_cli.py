"""`nordfed simulate logistic`: JSON equals scikit-learn's pooled L1 fit; bad input exits 2 with a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from nordfed.cli import app
from test_lasso_support import breast_cancer

runner = CliRunner()
COLS = ["x0", "x1", "x7", "x20", "x21", "x27"]


@pytest.fixture
def bc_csv(tmp_path: Path) -> Path:
    df, _ = breast_cancer()
    df = df[[*COLS, "y"]].assign(site=np.array(["DK", "NO", "SE", "FI"])[np.arange(len(df)) % 4])
    path = tmp_path / "bc.csv"
    df.to_csv(path, index=False)
    return path


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["simulate", "logistic", *args])
    return res.exit_code, res.stdout, res.stderr


def test_l1_json_equals_sklearn(bc_csv: Path) -> None:
    lam = 0.01
    code, out, err = _run("--csv", str(bc_csv), "--site-column", "site", "--outcome", "y",
                          "--covariates", ",".join(COLS), "--l1", str(lam), "--no-standardize", "--json")
    assert code == 0, err
    got = json.loads(out)
    df = pd.read_csv(bc_csv)
    # CSV round trip changes the last digit of some values: compare with sklearn on the same CSV rows
    ref = LogisticRegression(C=1 / (len(df) * lam), l1_ratio=1.0, solver="saga", tol=1e-12,
                             max_iter=100_000).fit(df[COLS].to_numpy(), df.y)
    assert got["lambda"] == lam and got["iterations"] >= 1
    assert got["coefficients"]["intercept"] == pytest.approx(ref.intercept_[0], abs=1e-4)
    for c, b in zip(COLS, ref.coef_[0], strict=True):
        assert got["coefficients"][c] == pytest.approx(b, abs=1e-4)
    assert got["sites"] == ["DK", "FI", "NO", "SE"] and got["n"] == len(df)


def test_cv_picks_lambda(bc_csv: Path) -> None:
    code, out, err = _run("--csv", str(bc_csv), "--site-column", "site", "--outcome", "y",
                          "--covariates", ",".join(COLS), "--cv", "3", "--select", "1se", "--n-lambda", "20",
                          "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["lambda"] == pytest.approx(got["cv"]["lambda_1se"])
    assert got["cv"]["lambda_1se"] >= got["cv"]["lambda_min"] > 0


@pytest.mark.parametrize(("extra", "message"), [
    (["--covariates", "x0,nope", "--l1", "0.01"], "missing column(s) nope"),
    (["--covariates", "x0,x1"], "give --l1 LAMBDA or --cv K"),
    (["--covariates", "x0,x1", "--l1", "0.01", "--alpha", "2"], "--alpha must be between 0 and 1"),
    (["--covariates", "x0,x1", "--l1", "-1"], "--l1 must be non-negative"),
    (["--covariates", "x0,y", "--l1", "0.01"], "cannot also be a covariate"),
])
def test_bad_options_exit_2(bc_csv: Path, extra: list[str], message: str) -> None:
    code, _, err = _run("--csv", str(bc_csv), "--site-column", "site", "--outcome", "y", *extra)
    assert code == 2
    assert message in err


def test_bad_values_name_file_line_and_column(bc_csv: Path, tmp_path: Path) -> None:
    df = pd.read_csv(bc_csv)
    df["x1"] = df["x1"].astype(object)
    df.loc[3, "x1"] = "abc"
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    code, _, err = _run("--csv", str(bad), "--site-column", "site", "--outcome", "y", "--covariates", "x0,x1",
                        "--l1", "0.01")
    assert code == 2 and f"{bad}: line 5, column 'x1'" in err
    df = pd.read_csv(bc_csv)
    df.loc[7, "y"] = 3
    df.to_csv(bad, index=False)
    code, out, err = _run("--csv", str(bad), "--site-column", "site", "--outcome", "y", "--covariates", "x0,x1",
                          "--l1", "0.01")
    assert code == 2 and f"{bad}: line 9, column 'y': 3 is not 0 or 1" in err and out == ""


def test_table_output_matches_json(bc_csv: Path) -> None:
    args = ["--csv", str(bc_csv), "--site-column", "site", "--outcome", "y", "--covariates", ",".join(COLS),
            "--l1", "0.01"]
    code, out, err = _run(*args, "--json")
    assert code == 0, err
    coefs = json.loads(out)["coefficients"]
    code, out, err = _run(*args)
    assert code == 0, err
    assert "{" not in out and "odds ratio" in out  # a table, not JSON
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in [[c] for c in coefs]}
    for term, b in coefs.items():
        assert rows[term] == ([f"{b:.4f}", f"{np.exp(b):.4f}"] if b else ["0", "1.0000"])
    assert "n 569   events 357" in out


def test_dropped_rows_are_reported(bc_csv: Path, tmp_path: Path) -> None:
    df = pd.read_csv(bc_csv)
    df.loc[[1, 2], "x1"] = np.nan
    df.loc[[2, 9], "y"] = np.nan
    blanks = tmp_path / "blanks.csv"
    df.to_csv(blanks, index=False)
    args = ["--site-column", "site", "--outcome", "y", "--covariates", "x0,x1", "--l1", "0.01", "--json"]
    code, out, err = _run("--csv", str(blanks), *args)
    assert code == 0, err
    assert f"note: {blanks}: dropped 3 rows with a missing value in x1, y (complete cases)" in " ".join(err.split())
    assert json.loads(out)["n"] == len(df) - 3
    code, _, err = _run("--csv", str(bc_csv), *args)
    assert code == 0 and "dropped" not in err
