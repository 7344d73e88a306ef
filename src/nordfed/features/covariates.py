"""Covariate extraction → sparse design matrix, in the spirit of OHDSI FeatureExtraction's defaults.

One pass per domain table serves all of its windows (:mod:`.records`: engine I/O, Arrow to numpy); numpy
turns the records into covariate entries and the entries into a CSR matrix (:mod:`.assemble`).

>>> data = extract_covariates(cdm, population, CovariateSettings())       # doctest: +SKIP
>>> data.matrix.shape, data.covariate_ref.head()                          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from nordfed.features import analyses as A
from nordfed.features import assemble, records
from nordfed.features.assemble import Entries
from nordfed.omop.store import CDM


@dataclass(frozen=True)
class CovariateSettings:
    """Which analyses to run and their windows (days relative to the index date, inclusive).

    Defaults follow FeatureExtraction's ``createDefaultCovariateSettings`` where it has the analysis: its
    visit concept counts are off there (``isDefault`` FALSE in PrespecAnalyses.csv), so they are here.
    """

    gender: bool = True
    age_group: bool = True
    index_year: bool = True
    index_month: bool = True
    condition_long_term: bool = True
    condition_short_term: bool = True
    drug_group_long_term: bool = True
    drug_group_short_term: bool = True
    procedure_long_term: bool = True
    procedure_short_term: bool = True
    measurement_long_term: bool = True
    measurement_short_term: bool = True
    measurement_value_long_term: bool = True
    observation_long_term: bool = True
    observation_short_term: bool = True
    charlson_index: bool = True
    visit_concept_count_long_term: bool = False
    visit_concept_count_short_term: bool = False
    long_term_start_days: int = -365
    short_term_start_days: int = -30
    end_days: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> CovariateSettings:
        """The settings a study gives (a YAML's ``covariates:`` or a task's input), checked: unknown names and
        values of another type than the default's are refused (a quoted "false", a non-empty string, would
        switch an analysis on where the flags are only tested for truth)."""
        names = {f.name for f in fields(cls)}
        unknown = set(d or {}) - names
        if unknown:
            raise ValueError(f"unknown covariate setting(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(names))}")
        for f in fields(cls):
            if f.name not in (d or {}):
                continue
            v = (d or {})[f.name]
            shown = "nothing" if v is None else repr(v)
            if isinstance(f.default, bool):
                if not isinstance(v, bool):
                    raise ValueError(f"{f.name} must be true or false, got {shown}")
            elif isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"{f.name} must be a whole number of days, got {shown}")
        return cls(**(d or {}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def demographics(self) -> list[int]:
        return [a for flag, a in ((self.gender, A.GENDER), (self.age_group, A.AGE_GROUP),
                                  (self.index_year, A.INDEX_YEAR), (self.index_month, A.INDEX_MONTH)) if flag]

    def windows(self, domain: str) -> list[tuple[int, int]]:
        """``(start_day, analysis_id)`` of the window analyses chosen for ``domain`` (presence; for ``visit``,
        counts)."""
        lo, so = self.long_term_start_days, self.short_term_start_days
        table = {
            "condition": ((self.condition_long_term, lo, A.CONDITION_LONG),
                          (self.condition_short_term, so, A.CONDITION_SHORT)),
            "procedure": ((self.procedure_long_term, lo, A.PROCEDURE_LONG),
                          (self.procedure_short_term, so, A.PROCEDURE_SHORT)),
            "measurement": ((self.measurement_long_term, lo, A.MEASUREMENT_LONG),
                            (self.measurement_short_term, so, A.MEASUREMENT_SHORT)),
            "drug": ((self.drug_group_long_term, lo, A.DRUG_GROUP_LONG),
                     (self.drug_group_short_term, so, A.DRUG_GROUP_SHORT)),
            "observation": ((self.observation_long_term, lo, A.OBSERVATION_LONG),
                            (self.observation_short_term, so, A.OBSERVATION_SHORT)),
            "visit": ((self.visit_concept_count_long_term, lo, A.VISIT_CONCEPT_COUNT_LONG),
                      (self.visit_concept_count_short_term, so, A.VISIT_CONCEPT_COUNT_SHORT)),
        }[domain]
        return [(start, a) for flag, start, a in table if flag]


def analysis_of(covariate_ids: np.ndarray) -> np.ndarray:
    return np.asarray(covariate_ids, dtype=np.int64) % 1000


def concept_of(covariate_ids: np.ndarray) -> np.ndarray:
    ids = np.asarray(covariate_ids, dtype=np.int64)
    analysis = ids % 1000
    concept = ids // 1000
    concept = np.where(analysis == A.MEASUREMENT_VALUE_LONG, ids // 1_000_000, concept)
    return np.where(np.isin(analysis, [A.AGE_GROUP, A.INDEX_YEAR, A.INDEX_MONTH, A.CHARLSON]), 0, concept)


@dataclass
class CovariateData:
    """Sparse covariates: ``matrix[i, j]`` is covariate ``covariate_ids[j]`` of population row ``row_ids[i]``."""

    row_ids: np.ndarray
    covariate_ids: np.ndarray
    matrix: sp.csr_matrix
    covariate_ref: pd.DataFrame  # covariate_id, covariate_name, analysis_id, concept_id

    def select(self, covariate_ids: Sequence[int]) -> CovariateData:
        """Exactly ``covariate_ids`` as columns, in that order (absent ones are all zero)."""
        want = np.asarray(list(covariate_ids), dtype=np.int64)
        index = {c: k for k, c in enumerate(self.covariate_ids.tolist())}
        pairs = [(index[c], j) for j, c in enumerate(want.tolist()) if c in index]
        src = np.array([p[0] for p in pairs], dtype=np.int64)
        dst = np.array([p[1] for p in pairs], dtype=np.int64)
        proj = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(len(self.covariate_ids), len(want)))
        ref = self.covariate_ref.set_index("covariate_id").reindex(want).reset_index()
        missing = ref["analysis_id"].isna()
        ref.loc[missing, "analysis_id"] = analysis_of(want[missing.to_numpy()])
        ref.loc[missing, "concept_id"] = concept_of(want[missing.to_numpy()])
        ref.loc[missing, "covariate_name"] = [f"covariate {c}" for c in want[missing.to_numpy()]]
        return CovariateData(self.row_ids, want, (self.matrix @ proj).tocsr(), ref)

    def normalized(self, max_values: dict[int, float]) -> CovariateData:
        """Divide each listed covariate by its (global) maximum, FeatureExtraction's tidyCovariates normalisation."""
        scale = np.array([1.0 / max_values[c] if max_values.get(c) else 1.0 for c in self.covariate_ids.tolist()])
        return CovariateData(self.row_ids, self.covariate_ids, (self.matrix @ sp.diags(scale)).tocsr(),
                             self.covariate_ref)

    def to_frame(self) -> pd.DataFrame:
        """Dense DataFrame: index ``row_id``, one column per covariate named by its id (as text)."""
        return pd.DataFrame(self.matrix.toarray(), index=pd.Index(self.row_ids, name="row_id"),
                            columns=[str(c) for c in self.covariate_ids])


