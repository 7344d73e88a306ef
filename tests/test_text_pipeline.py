"""The text pipeline on hand-written sentences and on held-out synthetic notes."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from nordfed.synth.notes import make_notes
from nordfed.text.evaluate import IMPLANT_KINDS, align, confusion, error_report, evaluate, predict
from nordfed.text.langid import identify
from nordfed.text.lexicon import SITE_LANG, LexiconError, _int
from nordfed.text.pipeline import NLP_SYSTEM, annotate, note_nlp_rows
from nordfed.text.sentences import split_sentences

#: never used while writing the generator or the pipeline
HELD_OUT_SEED = 90_210


def _ctx(text: str, lang: str | None = None) -> list[tuple[str, str]]:
    return [(m.text, m.context) for m in annotate(text, lang).mentions if m.kind in IMPLANT_KINDS]


@pytest.mark.parametrize(("text", "lang"), [
    ("Pasienten har ikke pacemaker og ble utskrevet etter avtale med fastlegen.", "nb"),
    ("Patienten har inte någon pacemaker och skrivs ut efter samtal med distriktsläkaren.", "sv"),
    ("Patienten har ikke nogen pacemaker og udskrives efter aftale med egen læge.", "da"),
    ("Potilaalla ei ole tahdistinta ja hän kotiutuu omalääkärin kanssa sovitusti.", "fi"),
    ("Patsiendil ei ole südamestimulaatorit ja ta kirjutatakse välja koju.", "et"),
])
def test_language_identification(text: str, lang: str) -> None:
    assert identify(text) == lang


@pytest.mark.parametrize(("text", "lang", "expected"), [
    ("Ingen pacemaker.", "nb", [("pacemaker", "negated")]),
    ("Inget ICD.", "sv", [("ICD", "negated")]),
    ("Ei tahdistinta.", "fi", [("tahdistinta", "negated")]),
    ("Tahdistinta ei ole.", "fi", [("Tahdistinta", "negated")]),
    ("Patsiendil pole südamestimulaatorit.", "et", [("südamestimulaatorit", "negated")]),
    ("Pacemaker: nei.", "nb", [("Pacemaker", "negated")]),
    ("Ingen komplikasjoner etter innsetting av pacemaker.", "nb", [("pacemaker", "present")]),
    ("Pacemakeren ble fjernet 2019.", "nb", [("Pacemakeren", "historical")]),
    ("Insuliinipumppu poistettiin 2020.", "fi", [("Insuliinipumppu", "historical")]),
    ("Mor har hofteprotese.", "nb", [("hofteprotese", "family")]),
    ("Äidillä on sisäkorvaistute.", "fi", [("sisäkorvaistute", "family")]),
    ("Mulig koronarstent?", "nb", [("koronarstent", "uncertain")]),
    ("Knæprotesen kan ikke udelukkes.", "da", [("Knæprotesen", "uncertain")]),
    ("Har Medtronic Azure XT DR MRI SureScan pacemaker.", "nb", [("Medtronic Azure XT DR MRI SureScan", "present"),
                                                          ("pacemaker", "present")]),
])
def test_context_rules(text: str, lang: str, expected: list[tuple[str, str]]) -> None:
    assert _ctx(text, lang) == expected


def test_inflection_compounds_and_typos() -> None:
    assert _ctx("Tahdistimen tarkastus tehty.", "fi") == [("Tahdistimen", "present")]
    assert _ctx("Pacemakerkontroll i dag: normal funksjon.", "nb") == [("Pacemakerkontroll", "present")]
    assert _ctx("Hofteprotsen er stabil.", "nb") == [("Hofteprotsen", "present")]
    assert _ctx("Kohleaarimplantaadi kontroll.", "et") == [("Kohleaarimplantaadi", "present")]
    assert _ctx("Pasienten er i god form.", "nb") == []


def test_mr_class_from_model_or_type() -> None:
    res = annotate("Cochlear Nucleus CI612 implantert 2017. Har insulinpumpe.", "nb")
    cls = {m.text: m.mr_class for m in res.mentions}
    assert cls == {"Cochlear Nucleus CI612": "conditional", "insulinpumpe": "unsafe"}


def test_adr_pairs_and_negated_reactions() -> None:
    res = annotate("Fikk utslett av amoksicillin. Tolererer metformin godt, ingen kvalme.", "nb")
    assert [(p.drug.text, p.reaction.text) for p in res.adr_pairs] == [("amoksicillin", "utslett")]
    res = annotate("Varfariinin aiheuttama verenvuoto. Metformiini 500 mg x 2.", "fi")
    assert [(p.drug.concept_id, p.reaction.text) for p in res.adr_pairs] == [(1310149, "verenvuoto")]
    assert [m.dose for m in res.mentions if m.kind == "drug"] == [None, "500 mg"]


def test_sentences_respect_abbreviations() -> None:
    text = "Seponert pga. kvalme, bl.a. ved 2.5 mg. Ny linje.\nNeste avsnitt"
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "Seponert pga. kvalme, bl.a. ved 2.5 mg.", "Ny linje.", "Neste avsnitt"]


def test_note_nlp_rows() -> None:
    text = "Ingen pacemaker. Har ICD."
    rows = note_nlp_rows(7, text, annotate(text), dt.date(2024, 1, 2))
    assert [(r["lexical_variant"], r["offset"], r["term_exists"], r["term_temporal"]) for r in rows] == [
        ("pacemaker", "6", "N", "present"), ("ICD", "21", "Y", "present")]
    assert all(r["nlp_system"] == NLP_SYSTEM and r["note_id"] == 7 for r in rows)
    assert "negated=true" in rows[0]["term_modifiers"] and "mr_class=unsafe" in rows[1]["term_modifiers"]


def test_lexicon_errors_name_file_row_and_field() -> None:
    with pytest.raises(LexiconError, match=r"drugs.csv, row 7, field 'concept_id'"):
        _int("drugs.csv", 7, {"concept_id": "abc"}, "concept_id")


def test_held_out_notes_meet_targets() -> None:
    """Per language: implant mention F1 >= 0.9, ADR pair F1 >= 0.85, negated implants never reported present."""
    rng = np.random.default_rng(HELD_OUT_SEED)
    start = dt.date(2016, 1, 1)
    p = pd.DataFrame({"person_id": np.arange(1, 181), "gender_concept_id": 8532, "year_of_birth": 1960,
                      "observation_period_start_date": start, "observation_period_end_date": dt.date(2024, 1, 1)})
    golds, preds, pairs = [], [], []
    for k, site in enumerate(sorted(SITE_LANG)):
        notes, gold = make_notes(site, p, rng)
        notes["note_id"] += k * 1_000_000  # evaluate the sites together
        gold["note_id"] += k * 1_000_000
        pr, pa = predict(notes)
        golds.append(gold)
        preds.append(pr)
        pairs.append(pa)
    gold, pred, pair = pd.concat(golds), pd.concat(preds), pd.concat(pairs)
    report = evaluate(gold, pred, pair)
    assert set(report) == set(SITE_LANG.values())
    for lang, r in report.items():
        assert r["implant_mentions"]["f1"] >= 0.9, (lang, r["implant_mentions"])
        assert r["adr_pairs"]["f1"] >= 0.85, (lang, r["adr_pairs"])
        assert r["negated_total"] > 50
        assert r["negated_reported_present"] <= 0.01 * r["negated_total"], (lang, r)
        assert r["context_per_class"]["negated"]["f1"] >= 0.9
    al = align(gold, pred, IMPLANT_KINDS)
    conf = confusion(al)
    assert conf.loc["negated", "negated"] > 10 * conf.loc["negated"].drop("negated").sum()
    errors = error_report(al, limit=0)
    kinds = {"missed", "spurious"} | {f"context {a}→{b}" for a in conf.index for b in conf.columns}
    assert set(errors["error"]) <= kinds
