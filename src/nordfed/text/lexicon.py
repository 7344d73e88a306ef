"""Multilingual lexicons (package data under ``nordfed/text/lexicons``) and the term matcher built on them.

Concept ids: drugs use OMOP RxNorm ingredient concept ids. Implant types, implant models and reactions have
no standard id in the synthetic vocabulary, so they use local ids in OMOP's 2-billion range reserved for
site-specific concepts: implant types 2000100001-2000100099, implant models 2000110001-2000119999,
reactions 2000200001-2000200999.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

LANGS = ("nb", "sv", "da", "fi", "et")
SITE_LANG = {"NO": "nb", "SE": "sv", "DK": "da", "FI": "fi", "EE": "et"}
LEXICON_VERSION = "1.0"
MR_CLASSES = ("safe", "conditional", "unsafe")

TOKEN_RE = re.compile(r"[^\W_]+|[^\w\s]", re.UNICODE)


class LexiconError(ValueError):
    """A lexicon file has a bad row (the message names file, row and field)."""


@dataclass(frozen=True)
class Entry:
    """One concept a term can point to."""

    kind: str  # implant | model | drug | reaction
    concept_id: int
    name: str
    type_concept_id: int | None = None  # model -> implant type
    mr_class: str | None = None
    atc: str | None = None
    manufacturer: str | None = None


@dataclass
class Lexicons:
    """All concepts and, per language, the token sequences that name them."""

    entries: dict[int, Entry] = field(default_factory=dict)
    terms: dict[str, dict[tuple[str, ...], int]] = field(default_factory=dict)  # lang -> tokens -> concept
    context: dict[str, dict[tuple[str, ...], tuple[str, str]]] = field(default_factory=dict)  # -> (cat, dir)
    adr_cues: dict[str, set[tuple[str, ...]]] = field(default_factory=dict)
    compound_heads: dict[str, int] = field(default_factory=dict)  # word -> implant type concept
    manufacturers: set[tuple[str, ...]] = field(default_factory=set)

    def implant_types(self) -> dict[str, Entry]:
        return {e.name: e for e in self.entries.values() if e.kind == "implant"}


def tokens(text: str) -> list[str]:
    return [m.group(0).lower() for m in TOKEN_RE.finditer(text)]


def _rows(name: str) -> list[tuple[int, dict[str, str]]]:
    path = resources.files("nordfed.text") / "lexicons" / name
    with path.open(encoding="utf-8", newline="") as fh:
        return list(enumerate(csv.DictReader(fh), start=2))


def _int(name: str, row: int, rec: dict[str, str], col: str) -> int:
    try:
        return int(rec[col])
    except (KeyError, TypeError, ValueError):
        raise LexiconError(f"{name}, row {row}, field {col!r}: expected an integer, got {rec.get(col)!r}") from None


def _langs(name: str, row: int, lang: str) -> tuple[str, ...]:
    if lang == "*":
        return LANGS
    if lang not in LANGS:
        raise LexiconError(f"{name}, row {row}, field 'lang': unknown language {lang!r} (use one of {LANGS} or *)")
    return (lang,)


def _add_term(lex: Lexicons, langs: tuple[str, ...], term: str, cid: int) -> None:
    toks = tuple(tokens(term))
    for lang in langs:
        lex.terms.setdefault(lang, {}).setdefault(toks, cid)


@lru_cache(maxsize=1)
def load_lexicons() -> Lexicons:
    """Read every lexicon file once; raises :class:`LexiconError` naming the file, row and field."""
    lex = Lexicons()
    for row, r in _rows("implant_types.csv"):
        cid = _int("implant_types.csv", row, r, "concept_id")
        if r["mr_default"] not in MR_CLASSES:
            raise LexiconError(f"implant_types.csv, row {row}, field 'mr_default': {r['mr_default']!r}")
        lex.entries[cid] = Entry("implant", cid, r["implant_type"], mr_class=r["mr_default"])
        for head in filter(None, (r.get("compound_heads") or "").split("|")):
            lex.compound_heads[head.lower()] = cid
    for row, r in _rows("implant_terms.csv"):
        cid = _int("implant_terms.csv", row, r, "concept_id")
        if cid not in lex.entries:
            raise LexiconError(f"implant_terms.csv, row {row}, field 'concept_id': unknown implant type {cid}")
        _add_term(lex, _langs("implant_terms.csv", row, r["lang"]), r["term"], cid)
    for row, r in _rows("implant_models.csv"):
        cid = _int("implant_models.csv", row, r, "concept_id")
        tcid = _int("implant_models.csv", row, r, "type_concept_id")
        if r["mr_class"] not in MR_CLASSES:
            raise LexiconError(f"implant_models.csv, row {row}, field 'mr_class': {r['mr_class']!r}")
        lex.entries[cid] = Entry("model", cid, r["model"], tcid, r["mr_class"], manufacturer=r["manufacturer"])
        lex.manufacturers.add(tuple(tokens(r["manufacturer"])))
        for alias in [r["model"], *filter(None, r["aliases"].split("|"))]:
            _add_term(lex, LANGS, alias, cid)
    for row, r in _rows("drugs.csv"):
        cid = _int("drugs.csv", row, r, "concept_id")
        lex.entries[cid] = Entry("drug", cid, r["ingredient"], atc=r["atc"])
        for term in r["terms"].split("|"):
            _add_term(lex, LANGS, term, cid)
    for row, r in _rows("reactions.csv"):
        cid = _int("reactions.csv", row, r, "concept_id")
        lex.entries[cid] = Entry("reaction", cid, r["reaction"])
        for term in r["terms"].split("|"):
            _add_term(lex, LANGS, term, cid)
    for row, r in _rows("context.csv"):
        if r["category"] not in ("NEG", "UNC", "HIST", "FAM", "PSEUDO", "TERM"):
            raise LexiconError(f"context.csv, row {row}, field 'category': {r['category']!r}")
        if r["direction"] not in ("fwd", "bwd", "both"):
            raise LexiconError(f"context.csv, row {row}, field 'direction': {r['direction']!r}")
        for lang in _langs("context.csv", row, r["lang"]):
            lex.context.setdefault(lang, {})[tuple(tokens(r["phrase"]))] = (r["category"], r["direction"])
    for row, r in _rows("adr_cues.csv"):
        for lang in _langs("adr_cues.csv", row, r["lang"]):
            lex.adr_cues.setdefault(lang, set()).add(tuple(tokens(r["phrase"])))
    return lex
