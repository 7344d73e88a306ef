"""Persons, cohort membership, observation periods and deaths for one chunk of a site.

Cohort persons get an index date (surgery for colorectal cancer, diagnosis for CLL) with at least 365 days of
observation before it and the whole follow-up window after it, so every truth variable and outcome is observable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nordfed.synth.events import day, uniform_days
from nordfed.synth.profiles import SiteProfile

NO_COHORT, CRC, CLL = 0, 1, 2
FOLLOW_UP = {CRC: 365, CLL: 730}
LOOKBACK = 365
_AGE_BANDS = np.array([[0, 18], [18, 40], [40, 60], [60, 75], [75, 100]], dtype=float)
#: Gompertz background mortality: hazard per year = A * exp(B * age)
_GOMPERTZ_A, _GOMPERTZ_B = 2.0e-5, 0.095


@dataclass
class People:
    """Chunk-local person arrays (dates in days since 1970-01-01, -1 = none)."""

    male: np.ndarray
    birth: np.ndarray
    frailty: np.ndarray
    cohort: np.ndarray
    index: np.ndarray
    obs_start: np.ndarray
    obs_end: np.ndarray
    death: np.ndarray

    @property
    def n(self) -> int:
        return len(self.male)

    def age_years(self, at: np.ndarray) -> np.ndarray:
        return (np.asarray(at) - self.birth) / 365.25

    def year_of_birth(self) -> np.ndarray:
        return self.birth.astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _cohort_weights(age: np.ndarray, center: float, scale: float, share: float) -> np.ndarray:
    w = _sigmoid((age - center) / scale)
    return np.clip(share * w / max(w.mean(), 1e-9), 0.0, 0.9)


def gompertz_death(rng: np.random.Generator, age_at_start: np.ndarray, start: np.ndarray,
                   multiplier: float | np.ndarray = 1.0) -> np.ndarray:
    """Day of death drawn from Gompertz hazard from ``start`` on (may lie far in the future)."""
    a = _GOMPERTZ_A * np.asarray(multiplier, dtype=float)
    e = rng.exponential(size=len(start))
    x0 = np.clip(age_at_start, 0, 110)
    years = np.log(e * _GOMPERTZ_B / a + np.exp(_GOMPERTZ_B * x0)) / _GOMPERTZ_B - x0
    return start + np.floor(np.minimum(years, 150) * 365.25).astype(np.int64)


def draw_people(rng: np.random.Generator, prof: SiteProfile, n: int) -> People:
    """Sex, birth, frailty, cohort membership, observation start and index dates (deaths come later)."""
    start, end = day(prof.data_start), day(prof.data_end)
    male = rng.random(n) < prof.male_share
    band = rng.choice(len(_AGE_BANDS), size=n, p=np.array(prof.age_weights) / sum(prof.age_weights))
    age_end = _AGE_BANDS[band, 0] + rng.random(n) * (_AGE_BANDS[band, 1] - _AGE_BANDS[band, 0])
    birth = end - np.floor(age_end * 365.25).astype(np.int64)
    frailty = rng.standard_normal(n)

    # cohort membership: older persons, and only those who can have lookback and follow-up in the data window
    latest_start = {c: end - f - LOOKBACK - 30 for c, f in FOLLOW_UP.items()}
    adult_by = {c: latest_start[c] - 35 * 365 for c in FOLLOW_UP}
    p_crc = _cohort_weights(age_end, 72.0, 7.0, prof.crc_share) * (birth <= adult_by[CRC])
    p_cll = _cohort_weights(age_end, 74.0, 8.0, prof.cll_share) * (birth <= adult_by[CLL])
    u = rng.random(n)
    cohort = np.where(u < p_crc, CRC, np.where(u < p_crc + p_cll, CLL, NO_COHORT)).astype(np.int8)

    # observation start: most persons are there when the data begins, others move in or are born later
    late = rng.random(n) < 0.35
    entry = start + np.where(late, np.floor(rng.random(n) * (end - start)).astype(np.int64), 0)
    obs_start = np.maximum(entry, birth)
    index = np.full(n, -1, dtype=np.int64)
    for c, follow in FOLLOW_UP.items():
        sel = np.flatnonzero(cohort == c)
        hi = latest_start[c]
        obs_start[sel] = np.maximum(start + np.where(late[sel], np.floor(
            rng.random(len(sel)) * (hi - start)).astype(np.int64), 0), birth[sel])
        obs_start[sel] = np.minimum(obs_start[sel], hi)
        index[sel] = uniform_days(rng, obs_start[sel] + LOOKBACK, np.full(len(sel), end - follow))
    return People(male=male, birth=birth, frailty=frailty, cohort=cohort, index=index, obs_start=obs_start,
                  obs_end=np.full(n, end, dtype=np.int64), death=np.full(n, -1, dtype=np.int64))


def finish_periods(rng: np.random.Generator, prof: SiteProfile, people: People, cohort_death: np.ndarray) -> None:
    """Set deaths and observation ends. ``cohort_death`` holds deaths the cohort models decided (-1 = none);
    other deaths follow background mortality, after the follow-up window for cohort persons."""
    end = day(prof.data_end)
    n = people.n
    from_day = people.obs_start.copy()
    multiplier = np.ones(n)
    for c, follow in FOLLOW_UP.items():
        sel = people.cohort == c
        from_day[sel] = people.index[sel] + follow + 1
        multiplier[sel] = 2.0
    background = gompertz_death(rng, people.age_years(from_day), from_day, multiplier)
    death = np.where(cohort_death >= 0, cohort_death, background)
    exits = np.where((people.cohort == NO_COHORT) & (rng.random(n) < 0.04),
                     uniform_days(rng, people.obs_start, np.full(n, end)), end)
    died = (death <= exits) & (death <= end)
    people.death = np.where(died, death, -1)
    people.obs_end = np.where(died, death, exits)
