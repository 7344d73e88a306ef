"""Synthetic notes: ids, dates, languages and gold offsets."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from nordfed.synth.notes import LANGUAGE_CONCEPT, make_notes
from nordfed.text.langid import identify
from nordfed.text.lexicon import SITE_LANG


def persons(n: int = 80) -> pd.DataFrame:
    start = pd.to_datetime("2014-01-01") + pd.to_timedelta(np.arange(n) * 11, unit="D")
    return pd.DataFrame({
        "person_id": np.arange(100, 100 + n), "gender_concept_id": 8507, "year_of_birth": 1950,
        "observation_period_start_date": start.date,
        "observation_period_end_date": (start + pd.Timedelta(days=400)).date,
    })


@pytest.mark.parametrize("site", sorted(SITE_LANG))
def test_notes_are_valid_and_gold_offsets_exact(site: str) -> None:
    p = persons()
    notes, gold = make_notes(site, p, np.random.default_rng(5))
    assert len(notes) > 20
    assert notes["note_id"].is_unique
    merged = notes.merge(p, on="person_id")
    assert (merged["note_date"] >= merged["observation_period_start_date"]).all()
    assert (merged["note_date"] <= merged["observation_period_end_date"]).all()
    assert (notes["language_concept_id"] == LANGUAGE_CONCEPT[SITE_LANG[site]]).all()
    assert all(identify(t) == SITE_LANG[site] for t in notes["note_text"])
    texts = dict(zip(notes["note_id"], notes["note_text"], strict=True))
    mentions = gold[gold["kind"] != "adr"]
    for r in mentions.itertuples():
        assert texts[r.note_id][int(r.offset):int(r.end)] == r.lexical_variant
    assert set(mentions["context"]) == {"present", "negated", "uncertain", "historical", "family"}
    assert set(gold["kind"]) == {"implant", "model", "drug", "reaction", "adr"}
    assert set(gold.loc[gold["context"] == "negated", "term_exists"]) == {"N"}


def test_seeds_differ_and_repeat() -> None:
    a, _ = make_notes("NO", persons(20), np.random.default_rng(1))
    b, _ = make_notes("NO", persons(20), np.random.default_rng(1))
    c, _ = make_notes("NO", persons(20), np.random.default_rng(2))
    assert a["note_text"].tolist() == b["note_text"].tolist()
    assert a["note_text"].tolist() != c["note_text"].tolist()


def test_unknown_site_and_empty_persons() -> None:
    with pytest.raises(ValueError, match="no note language for site 'XX'"):
        make_notes("XX", persons(3), np.random.default_rng(0))
    notes, gold = make_notes("SE", persons(0), np.random.default_rng(0))
    assert notes.empty and gold.empty and list(gold.columns) == list(GOLD_DTYPES)
    p = persons(40)
    p.loc[3, "observation_period_end_date"] = None
    with pytest.raises(ValueError, match="persons row 3: observation_period_end_date is missing"):
        make_notes("SE", p, np.random.default_rng(0))


def test_dates_inside_one_day_periods() -> None:
    p = persons(30)
    p["observation_period_end_date"] = p["observation_period_start_date"]
    notes, _ = make_notes("DK", p, np.random.default_rng(3))
    merged = notes.merge(p, on="person_id")
    assert (merged["note_date"] == merged["observation_period_start_date"]).all()
    assert all(isinstance(d, dt.date) for d in notes["note_date"])


NOTE_DTYPES = {"note_id": "int64", "person_id": "int64", "note_date": "object", "note_datetime": "datetime64[ns]",
               "note_type_concept_id": "int64", "note_class_concept_id": "int64", "note_title": "object",
               "note_text": "object", "encoding_concept_id": "int64", "language_concept_id": "int64",
               "note_source_value": "object"}
GOLD_DTYPES = {"note_id": "int64", "kind": "object", "lexical_variant": "object", "offset": "object",
               "end": "float64", "snippet": "object", "note_nlp_concept_id": "int64", "term_exists": "object",
               "term_temporal": "object", "term_modifiers": "object", "context": "object", "hard": "bool",
               "lang": "object", "site": "object", "drug_concept_id": "float64", "reaction_concept_id": "float64"}


def test_schema_and_gold_rows_are_stable() -> None:
    notes, gold = make_notes("FI", persons(60), np.random.default_rng(8))
    assert {c: str(t) for c, t in notes.dtypes.items()} == NOTE_DTYPES
    assert {c: str(t) for c, t in gold.dtypes.items()} == GOLD_DTYPES
    assert (notes["note_title"] == notes["note_text"].str.split("\n").str[0]).all()
    assert (notes["note_datetime"].dt.date == notes["note_date"]).all()
    assert notes["note_datetime"].dt.hour.between(7, 19).all()
    adr = gold[gold["kind"] == "adr"]
    assert adr["offset"].isna().all() and adr["end"].isna().all() and (adr["drug_concept_id"] > 0).all()
    ment = gold[gold["kind"] != "adr"]
    assert ment["drug_concept_id"].isna().all()
    assert (ment["offset"].astype(int) + ment["lexical_variant"].str.len() == ment["end"]).all()
    assert (ment["term_modifiers"] == "kind=" + ment["kind"] + ";context=" + ment["context"]).all()
    assert set(ment[["context", "term_temporal"]].itertuples(index=False, name=None)) <= {
        ("present", "present"), ("negated", "present"), ("uncertain", "present"), ("family", "present"),
        ("historical", "past")}


def test_each_person_tells_one_implant_story() -> None:
    """All notes of a person agree: affirmed implants are the (at most two) the person has, and negations
    never name one of them."""
    p = persons(300)
    notes, gold = make_notes("NO", p, np.random.default_rng(4))
    g = gold[gold["kind"] == "implant"].merge(notes[["note_id", "person_id"]], on="note_id")
    present, negated = (g[g["context"] == c].groupby("person_id")["note_nlp_concept_id"].agg(set)
                        for c in ("present", "negated"))
    assert present.map(len).max() == 2  # someone has two, nobody more
    both = present.index.intersection(negated.index)
    assert len(both) > 30 and all(not (present[i] & negated[i]) for i in both)
    assert (notes.groupby("person_id").size() > 1).sum() > 20  # the check spans several notes per person


def test_draws_sample_and_templates() -> None:
    from nordfed.synth.notes_gen import Draws, compile_template

    d = Draws(np.random.default_rng(0), block=7)  # a small block: the stream must continue across blocks
    firsts = np.zeros(5, dtype=int)
    for _ in range(5000):
        s = d.sample("abcde", 3)
        assert len(set(s)) == 3
        firsts["abcde".index(s[0])] += 1
    assert d.sample("ab", 9) in (["a", "b"], ["b", "a"])
    assert np.abs(firsts / 5000 - 0.2).max() < 0.03  # uniform first choice
    assert all(0 <= d.below(3) < 3 for _ in range(1000))
    t = compile_template("{imp:def} ble satt inn i {year}, {imp:def} fungerer.")
    assert t.cap and [s[0] for s in t.slots] == ["imp:def", "year"] and t.tail == " fungerer."
    t = compile_template("har {imp}.")
    assert not t.cap and t.parts == (("Har ", "imp"),)
