"""The pipeline against a CDM: note_nlp is filled idempotently, implants per person, federated counts, CLI."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from nordfed.cli import app
from nordfed.fed.protocol import InProcessFederation
from nordfed.omop.store import open_cdm
from nordfed.privacy.disclosure import DisclosurePolicy
from nordfed.synth.notes import make_notes
from nordfed.text.classifier import ContextClassifier, mention_frame
from nordfed.text.pipeline import NLP_SYSTEM
from nordfed.text.store import _implant_type_id, annotate_cdm, current_implants, implant_counts

PACEMAKER = 2000100001


def _load(url: str, site: str = "FI", n: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    p = pd.DataFrame({"person_id": np.arange(1, n + 1), "gender_concept_id": 8507, "year_of_birth": 1950,
                      "observation_period_start_date": dt.date(2015, 1, 1),
                      "observation_period_end_date": dt.date(2023, 1, 1)})
    notes, gold = make_notes(site, p, np.random.default_rng(17))
    with open_cdm(url, create=True) as cdm:
        cdm.create_schema(indices=False)
        cdm.insert("person", p[["person_id", "gender_concept_id", "year_of_birth"]].assign(
            race_concept_id=0, ethnicity_concept_id=0))
        cdm.insert("note", notes)
    return notes, gold


def _hand_note(cdm, note_id: int, person_id: int, day: dt.date, text: str) -> None:
    cdm.insert("note", pd.DataFrame([{
        "note_id": note_id, "person_id": person_id, "note_date": day, "note_type_concept_id": 32817,
        "note_class_concept_id": 0, "note_text": text, "encoding_concept_id": 0, "language_concept_id": 0}]))


def test_annotate_is_idempotent_and_keeps_other_systems(cdm_url: str) -> None:
    notes, gold = _load(cdm_url, n=100)
    with open_cdm(cdm_url) as cdm:
        cdm.insert("note_nlp", pd.DataFrame([{"note_nlp_id": 1, "note_id": 1, "lexical_variant": "x",
                                              "nlp_date": dt.date(2020, 1, 1), "nlp_system": "other 1"}]))
        seen = []
        n1 = annotate_cdm(cdm, batch=7, progress=lambda d, t: seen.append((d, t)))
        n2 = annotate_cdm(cdm, batch=50)
        assert n1 == n2 > len(notes)
        assert seen[-1] == (len(notes), len(notes)) and len(seen) == -(-len(notes) // 7)
        assert int(cdm.scalar("SELECT count(*) FROM note_nlp WHERE nlp_system = :s", {"s": NLP_SYSTEM})) == n1
        assert int(cdm.scalar("SELECT count(*) FROM note_nlp")) == n1 + 1
        assert cdm.query("SELECT note_nlp_id FROM note_nlp")["note_nlp_id"].is_unique
        # every gold implant mention is in note_nlp at its offset
        got = cdm.query("SELECT note_id, \"offset\", note_nlp_concept_id FROM note_nlp WHERE nlp_system = :s",
                        {"s": NLP_SYSTEM})
        listed = {(pid, i.implant_type_concept_id) for pid in notes["person_id"].unique()
                  for i in current_implants(cdm, int(pid))}
    keys = {(int(a), str(b), int(c)) for a, b, c in got.itertuples(index=False)}
    g = gold[gold["kind"] == "implant"]
    found = sum((int(r.note_id), str(r.offset), int(r.note_nlp_concept_id)) in keys for r in g.itertuples())
    assert found >= 0.9 * len(g)
    # "implants now" per person against the generator's truth (present-context gold mentions of the patient)
    g = g.merge(notes[["note_id", "person_id"]], on="note_id")
    truth = {(p, c) for p, c in zip(g.loc[g["context"] == "present", "person_id"],
                                    g.loc[g["context"] == "present", "note_nlp_concept_id"], strict=True)}
    assert len(truth) > 20
    assert len(listed & truth) >= 0.9 * len(listed) and len(listed & truth) >= 0.85 * len(truth)


def test_current_implants_excludes_negated_family_and_explanted(duckdb_url: str) -> None:
    _load(duckdb_url, n=2)
    with open_cdm(duckdb_url) as cdm:
        _hand_note(cdm, 900, 1, dt.date(2019, 3, 1),
                   "Har Medtronic Azure XT DR MRI SureScan pacemaker. Ingen ICD. Mor har insulinpumpe. "
                   "Har hofteprotese.")
        _hand_note(cdm, 901, 1, dt.date(2021, 5, 1), "Hofteprotesen ble fjernet i april. Mulig koronarstent?")
        cdm.execute("DELETE FROM note WHERE person_id = 1 AND note_id < 900")
        annotate_cdm(cdm)
        implants = current_implants(cdm, 1)
    assert [(i.implant_type, i.model, i.mr_class, i.first_date) for i in implants] == [
        ("pacemaker", "Azure XT DR MRI SureScan", "conditional", dt.date(2019, 3, 1))]
    assert "Azure" in implants[0].snippet and implants[0].note_id == 900


def test_federated_count_is_suppressed_below_min_cell(tmp_path) -> None:
    urls = {s: f"duckdb:///{tmp_path / s}.duckdb" for s in ("NO", "SE")}
    for site, url in urls.items():
        _load(url, site=site, n=12)
        with open_cdm(url) as cdm:
            cdm.execute("DELETE FROM note")
            for k in range(12 if site == "NO" else 3):
                _hand_note(cdm, 5000 + k, k + 1, dt.date(2020, 1, 1), "Har pacemaker. Ingen ICD.")
            annotate_cdm(cdm)
    cdms = {s: open_cdm(u) for s, u in urls.items()}
    try:
        df = implant_counts(InProcessFederation.from_cdms(cdms, DisclosurePolicy(min_cell_count=10)), "pacemaker")
        icd = implant_counts(InProcessFederation.from_cdms(cdms), 2000100002)
    finally:
        for c in cdms.values():
            c.close()
    rows = {r["site"]: r for r in df.to_dict("records")}
    assert rows["NO"]["persons"] == 12 and not rows["NO"]["suppressed"]
    assert rows["SE"]["persons"] is None and rows["SE"]["suppressed"]
    assert icd["persons"].tolist() == [0, 0]  # negated mentions are not counted
    with pytest.raises(ValueError, match="unknown implant type 'teleporter'"):
        _implant_type_id("teleporter")


def test_cli_annotate_implants_and_errors(duckdb_url: str, tmp_path) -> None:
    notes, gold = _load(duckdb_url, site="NO", n=30)
    with open_cdm(duckdb_url) as cdm:
        _hand_note(cdm, 900, 3, dt.date(2020, 2, 2), "Har ICD (Biotronik Ilivia 7 VR-T) siden 2015.")
    runner = CliRunner()
    res = runner.invoke(app, ["text", "annotate", "--cdm", duckdb_url])
    assert res.exit_code == 0, res.output
    assert "note_nlp rows" in res.output
    res = runner.invoke(app, ["text", "implants", "--person", "3", "--cdm", duckdb_url, "--json"])
    assert res.exit_code == 0, res.output
    found = {i["implant_type"]: i for i in json.loads(res.output)}
    assert found["icd"]["model"] == "Ilivia 7 VR-T" and found["icd"]["mr_class"] == "conditional"
    res = runner.invoke(app, ["text", "implants", "--person", "3", "--cdm", duckdb_url])
    assert res.exit_code == 0 and "icd" in res.output
    model = ContextClassifier.fit(mention_frame(notes, gold), n_features=2**10)
    model.save(tmp_path / "ctx.npz")
    res = runner.invoke(app, ["text", "annotate", "--cdm", duckdb_url, "--model", str(tmp_path / "ctx.npz")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["text", "annotate", "--cdm", duckdb_url, "--model", str(tmp_path / "missing.npz")])
    assert res.exit_code == 2 and "cannot read model" in res.output
    res = runner.invoke(app, ["text", "evaluate", "--persons", "15", "--seed", "5", "--json"])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.output)["by_site"]) == {"DK", "EE", "FI", "NO", "SE"}
    res = runner.invoke(app, ["text", "annotate", "--cdm", "mysql://nowhere/db"])
    assert res.exit_code != 0
    res = runner.invoke(app, ["text", "count", "pacemaker", "--cdm", "nosite"])
    assert res.exit_code == 2
    for cmd in (["text", "--help"], ["text", "annotate", "--help"], ["text", "implants", "--help"],
                ["text", "count", "--help"], ["text", "evaluate", "--help"], ["text", "train", "--help"]):
        assert runner.invoke(app, cmd).exit_code == 0
