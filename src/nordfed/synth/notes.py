"""Synthetic clinical notes in each site's language, with gold annotations (NOTE_NLP form)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def make_notes(site: str, persons: pd.DataFrame, rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (rows for the CDM ``note`` table, gold annotations in NOTE_NLP form) for ``persons``.

    ``persons`` has person_id, gender_concept_id, year_of_birth, observation_period_start_date and
    observation_period_end_date. Replaced by the clinical text work; until then no notes are written.
    """
    return pd.DataFrame(), pd.DataFrame()
