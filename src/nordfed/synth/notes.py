"""Synthetic clinical notes in each site's language, with gold annotations (NOTE_NLP form).

Notes are admission notes, discharge summaries, MRI referrals and medication reviews that mention implants
(with manufacturer and model), drugs with doses and adverse reactions, asserted as present, negated, uncertain,
historical (explanted) or about a family member. The gold frame has one row per mention (kind implant, model,
drug or reaction) in NOTE_NLP form plus one row per gold ADR pair (kind ``adr``).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from nordfed.synth.notes_gen import NOTE_TYPES, Generator, NoteDraft
from nordfed.text.lexicon import SITE_LANG

NOTE_TYPE_EHR = 32817
ENCODING_UTF8 = 32678
#: local concepts (OMOP's 2-billion range) for note classes and languages: no standard ids in our vocabulary
NOTE_CLASS = {"admission": 2_000_300_001, "discharge": 2_000_300_002, "mri_referral": 2_000_300_003,
              "medication_review": 2_000_300_004}
LANGUAGE_CONCEPT = {"nb": 2_000_300_101, "sv": 2_000_300_102, "da": 2_000_300_103, "fi": 2_000_300_104,
                    "et": 2_000_300_105}
NOTES_PER_PERSON = 0.6  # expected notes per person (Poisson)
GOLD_COLUMNS = ["note_id", "kind", "lexical_variant", "offset", "end", "snippet", "note_nlp_concept_id",
                "term_exists", "term_temporal", "term_modifiers", "context", "hard", "lang", "site",
                "drug_concept_id", "reaction_concept_id"]


def site_language(site: str) -> str:
    try:
        return SITE_LANG[site.upper()]
    except KeyError:
        raise ValueError(f"no note language for site {site!r}; known: {', '.join(SITE_LANG)}") from None


def _date_between(a: dt.date, b: dt.date, rng: np.random.Generator) -> dt.date:
    return a + dt.timedelta(days=int(rng.integers(0, max(1, (b - a).days + 1))))


def make_notes(site: str, persons: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (rows for the CDM ``note`` table, gold annotations in NOTE_NLP form) for ``persons``.

    ``persons`` has person_id, gender_concept_id, year_of_birth, observation_period_start_date and
    observation_period_end_date. note_id counts from 1 within the call (the site builder shifts each chunk so
    ids stay unique per site) and every note date lies inside the person's observation period.
    """
    lang = site_language(site)
    gen = Generator(lang, rng)
    counts = rng.poisson(NOTES_PER_PERSON, size=len(persons))
    notes, gold = [], []
    next_id = 1
    for (_, p), k in zip(persons.iterrows(), counts, strict=True):
        start = pd.Timestamp(p["observation_period_start_date"]).date()
        end = pd.Timestamp(p["observation_period_end_date"]).date()
        state = gen.person_state()
        for _ in range(int(k)):
            note_type = NOTE_TYPES[int(rng.integers(len(NOTE_TYPES)))]
            note_date = _date_between(start, end, rng)
            draft = gen.note(note_type, note_date, state)
            text = draft.text
            nid = next_id
            next_id += 1
            notes.append({
                "note_id": nid, "person_id": int(p["person_id"]), "note_date": note_date,
                "note_datetime": dt.datetime.combine(note_date, dt.time(int(rng.integers(7, 20)))),
                "note_type_concept_id": NOTE_TYPE_EHR, "note_class_concept_id": NOTE_CLASS[note_type],
                "note_title": text.split("\n", 1)[0][:250], "note_text": text,
                "encoding_concept_id": ENCODING_UTF8, "language_concept_id": LANGUAGE_CONCEPT[lang],
                "note_source_value": note_type,
            })
            gold.extend(gold_rows(nid, text, draft, lang, site.upper()))
    note_df = pd.DataFrame(notes)
    gold_df = pd.DataFrame(gold, columns=GOLD_COLUMNS)
    return note_df, gold_df


def gold_rows(note_id: int, text: str, draft: NoteDraft, lang: str, site: str) -> list[dict]:
    rows = []
    for m in draft.mentions:
        exists = "N" if m.context in ("negated", "uncertain", "family") else "Y"
        rows.append({
            "note_id": note_id, "kind": m.kind, "lexical_variant": m.text, "offset": str(m.start), "end": m.end,
            "snippet": " ".join(text[max(0, m.start - 60):m.end + 60].split())[:250],
            "note_nlp_concept_id": m.concept_id, "term_exists": exists,
            "term_temporal": "past" if m.context == "historical" else "present",
            "term_modifiers": f"kind={m.kind};context={m.context}", "context": m.context, "hard": m.hard,
            "lang": lang, "site": site, "drug_concept_id": None, "reaction_concept_id": None,
        })
    for drug, reaction in draft.adr:
        rows.append({
            "note_id": note_id, "kind": "adr", "lexical_variant": "", "offset": None, "end": None, "snippet": "",
            "note_nlp_concept_id": reaction, "term_exists": "Y", "term_temporal": "present",
            "term_modifiers": f"kind=adr;adr_drug_concept_id={drug}", "context": "present", "hard": False,
            "lang": lang, "site": site, "drug_concept_id": drug, "reaction_concept_id": reaction,
        })
    return rows
