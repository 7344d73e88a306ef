"""Write a synthetic site into a CDM database (one transaction) and its ground truth beside it, never inside."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from nordfed.omop.store import CDM, CDMError, CDMUrl, open_cdm
from nordfed.synth.core import CHUNK_SIZE, SiteBuilder, SynthResult
from nordfed.synth.truth_doc import jsonable

TRUTH_SUFFIX = ".truth.json"


def truth_path_for(url: str, truth_path: str | os.PathLike | None = None) -> Path:
    """Where the truth of the CDM at ``url`` goes: ``truth_path`` if given, else beside a DuckDB file
    (``x/site.duckdb`` -> ``x/site.truth.json``). PostgreSQL and in-memory CDMs need ``truth_path``."""
    if truth_path is not None:
        return Path(truth_path)
    loc = CDMUrl.parse(url)
    if loc.engine != "duckdb" or loc.target == ":memory:":
        raise CDMError(f"{url} is not a DuckDB file: pass truth_path (the ground truth never goes into the CDM)")
    return Path(loc.target).with_suffix(TRUTH_SUFFIX)


def sidecar(truth: Path, name: str) -> Path:
    """A file beside the truth JSON: ``x/site.truth.json`` -> ``x/site.<name>``."""
    stem = truth.name[: -len(TRUTH_SUFFIX)] if truth.name.endswith(TRUTH_SUFFIX) else truth.stem
    return truth.with_name(f"{stem}.{name}")


def _check_empty(cdm: CDM) -> None:
    n = int(cdm.scalar('SELECT count(*) FROM "person"'))
    if n:
        raise CDMError(f"{cdm.url} already holds {n} persons; write a synthetic site into an empty CDM")


def _insert_all(cdm: CDM, frames: dict[str, pd.DataFrame]) -> int:
    return sum(cdm.insert(name, df) for name, df in frames.items() if not df.empty)


def write_truth(path: Path, truth: dict, cohorts: dict[str, pd.DataFrame], notes_gold: pd.DataFrame) -> Path:
    """Write the truth JSON (plus person-level cohort truth and notes gold as Parquet) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, df in cohorts.items():
        files[name] = sidecar(path, f"truth_{name}.parquet")
        _atomic(files[name], lambda p, df=df: df.to_parquet(p, index=False))
    if not notes_gold.empty:
        gold = sidecar(path, "notes_gold.parquet")
        _atomic(gold, lambda p: notes_gold.to_parquet(p, index=False))
    truth = {**truth, "person_level_files": {k: f.name for k, f in files.items()}}
    _atomic(path, lambda p: Path(p).write_text(json.dumps(truth, indent=2, default=jsonable), encoding="utf-8"))
    return path


def _atomic(path: Path, write: Callable[[str], object]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write(result: SynthResult, url: str, truth_path: str | os.PathLike | None = None) -> Path:
    """Create the CDM schema at ``url``, insert every table of ``result`` in one transaction, and write the
    truth JSON beside the data. Returns the truth path."""
    path = truth_path_for(url, truth_path)
    with open_cdm(url, create=True) as cdm:
        _check_empty(cdm)
        with cdm.transaction():
            _insert_all(cdm, result.tables)
        cdm.analyze()
    return write_truth(path, result.truth, result.cohorts, result.notes_gold)


def write_site(site: str, persons: int, seed: int, url: str, truth_path: str | os.PathLike | None = None,
               chunk_size: int = CHUNK_SIZE, progress: Callable[[int, int], None] | None = None,
               notes: bool = True) -> dict:
    """Generate and write a site chunk by chunk (constant memory; the same tables as :func:`generate` for the
    same seed) in one transaction. ``progress(persons_done, rows_written)`` is called after each chunk.
    Returns the truth."""
    path = truth_path_for(url, truth_path)
    builder = SiteBuilder(site, persons, seed, chunk_size, notes)
    with open_cdm(url, create=True) as cdm:
        _check_empty(cdm)
        with cdm.transaction():
            rows = _insert_all(cdm, builder.vocabulary())
            done = 0
            for chunk in builder.chunks():
                rows += _insert_all(cdm, chunk)
                done += len(chunk["person"])
                if progress is not None:
                    progress(done, rows)
        cdm.analyze()
    truth = builder.truth()
    write_truth(path, truth, builder.cohorts(), builder.notes_gold())
    return truth
