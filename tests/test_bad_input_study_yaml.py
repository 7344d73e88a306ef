"""Hand-written study YAML: a setting nordfed would ignore or misread is an error naming the file, the field and
the YAML line; `nordfed study run` says so in one line with exit code 2, writes nothing, shows no traceback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.studies.spec import SpecError, load_spec

STUDIES = Path(__file__).resolve().parents[1] / "studies"


def _doc(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((STUDIES / name).read_text(encoding="utf-8"))
    doc["target"] = str(STUDIES / doc["target"])
    return doc


def _problem(tmp_path: Path, doc: dict[str, Any]) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert str(err.value).startswith(f"{path}: ")
    return str(err.value)


def _plp(**changes: Any) -> dict[str, Any]:
    return {**_doc("crc_1y_mortality.yaml"), **changes}


def _survival(section: str, **changes: Any) -> dict[str, Any]:
    doc = _doc("crc_survival_by_stage.yaml")
    doc[section] = {**doc[section], **changes}
    return doc


STAGE = {"domain": "measurement", "window": [-90, 0], "levels": {"I-II": [1, 2], "III": [3]}}


@pytest.mark.parametrize(("doc", "says"), [
    # the sites test settings for truth only: a quoted "false" switched the analysis on
    (_plp(covariates={"condition_long_term": "false"}), "covariates: condition_long_term must be true or false, "
                                                        "got 'false'"),
    (_plp(covariates={"condition_long_term": None}), "condition_long_term must be true or false, got nothing"),
    (_plp(covariates={"long_term_start_days": "-180"}), "long_term_start_days must be a whole number of days"),
    (_plp(covariates={"short_term_start_days": 30}), "short_term_start_days (30) is after end_days (0)"),
    # nobody is at risk 400 days of a 366-day window: everyone without the outcome would leave the population
    (_plp(population={**_plp()["population"], "minTimeAtRisk": 400}), "minTimeAtRisk (400) is longer than the "
                                                                      "risk window"),
    # numpy takes no negative seed: the run failed after the cohorts were built
    (_plp(model={**_plp()["model"], "seed": -1}), "model.seed: Input should be greater than or equal to 0"),
    (_plp(synthetic={**_plp()["synthetic"], "seed": -1}), "synthetic.seed"),
    # a concept in two levels was read as the last level only
    (_survival("covariates", categorical={"stage": {**STAGE, "levels": {"I-II": [1, 2], "III": [2, 3]}}}),
     "concept 2 is in level 'I-II' and in level 'III'"),
    (_survival("covariates", categorical={"stage": {**STAGE, "levels": {"I-II": [1, 2], "III": []}}}),
     "level 'III' lists no concept id"),
    # a window from 0 back to -90 matched no measurement: every value silently missing
    (_survival("covariates", categorical={"stage": {**STAGE, "window": [0, -90]}}),
     "covariates.categorical.stage.window: window 0, -90 starts after it ends"),
    (_survival("covariates", values={"asa_class": {"concept_id": 5, "window": [0, -30]}}),
     "covariates.values.asa_class.window: window 0, -30 starts after it ends"),
    # a covariate named like another column overwrote it at the sites
    (_survival("covariates", values={"age": {"concept_id": 5}}), "values.age makes a column 'age', as does "
                                                                 "age: true"),
    (_survival("covariates", categorical={"stage": STAGE}, values={"stage_III": {"concept_id": 5}}),
     "values.stage_III makes a column 'stage_III', as does categorical.stage level 'III'"),
    (_survival("analysis", cox=["age", "age", "male"]), "analysis.cox: names age twice"),
])
def test_settings_nordfed_would_misread_are_errors(tmp_path: Path, doc: dict[str, Any], says: str) -> None:
    problem = _problem(tmp_path, doc)
    assert says in problem, problem


def test_a_bare_no_as_a_site_name_gets_the_yaml_hint(tmp_path: Path) -> None:
    doc = {k: v for k, v in _plp().items() if k != "synthetic"}
    path = tmp_path / "study.yaml"
    text = yaml.safe_dump(doc, sort_keys=False) + "sites:\n  NO: duckdb:///no.duckdb\n"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError, match="YAML turns a bare NO"):
        load_spec(path)


def test_a_key_given_twice_is_an_error_with_its_line(tmp_path: Path) -> None:
    text = yaml.safe_dump(_plp(), sort_keys=False)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("model:"))
    # a second model: block lower down silently replaced the first
    path = tmp_path / "study.yaml"
    path.write_text("\n".join([*lines, "model:", "  cv_folds: 3"]) + "\n", encoding="utf-8")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert f"line {len(lines) + 1}, column 1" in str(err.value) and "'model' appears twice" in str(err.value)
    nested = [*lines[:at + 1], "  cv_folds: 3", *lines[at + 1:]]  # cv_folds twice in the one model: block
    path.write_text("\n".join(nested) + "\n", encoding="utf-8")
    with pytest.raises(SpecError, match="'cv_folds' appears twice"):
        load_spec(path)


def test_problems_name_the_yaml_line(tmp_path: Path) -> None:
    text = yaml.safe_dump(_plp(), sort_keys=False).replace("cv_folds: 5", "cv_folds: 1")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "cv_folds" in t)
    path = tmp_path / "study.yaml"
    path.write_text(text.replace("  seed: 1\n", "  seed: 1\n  sede: 2\n"), encoding="utf-8")
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert f"model.cv_folds: Input should be greater than or equal to 2 (line {line})" in str(err.value)
    assert f"model.sede: unknown field (line {line + 3})" in str(err.value)


def test_unreadable_inputs_exit_2_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "r.html"
    # a target that is a folder raised IsADirectoryError from deep inside the Circe reader
    folder = tmp_path / "study.yaml"
    folder.write_text(yaml.safe_dump(_plp(target=str(STUDIES / "cohorts")), sort_keys=False), encoding="utf-8")
    res = runner.invoke(app, ["study", "run", str(folder), "--out", str(out)])
    said = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2, res.output
    assert "target: " in said and "is a folder, not a cohort JSON file" in said
    assert "Traceback" not in said and not out.exists()
    # a study file that is not UTF-8 raised UnicodeDecodeError past the CLI's SpecError handler
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(yaml.safe_dump(_plp(description="Résection"), allow_unicode=True).encode("latin-1"))
    res = runner.invoke(app, ["study", "run", str(latin1), "--out", str(out)])
    assert res.exit_code == 2 and "not UTF-8 text" in " ".join(res.output.split()), res.output
    assert not out.exists()


def test_the_shipped_studies_stay_valid() -> None:
    for path in sorted(STUDIES.glob("*.yaml")):
        load_spec(path)
