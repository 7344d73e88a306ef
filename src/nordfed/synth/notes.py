"""Synthetic clinical notes in each site's language, with gold annotations (NOTE_NLP form).

Notes are admission notes, discharge summaries, MRI referrals and medication reviews that mention implants
(with manufacturer and model), drugs with doses and adverse reactions, asserted as present, negated, uncertain,
historical (explanted) or about a family member. The gold frame has one row per mention (kind implant, model,
drug or reaction) in NOTE_NLP form plus one row per gold ADR pair (kind ``adr``).
"""

from __future__ import annotations

from functools import cache

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

#: gold columns of one fixed dtype; the others (end, drug/reaction concept ids) are float with NaN only when the
#: frame has ADR rows, as pandas infers from the lists
_GOLD_DTYPES = {"note_id": np.int64, "note_nlp_concept_id": np.int64, "hard": bool} | {
    c: object for c in ("kind", "lexical_variant", "offset", "snippet", "term_exists", "term_temporal",
                        "term_modifiers", "context", "lang", "site")}


def site_language(site: str) -> str:
    try:
        return SITE_LANG[site.upper()]
    except KeyError:
        raise ValueError(f"no note language for site {site!r}; known: {', '.join(SITE_LANG)}") from None


def _days(persons: pd.DataFrame, column: str) -> np.ndarray:
    """A date column (date objects, strings or datetime64) as int64 days since 1970-01-01."""
    dates = pd.to_datetime(persons[column]).to_numpy()
    missing = np.flatnonzero(np.isnat(dates))
    if len(missing):
        raise ValueError(f"persons row {int(missing[0])}: {column} is missing (a note needs a date inside the "
                         "observation period)")
    return dates.astype("datetime64[D]").astype(np.int64)


def make_notes(site: str, persons: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (rows for the CDM ``note`` table, gold annotations in NOTE_NLP form) for ``persons``.

    ``persons`` has person_id, gender_concept_id, year_of_birth, observation_period_start_date and
    observation_period_end_date. note_id counts from 1 within the call (the site builder shifts each chunk so
    ids stay unique per site) and every note date lies inside the person's observation period.
    """
    lang = site_language(site)
    site = site.upper()
    gen = Generator(lang, rng)
    counts = rng.poisson(NOTES_PER_PERSON, size=len(persons))
    total = int(counts.sum())
    if total == 0:
        return pd.DataFrame(), pd.DataFrame([], columns=GOLD_COLUMNS)
    # per-note facts that need no text are drawn for all notes at once
    who = np.repeat(np.arange(len(persons)), counts)
    start = _days(persons, "observation_period_start_date")[who]
    span = np.maximum(1, _days(persons, "observation_period_end_date")[who] - start + 1)
    day = (start + rng.integers(0, span)).astype("datetime64[D]")
    hour = rng.integers(7, 20, size=total).astype("timedelta64[h]")
    note_types = [NOTE_TYPES[k] for k in rng.integers(len(NOTE_TYPES), size=total).tolist()]
    note_dates = day.astype(object).tolist()
    texts: list[str] = []
    gold: list[tuple] = []
    state, last = None, -1
    for i, (p, note_type, note_date) in enumerate(zip(who.tolist(), note_types, note_dates, strict=True)):
        if p != last:  # one implant history per person, shared by all of their notes
            state, last = gen.person_state(), p
        draft = gen.note(note_type, note_date, state)
        text = draft.text
        texts.append(text)
        gold.extend(gold_rows(i + 1, text, draft, lang, site))
    note_df = pd.DataFrame({
        "note_id": np.arange(1, total + 1, dtype=np.int64),
        "person_id": persons["person_id"].to_numpy().astype(np.int64)[who],
        "note_date": note_dates,
        "note_datetime": day.astype("datetime64[ns]") + hour,
        "note_type_concept_id": NOTE_TYPE_EHR,
        "note_class_concept_id": [NOTE_CLASS[t] for t in note_types],
        "note_title": [t.split("\n", 1)[0][:250] for t in texts],
        "note_text": texts,
        "encoding_concept_id": ENCODING_UTF8,
        "language_concept_id": LANGUAGE_CONCEPT[lang],
        "note_source_value": note_types,
    })
    columns = dict(zip(GOLD_COLUMNS, (list(v) for v in zip(*gold, strict=True)), strict=True)) if gold else {}
    for c, dtype in _GOLD_DTYPES.items():
        if gold:  # typed up front: pandas converts long Python lists slowly
            columns[c] = np.array(columns[c], dtype=dtype)
    return note_df, pd.DataFrame(columns, columns=GOLD_COLUMNS)


def gold_rows(note_id: int, text: str, draft: NoteDraft, lang: str, site: str) -> list[tuple]:
    """The gold rows of one note, as tuples in :data:`GOLD_COLUMNS` order."""
    rows = []
    for start, end, variant, kind, concept_id, ctx, hard in draft.mentions:
        rows.append((
            note_id, kind, variant, str(start), end, " ".join(text[max(0, start - 60):end + 60].split())[:250],
            concept_id, *_assertion(kind, ctx), hard, lang, site, None, None,
        ))
    for drug, reaction in draft.adr:
        rows.append((note_id, "adr", "", None, None, "", reaction, "Y", "present",
                     f"kind=adr;adr_drug_concept_id={drug}", "present", False, lang, site, drug, reaction))
    return rows


@cache
def _assertion(kind: str, ctx: str) -> tuple[str, str, str, str]:
    """term_exists, term_temporal, term_modifiers and context of a mention."""
    exists = "N" if ctx in ("negated", "uncertain", "family") else "Y"
    return exists, "past" if ctx == "historical" else "present", f"kind={kind};context={ctx}", ctx