def population_rows(population: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(row_ids ascending, k)``: ``k[i]`` is the matrix row of ``population.iloc[i]``."""
    missing = {"row_id", "subject_id", "cohort_start_date"} - set(population.columns)
    if missing:
        raise ValueError(f"population: missing column(s) {', '.join(sorted(missing))}")
    row_ids = population["row_id"].to_numpy(np.int64)
    order = np.argsort(row_ids, kind="stable")
    rows = row_ids[order]
    dup = np.flatnonzero(rows[1:] == rows[:-1])
    if len(dup):
        raise ValueError(f"population: row_id {rows[dup[0]]} occurs more than once (row_id must be unique)")
    k = np.empty(len(rows), dtype=np.int64)
    k[order] = np.arange(len(rows))
    return rows, k


def covariate_ref(cdm: CDM, covariate_ids: np.ndarray,
                  units: Mapping[int, Iterable[int]] | None = None) -> pd.DataFrame:
    """Names for covariate ids: ``covariate_id, covariate_name, analysis_id, concept_id``.

    A measurement value's id keeps only ``unit_concept_id mod 1000`` (FeatureExtraction's convention); ``units``
    maps that back to the unit concepts the extraction saw (:attr:`Entries.units`), else the site's measurements
    of those concepts say. Units are named as FeatureExtraction does: ``concept: name (unit name)``."""
    ids = np.unique(np.asarray(covariate_ids, dtype=np.int64))
    analysis = analysis_of(ids)
    concepts = concept_of(ids)
    valued = sorted({int(c) for c, a in zip(concepts.tolist(), analysis.tolist(), strict=True)
                     if a == A.MEASUREMENT_VALUE_LONG})
    if units is None and valued:
        q = cdm.query(f"SELECT DISTINCT unit_concept_id AS u FROM measurement WHERE measurement_concept_id IN "
                      f"({', '.join(map(str, valued))}) AND value_as_number IS NOT NULL")
        units = {}
        for u in q["u"].fillna(0).astype(int).tolist():  # the extraction reads a missing unit as 0
            units.setdefault(u % 1000, set()).add(u)  # type: ignore[union-attr]
    unit_of = {r: sorted(us) for r, us in (units or {}).items()}
    wanted = sorted({int(c) for c in concepts if c} | {u for us in unit_of.values() for u in us if u})
    names: dict[int, str] = {}
    if wanted:
        in_list = ", ".join(map(str, wanted))
        q = cdm.query(f"SELECT concept_id, concept_name FROM concept WHERE concept_id IN ({in_list})")
        names = dict(zip(q["concept_id"].astype(int), q["concept_name"].astype(str), strict=True))
    out = []
    for cid, a, c in zip(ids.tolist(), analysis.tolist(), concepts.tolist(), strict=True):
        label = A.ANALYSIS_NAMES.get(a, f"analysis {a}")
        if a == A.AGE_GROUP:
            g = cid // 1000
            name = f"{label}: {5 * g} - {5 * g + 4}"
        elif a in (A.INDEX_YEAR, A.INDEX_MONTH):
            name = f"{label}: {cid // 1000}"
        elif a == A.CHARLSON:
            name = label
        elif a == A.MEASUREMENT_VALUE_LONG:
            residue = (cid // 1000) % 1000
            # units that share the residue share the covariate (FeatureExtraction's id cannot tell them apart)
            unit = " or ".join(names.get(u, f"unit {u}") if u else "no unit" for u in unit_of.get(residue, [])) \
                or f"unit {residue}"
            name = f"{label}: {names.get(c, c)} ({unit})"
        else:
            name = f"{label}: {names.get(c, c)}"
        out.append({"covariate_id": cid, "covariate_name": name, "analysis_id": a, "concept_id": c})
    return pd.DataFrame(out, columns=["covariate_id", "covariate_name", "analysis_id", "concept_id"])


def extract_covariates(cdm: CDM, population: pd.DataFrame, settings: CovariateSettings | None = None) -> CovariateData:
    """Covariates of every population row (``row_id, subject_id, cohort_start_date``) as a sparse matrix."""
    s = settings or CovariateSettings()
    rows, k = population_rows(population)
    entries = Entries(len(rows))
    if len(rows):
        pop = records.Population(population, k)
        # only SQL joins read the population table; the scan path joins in memory (8 ms at a million rows)
        joins = not records.scan_path(cdm, pop)
        if joins:
            records.register(cdm, pop)
        try:
            records.collect(cdm, pop, s, entries)
        finally:
            if joins:
                records.unregister(cdm, pop)
    with ThreadPoolExecutor(1, thread_name_prefix="nordfed-covariate-ref") as names:
        # the concept name query runs while the matrix is built
        ref = names.submit(covariate_ref, cdm, assemble.covariate_ids(entries), entries.units)
        matrix, ids = assemble.to_csr(entries)
        return CovariateData(rows, ids, matrix, ref.result())
