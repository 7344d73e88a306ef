"""Inflected forms of lexicon words, extracted once from simplemma's dictionaries into package data.

Loading simplemma's Finnish or Estonian dictionary takes seconds to tens of seconds, for a few hundred
forms we need; so ``python -m nordfed.text.inflections`` writes ``lexicons/inflections.csv`` (lang, form,
lemma) for every form whose lemma is a lexicon word, and the matcher reads that small table instead.
Re-run it after changing the lexicons.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from importlib import resources
from pathlib import Path

from nordfed.text.lexicon import LANGS, load_lexicons


def build(path: Path | None = None) -> int:
    """Write the inflection table; returns the number of forms written."""
    from simplemma.strategies.dictionaries.dictionary_factory import _load_dictionary_from_disk

    lex = load_lexicons()
    out = path or Path(str(resources.files("nordfed.text") / "lexicons" / "inflections.csv"))
    rows: list[tuple[str, str, str]] = []
    for lang in LANGS:
        vocab = {w for t in lex.terms[lang] for w in t if len(w) >= 4 and w.isalpha()}
        for form_b, lemma_b in _load_dictionary_from_disk(lang).items():
            form, lemma = form_b.decode().lower(), lemma_b.decode().lower()
            if lemma in vocab and form != lemma:
                rows.append((lang, form, lemma))
    rows.sort()
    with open(out, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["lang", "form", "lemma"])
        w.writerows(rows)
    return len(rows)


@lru_cache(maxsize=1)
def inflections() -> dict[str, dict[str, str]]:
    """lang -> inflected form -> lexicon word."""
    out: dict[str, dict[str, str]] = {lang: {} for lang in LANGS}
    path = resources.files("nordfed.text") / "lexicons" / "inflections.csv"
    if not path.is_file():
        return out
    with path.open(encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            out[r["lang"]][r["form"]] = r["lemma"]
    return out


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    print(f"wrote {build()} inflected forms")
