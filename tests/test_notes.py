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
    assert notes.empty and gold.empty


def test_dates_inside_one_day_periods() -> None:
    p = persons(30)
    p["observation_period_end_date"] = p["observation_period_start_date"]
    notes, _ = make_notes("DK", p, np.random.default_rng(3))
    merged = notes.merge(p, on="person_id")
    assert (merged["note_date"] == merged["observation_period_start_date"]).all()
    assert all(isinstance(d, dt.date) for d in notes["note_date"])
