"""Generate one synthetic site, chunk by chunk, with its ground truth.

Persons are generated in chunks of :data:`CHUNK_SIZE`; each chunk draws from its own random streams derived from
(seed, site, chunk number), so the same seed always gives identical tables whether the site is built in memory
(:func:`generate`) or streamed into a database (:func:`nordfed.synth.writer.write_site`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from nordfed.synth import background, cll, crc, defects, notes, tables
from nordfed.synth import vocabulary as vocab
from nordfed.synth.cohorts import background_mask, protected_windows
from nordfed.synth.events import COLUMNS, Events
from nordfed.synth.population import CLL, CRC, People, draw_people, finish_periods
from nordfed.synth.profiles import SITES, SiteProfile, profile
from nordfed.synth.truth_doc import build_truth

CHUNK_SIZE = 50_000
_CRC_WINDOWS = protected_windows(crc.VARIABLES)
_CLL_WINDOWS = protected_windows(cll.VARIABLES, [(cll.INFECTION_CONCEPTS, (-365, 730)),
                                                 (cll.TREATMENT_CONCEPTS, cll.OUTCOME_WINDOW)])


@dataclass
class SynthResult:
    """A generated site: CDM tables (OMOP names) and ground truth that must stay outside the CDM."""

    site: str
    persons: int
    seed: int
    tables: dict[str, pd.DataFrame]
    truth: dict
    #: person-level truth of each cohort (index date, model terms, linear predictor, outcome)
    cohorts: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: gold annotations of the clinical notes (NOTE_NLP form), written beside the truth
    notes_gold: pd.DataFrame = field(default_factory=pd.DataFrame)


class SiteBuilder:
    """Streams a site's CDM tables chunk by chunk and collects the truth along the way."""

    def __init__(self, site: str, persons: int, seed: int, chunk_size: int = CHUNK_SIZE, notes: bool = True):
        if persons < 1:
            raise ValueError("persons must be at least 1")
        self.profile: SiteProfile = profile(site)
        self.site = self.profile.code
        self.persons = int(persons)
        self.seed = int(seed)
        self.chunk_size = int(chunk_size)
        self.notes = notes
        self._ids = {t: 1 for t in tables.EVENT_TABLES.values()}
        self._ids["note"] = 1
        self._cohorts: dict[str, list[pd.DataFrame]] = {"crc_surgery": [], "cll": []}
        self._defects: list = []
        self._notes_gold: list[pd.DataFrame] = []
        self._done = False

    @property
    def n_chunks(self) -> int:
        return -(-self.persons // self.chunk_size)

    def vocabulary(self) -> dict[str, pd.DataFrame]:
        return {**vocab.vocabulary_tables(), "cdm_source": tables.cdm_source(self.profile)}

    def chunks(self) -> Iterator[dict[str, pd.DataFrame]]:
        """CDM tables of each chunk of persons, in order (ids continue across chunks)."""
        if self._done:
            raise RuntimeError("a SiteBuilder streams its site once; make a new one")
        for c in range(self.n_chunks):
            first = c * self.chunk_size
            yield self._chunk(c, first, min(self.chunk_size, self.persons - first))
        self._done = True

    def _chunk(self, number: int, first: int, n: int) -> dict[str, pd.DataFrame]:
        prof = self.profile
        seq = np.random.SeedSequence([self.seed, SITES.index(prof.code), number])
        r_people, r_bg, r_crc, r_cll, r_dq, r_notes = (np.random.default_rng(s) for s in seq.spawn(6))
        people = draw_people(r_people, prof, n)
        crc_idx = np.flatnonzero(people.cohort == CRC)
        cll_idx = np.flatnonzero(people.cohort == CLL)
        crc_df = crc.simulate(r_crc, prof, people, crc_idx)
        cll_df = cll.simulate(r_cll, prof, people, cll_idx)
        cohort_death = np.full(n, -1, dtype=np.int64)
        cohort_death[crc_idx] = crc_df["death_date"].to_numpy()
        finish_periods(r_people, prof, people, cohort_death)

        ev = Events()
        visits = background.generate(r_bg, prof, people, ev)
        crc.emit(r_crc, prof, people, crc_df, ev)
        cll.emit(r_cll, prof, people, cll_df, ev)
        frames = {t: ev.frame(t) for t in COLUMNS}
        for idx, windows in ((crc_idx, _CRC_WINDOWS), (cll_idx, _CLL_WINDOWS)):
            index = np.full(n, -1, dtype=np.int64)
            index[idx] = people.index[idx]
            for t in COLUMNS:
                if t != "visit":
                    keep = ~background_mask(frames[t], index, windows)
                    frames[t] = {k: a[keep] for k, a in frames[t].items()}
        self._defects += defects.apply(r_dq, prof, people, frames, visits)

        out = tables.person_table(prof, people, first + 1)
        out.update(tables.event_tables(frames, first + 1, self._ids))
        for name, df in (("crc_surgery", crc_df), ("cll", cll_df)):
            self._cohorts[name].append(_person_ids(df, first))
        if not self.notes:
            return out
        note, gold = notes.make_notes(prof.code, _notes_persons(out, people, first), r_notes)
        if not note.empty:
            note, gold = _renumber_notes(note, gold, self._ids)
            out["note"] = note
            self._notes_gold.append(gold)
        return out

    def truth(self) -> dict:
        if not self._done:
            raise RuntimeError("truth is complete only after every chunk was generated")
        return build_truth(self.profile, self.persons, self.seed, self.cohorts(), self._defects)

    def cohorts(self) -> dict[str, pd.DataFrame]:
        return {k: pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
                for k, parts in self._cohorts.items()}

    def notes_gold(self) -> pd.DataFrame:
        return pd.concat(self._notes_gold, ignore_index=True) if self._notes_gold else pd.DataFrame()


def _person_ids(df: pd.DataFrame, first: int) -> pd.DataFrame:
    df = df.copy()
    df.insert(0, "person_id", first + 1 + df.pop("person").to_numpy())
    for col in [c for c in df.columns if c.endswith("_date")]:
        df[col] = tables.dates(df[col].to_numpy())
    return df


def _notes_persons(out: dict[str, pd.DataFrame], people: People, first: int) -> pd.DataFrame:
    person, period = out["person"], out["observation_period"]
    cohort = np.array(["", "crc_surgery", "cll"], dtype=object)[people.cohort]
    return pd.DataFrame({
        "person_id": person["person_id"],
        "gender_concept_id": person["gender_concept_id"],
        "year_of_birth": person["year_of_birth"],
        "observation_period_start_date": period["observation_period_start_date"],
        "observation_period_end_date": period["observation_period_end_date"],
        "cohort": np.where(cohort == "", None, cohort),
        "index_date": tables.dates(people.index),
        "death_date": tables.dates(people.death),
    })


def _renumber_notes(note: pd.DataFrame, gold: pd.DataFrame, ids: dict[str, int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep note ids unique across chunks: make_notes numbers each chunk's notes from the same base, so every
    chunk's ids (and the gold rows' note_id) are shifted by the number of notes written before it."""
    note = note.copy()
    shift = ids["note"] - 1
    if "note_id" not in note:
        note.insert(0, "note_id", np.arange(1, len(note) + 1))
    note["note_id"] = note["note_id"].astype(np.int64) + shift
    if not gold.empty and "note_id" in gold:
        gold = gold.copy()
        gold["note_id"] = gold["note_id"].astype(np.int64) + shift
    ids["note"] += len(note)
    return note, gold


def generate(site: str, persons: int, seed: int, chunk_size: int = CHUNK_SIZE, notes: bool = True) -> SynthResult:
    """Generate a whole site in memory: CDM tables, vocabulary and ground truth (``notes=False`` skips the
    clinical notes, by far the slowest part)."""
    builder = SiteBuilder(site, persons, seed, chunk_size, notes)
    parts: dict[str, list[pd.DataFrame]] = {}
    for chunk in builder.chunks():
        for name, df in chunk.items():
            parts.setdefault(name, []).append(df)
    result_tables = builder.vocabulary()
    for name, dfs in parts.items():
        result_tables[name] = dfs[0] if len(dfs) == 1 else pd.concat(dfs, ignore_index=True)
    return SynthResult(builder.site, builder.persons, builder.seed, result_tables, builder.truth(),
                       builder.cohorts(), builder.notes_gold())
