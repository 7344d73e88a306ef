"""Shared machinery of the two synthetic cohorts: correlated binary risk factors, how they are written to the CDM,
and which background rows must go so that every truth variable reads exactly as simulated."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nordfed.synth import vocabulary as v
from nordfed.synth.background import coded
from nordfed.synth.events import Events, choose, uniform_days
from nordfed.synth.profiles import SiteProfile
from nordfed.synth.truth import Var


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Binary:
    """How a binary risk factor is simulated (logit model) and written (which concept, which table)."""

    var: Var
    base: float
    frailty: float = 0.0
    age10: float = 0.0
    male: float = 0.0
    deps: dict[str, float] = field(default_factory=dict)
    #: what is written: a coarse condition concept (site coding habits apply) or weighted ingredients
    emit: tuple[tuple[int, float], ...] = ()
    requires: str | None = None  # only persons with this factor can have it


def simulate_binaries(rng: np.random.Generator, specs: list[Binary], z: np.ndarray, age: np.ndarray,
                      male: np.ndarray, known: dict[str, np.ndarray], site_shift: dict[str, float]) -> None:
    """Draw each factor in order (later ones may depend on earlier ones); results go into ``known``."""
    age10 = (age - 70.0) / 10.0
    for b in specs:
        logit = b.base + b.frailty * z + b.age10 * age10 + b.male * male + site_shift.get(b.var.name, 0.0)
        for dep, add in b.deps.items():
            logit = logit + add * known[dep]
        x = rng.random(len(z)) < sigmoid(logit)
        if b.requires is not None:
            x &= known[b.requires].astype(bool)
        known[b.var.name] = x.astype(float)


def emit_binaries(rng: np.random.Generator, prof: SiteProfile, ev: Events, specs: list[Binary],
                  known: dict[str, np.ndarray], person: np.ndarray, index: np.ndarray, obs_end: np.ndarray,
                  skip: tuple[str, ...] = ()) -> None:
    """Write every present factor inside its window (planted rows; never after ``obs_end`` or the index date)."""
    for b in specs:
        if b.var.name in skip:
            continue
        has = np.flatnonzero(known[b.var.name] > 0)
        if len(has) == 0:
            continue
        lo, hi = b.var.window
        hi = min(hi, -1) if b.var.table == "drug_exposure" else hi
        rep = np.repeat(has, 1 + rng.poisson(1.0, len(has)))
        p, s = person[rep], index[rep]
        date = uniform_days(rng, s + lo, s + hi)
        if b.var.table == "condition_occurrence":
            concept = choose(rng, b.emit, len(p)) if b.emit else coded(rng, prof, b.var.concept_ids[0], len(p))
            ev.add("condition", person=p, start=date, concept=concept, planted=1)
        elif b.var.table == "drug_exposure":
            supply = np.where(rng.random(len(p)) < 0.5, 30, 90)
            ev.add("drug", person=p, start=date, end=np.minimum(date + supply - 1, obs_end[rep]),
                   concept=choose(rng, b.emit, len(p)), days_supply=supply, quantity=supply.astype(float), planted=1)
        elif b.var.table == "observation":
            ev.add("observation", person=p, start=date, concept=b.var.concept_ids[0], planted=1)
        else:
            raise ValueError(f"cannot write binary factor {b.var.name} to {b.var.table}")


def protected_windows(variables: list[Var], extra: list[tuple[tuple[int, ...], tuple[int, int]]] = ()
                      ) -> list[tuple[np.ndarray, int, int]]:
    """(concept ids incl. descendants, lo, hi) whose background rows must not appear for cohort persons."""
    out = []
    for var in variables:
        if var.window is not None and var.concept_ids:
            out.append((var.concept_ids, *var.window))
    out += [(ids, lo, hi) for ids, (lo, hi) in extra]
    return [(np.array(sorted(set().union(*(v.descendants(c) for c in ids)))), lo, hi) for ids, lo, hi in out]


def background_mask(columns: dict[str, np.ndarray], cohort_index: np.ndarray,
                    windows: list[tuple[np.ndarray, int, int]]) -> np.ndarray:
    """True for unplanted rows of cohort persons that fall in a protected (concept, window)."""
    idx = cohort_index[columns["person"]]
    candidate = (idx >= 0) & (columns["planted"] == 0)
    drop = np.zeros(len(idx), dtype=bool)
    if not candidate.any():
        return drop
    rel = columns["start"] - idx
    for concepts, lo, hi in windows:
        drop |= candidate & (rel >= lo) & (rel <= hi) & np.isin(columns["concept"], concepts)
    return drop


def draw_missing(rng: np.random.Generator, n: int, base: float, scale: float) -> np.ndarray:
    """True where a lab value is present."""
    return rng.random(n) >= min(0.95, base * scale)
