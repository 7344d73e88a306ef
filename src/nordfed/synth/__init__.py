"""Synthetic Nordic and Baltic OMOP CDM sites with documented ground truth.

>>> result = generate("DK", persons=2_000, seed=1)          # doctest: +SKIP
>>> write(result, "duckdb:///data/dk.duckdb")  # truth in data/dk.truth.json   # doctest: +SKIP
"""

from __future__ import annotations

from nordfed.synth.core import CHUNK_SIZE, SiteBuilder, SynthResult, generate
from nordfed.synth.profiles import PROFILES, SITES
from nordfed.synth.writer import truth_path_for, write, write_site

__all__ = ["CHUNK_SIZE", "PROFILES", "SITES", "SiteBuilder", "SynthResult", "generate", "truth_path_for", "write",
           "write_site"]
