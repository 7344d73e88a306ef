"""`nordfed simulate` on hand-made CSV files: what pandas would misread is an error naming the file, the line a
user sees in an editor and the column (exit code 2, no traceback); a column in two roles is an error too."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from test_survival_support import rossi

runner = CliRunner()
COX = ["cox", "--site-column", "site", "--duration", "week", "--event", "arrest"]


@pytest.fixture
def frame() -> pd.DataFrame:
    return rossi().assign(site=lambda d: np.array(["DK", "NO", "SE"])[np.arange(len(d)) % 3])


def _run(*args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["simulate", *args])
    return res.exit_code, res.stdout, " ".join(res.stderr.split())


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_trailing_comma_on_each_row_is_an_error_not_shifted_columns(frame: pd.DataFrame, tmp_path: Path) -> None:
    # one field more than the header on every row: pandas takes the first column as the index and shifts every
    # other column one to the left (site <- week, week <- arrest, ...), and the fit ran on the wrong columns
    rows = frame[["site", "week", "arrest", "age", "prio"]].to_csv(index=False).splitlines()
    csv = _csv(tmp_path, "\n".join([rows[0], *(f"{r}," for r in rows[1:])]) + "\n")
    code, out, err = _run("glm", "--csv", str(csv), "--site-column", "site", "--outcome", "age",
                          "--covariates", "arrest", "--family", "gaussian", "--json")
    assert code == 2 and out == ""
    assert f"{csv}: line 2 has 6 fields but the header has 5 (a trailing comma?)" in err
    # a single short row is named too
    csv = _csv(tmp_path, "\n".join([*rows[:5], "DK,20,1", *rows[5:]]) + "\n")
    code, _, err = _run(*COX, "--csv", str(csv), "--covariates", "age")
    assert code == 2 and f"{csv}: line 6 has 3 fields but the header has 5" in err


def test_a_column_named_twice_in_the_header_is_an_error(frame: pd.DataFrame, tmp_path: Path) -> None:
    # pandas reads the first 'age' and renames the second 'age.1': which one the fit used was a guess
    df = frame[["site", "week", "arrest", "age", "prio"]]
    text = df.rename(columns={"prio": "age"}).to_csv(index=False)
    csv = _csv(tmp_path, text)
    code, out, err = _run(*COX, "--csv", str(csv), "--covariates", "age", "--json")
    assert code == 2 and out == ""
    assert f"{csv}: column 'age' appears 2 times in the header (columns 4, 5)" in err
    code, _, err = _run(*KM, "--csv", str(csv))  # a repeated column the command does not use is no matter
    assert code == 0, err


def test_lines_are_the_files_own_lines(frame: pd.DataFrame, tmp_path: Path) -> None:
    df = frame[["site", "week", "arrest", "age"]].astype({"age": object}).assign(note="")
    df.loc[2, "note"] = "two\nlines"  # a quoted field spanning two lines (data row 3, lines 4-5)
    df.loc[9, "age"] = "old"
    lines = df.to_csv(index=False).split("\n")
    lines.insert(6, "")  # a blank line, which pandas skips
    csv = _csv(tmp_path, "\n".join(lines))
    bad = next(i for i, line in enumerate(lines, 1) if ",old," in line)
    assert bad == 13  # header, rows 1-2, the two-line row, rows 4-5, the blank line, rows 6-9, then row 10
    code, _, err = _run(*COX, "--csv", str(csv), "--covariates", "age")
    assert code == 2 and f"{csv}: line 13, column 'age': 'old' is not a number" in err


KM = ["km", "--site-column", "site", "--duration", "week", "--event", "arrest"]
GLM = ["glm", "--site-column", "site", "--covariates", "age"]


@pytest.mark.parametrize(("column", "value", "args", "says"), [
    # "inf" reads as a number; the fit then failed to converge with numpy warnings
    ("age", "inf", [*COX, "--covariates", "age"], "inf is not a finite number"),
    ("arrest", "2", [*COX, "--covariates", "age"], "2 is not 0 or 1"),
    ("week", "-3", [*COX, "--covariates", "age"], "-3 is negative"),
    ("arrest", "2", KM, "2 is not 0 or 1"),
    ("prio", "-1", [*GLM, "--outcome", "prio", "--family", "poisson"], "-1 is negative"),
    ("arrest", "1.5", [*GLM, "--outcome", "arrest"], "1.5 is not between 0 and 1"),
])
def test_bad_values_name_their_line(frame: pd.DataFrame, tmp_path: Path, column: str, value: str,
                                    args: list[str], says: str) -> None:
    # the sites' own checks name the site, not the row: the CSV reader checks first
    df = frame.astype({column: object})
    df.loc[20, column] = value
    csv = tmp_path / "data.csv"
    df.to_csv(csv, index=False)
    code, _, err = _run(*args, "--csv", str(csv))
    assert code == 2 and f"{csv}: line 22, column '{column}': {says}" in err, err


@pytest.mark.parametrize(("args", "says"), [
    ([*COX, "--covariates", "age,age"], "column 'age' is named twice in --covariates"),
    ([*COX, "--covariates", "week,age"], "column 'week' is named in both --duration and --covariates"),
    (["glm", "--site-column", "site", "--outcome", "prio", "--covariates", "age,prio", "--family", "poisson"],
     "column 'prio' is named in both --outcome and --covariates"),
    (["glm", "--site-column", "site", "--outcome", "prio", "--covariates", "age", "--offset", "age"],
     "column 'age' is named in both --covariates and --offset"),
    (["logistic", "--site-column", "site", "--outcome", "arrest", "--covariates", "age,age", "--l1", "0.01"],
     "column 'age' is named twice in --covariates"),
    (["logistic", "--site-column", "site", "--outcome", "arrest", "--covariates", "age", "--l1", "0.01",
      "--seed", "-1"], "--seed must be non-negative"),
])
def test_a_column_in_two_roles_is_a_usage_error(frame: pd.DataFrame, tmp_path: Path, args: list[str],
                                                says: str) -> None:
    csv = tmp_path / "data.csv"
    frame.to_csv(csv, index=False)
    code, out, err = _run(*args, "--csv", str(csv))
    assert code == 2 and out == "" and says in err, err


def test_one_site_runs_and_says_nothing_is_federated(frame: pd.DataFrame, tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    frame.assign(site="DK").to_csv(csv, index=False)
    code, out, err = _run(*COX, "--csv", str(csv), "--covariates", "age", "--json")
    assert code == 0 and json.loads(out)["n"] == len(frame)
    assert f"note: {csv}: column 'site' names one site (DK): nothing is federated" in err


def test_a_wrong_site_column_is_suggested_not_listed_in_full(frame: pd.DataFrame, tmp_path: Path) -> None:
    csv = tmp_path / "data.csv"
    frame.to_csv(csv, index=False)
    code, _, err = _run("cox", "--site-column", "age", "--duration", "week", "--event", "arrest",
                        "--covariates", "prio", "--csv", str(csv))
    sites = frame["age"].nunique()
    assert code == 2 and f"more of {sites} sites (is 'age' the site column?)" in err
    assert err.count("rows)") == 5  # five examples, not one per value
