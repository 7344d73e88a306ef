"""Dictionary term matching that survives inflection, compounds and typos.

Every distinct token is mapped once (and cached) to the lexicon word it stands for: exact form, a known
inflectional suffix stripped, a form simplemma's dictionary lists for it (see :mod:`nordfed.text.inflections`),
a Finnish/Estonian stem (consonant gradation changes the last letters, so the first ``len-2`` letters are
compared), a compound whose first or last part is an implant
word, or one edit away from a lexicon word (symmetric-delete index). Term lookup is then a longest-match
walk over these canonical words, so the hot path is a few dict lookups per token.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from itertools import compress
from typing import NamedTuple

from nordfed.text.inflections import inflections
from nordfed.text.lexicon import Lexicons, load_lexicons

_SUFFIXES = {
    "nb": ("ene", "en", "et", "er", "a", "e", "n", "s", "ens", "ets", "ane", "ar"),
    "da": ("erne", "ene", "en", "et", "er", "e", "n", "s", "ens", "ets"),
    "sv": ("arna", "erna", "orna", "ar", "er", "en", "et", "n", "t", "s", "ens", "ets", "ns"),
    "fi": ("ssa", "ssä", "sta", "stä", "lla", "llä", "lta", "ltä", "lle", "ksi", "na", "nä", "a", "ä", "n",
           "iin", "ineen", "ista", "istä", "ia", "iä", "eja", "t", "en", "tta", "ttä", "ta", "tä", "kin"),
    "et": ("ga", "st", "s", "sse", "l", "lt", "le", "ks", "ni", "na", "ta", "d", "t", "i", "it", "id", "de",
           "te", "le", "ile", "ist", "is", "iga"),
}
_ACRONYM = re.compile(r"^[A-ZÆØÅÄÖ0-9-]{2,5}$")
_UNIT_RE = re.compile(r"\s*(\d+(?:[.,]\d+)?)\s*(mg|g|µg|mikrog|mcg|ie|iu|ky|tk|ml|mmol|rü)\b", re.IGNORECASE)
#: a long-running job sees ever new tokens (numbers, names); past this many the cache starts afresh
CACHE_MAX = 200_000


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


class TermHit(NamedTuple):  # a tuple: cheaper to build than a frozen dataclass
    tok_start: int
    tok_end: int  # exclusive
    concept_id: int


class Matcher:
    """Finds lexicon terms in a token sequence of one language."""

    def __init__(self, lang: str, lex: Lexicons | None = None):
        self.lang = lang
        self.lex = lex or load_lexicons()
        self.terms = self.lex.terms[lang]
        self.vocab: set[str] = {w for t in self.terms for w in t}
        self.first: dict[str, list[tuple[str, ...]]] = {}
        for t in sorted(self.terms, key=len, reverse=True):
            self.first.setdefault(t[0], []).append(t)
        self.max_len = max(len(t) for t in self.terms)
        self.acronyms = {t[0] for t in self.terms if len(t) == 1 and len(t[0]) <= 3}
        entries = self.lex.entries
        fuzzy_words = {t[0] for t, c in self.terms.items() if len(t) == 1 and entries[c].kind != "model"}
        fuzzy_words |= {w for t, c in self.terms.items() if len(t) > 1 and entries[c].kind != "model" for w in t}
        self._del: dict[str, str] = {}
        for w in sorted(fuzzy_words):
            if len(w) >= 6 and w.isalpha():
                for d in _deletes(w) | {w}:
                    self._del.setdefault(d, w)
        implant_words = [t[0] for t, c in self.terms.items()
                         if len(t) == 1 and entries[c].kind == "implant" and len(t[0]) >= 5 and t[0].isalpha()]
        self.heads = sorted({*implant_words, *(h for h in self.lex.compound_heads if h in self.vocab)},
                            key=len, reverse=True)
        self.tails = sorted(implant_words, key=len, reverse=True)
        self.prefix: dict[int, dict[str, str]] = {}
        self._del_prefix: dict[str, str] = {}
        if lang in ("fi", "et"):
            for w in sorted(self.vocab):
                if len(w) >= 7 and w.isalpha():
                    self.prefix.setdefault(len(w) - 2, {}).setdefault(w[:-2], w)
                    if w in fuzzy_words:
                        for d in _deletes(w[:-2]) | {w[:-2]}:
                            self._del_prefix.setdefault(d, w)
        self.suffixes = sorted(_SUFFIXES.get(lang, ()), key=len, reverse=True)
        self._cache = _CanonCache(self._canon)
        self.lemmas = inflections()[lang]

    # ------------------------------------------------------------------ token normalisation
    def canon(self, tok: str) -> str | None:
        """The lexicon word ``tok`` (lowercase) stands for, or None."""
        return self._cache[tok]

    def canon_all(self, lower: list[str]) -> list[str | None]:
        """:meth:`canon` of every token (a C-level map over the cache; only new tokens run Python code)."""
        if len(self._cache) > CACHE_MAX:
            self._cache.clear()
        return list(map(self._cache.__getitem__, lower))

    def _canon(self, tok: str) -> str | None:
        vocab = self.vocab
        if tok in vocab:
            return tok
        if len(tok) < 4 or not tok.isalpha():
            return None
        for suf in self.suffixes:
            if tok.endswith(suf) and len(tok) - len(suf) >= 4 and tok[: -len(suf)] in vocab:
                return tok[: -len(suf)]
        lemma = self.lemmas.get(tok)
        if lemma is not None and lemma in vocab:
            return lemma
        for k in sorted(self.prefix, reverse=True):
            if len(tok) >= k and len(tok) - k <= 7:
                hit = self.prefix[k].get(tok[:k])
                if hit is not None:
                    return hit
        fuzzy = self._fuzzy(tok)
        if fuzzy is not None:
            return fuzzy
        if len(tok) >= 8:
            for h in self.heads:
                if tok.startswith(h) and len(tok) - len(h) >= 3:
                    return h
            for t in self.tails:
                if tok.endswith(t) and len(tok) - len(t) >= 3:
                    return t
        return None

    def _fuzzy(self, tok: str) -> str | None:
        """One edit away from a lexicon word, also after an inflectional suffix or, in fi/et, in the stem."""
        if len(tok) < 6:
            return None
        forms = [tok] + [tok[: -len(s)] for s in self.suffixes if tok.endswith(s) and len(tok) - len(s) >= 6]
        for f in forms:
            for cand in (f, *_deletes(f)):
                hit = self._del.get(cand)
                if hit is not None and abs(len(hit) - len(f)) <= 1:
                    return hit
        if self._del_prefix and len(tok) >= 8:
            for k in sorted(self.prefix, reverse=True):
                if len(tok) < k or len(tok) - k > 8:
                    continue
                for cand in (tok[:k], tok[:k - 1], *_deletes(tok[:k]), *_deletes(tok[:k + 1])):
                    hit = self._del_prefix.get(cand)
                    if hit is not None and len(hit) - 2 == k:
                        return hit
        return None

    # ------------------------------------------------------------------ term lookup
    def find(self, lower: list[str], original: Sequence[str]) -> list[TermHit]:
        """Longest non-overlapping lexicon terms in the token sequence."""
        return self.find_canon(self.canon_all(lower), original)

    def find_canon(self, canon: list[str | None], original: Sequence[str]) -> list[TermHit]:
        """:meth:`find` on tokens already mapped by :meth:`canon_all`; ``original[i]`` is token i as written."""
        first, terms, acronyms = self.first, self.terms, self.acronyms
        hits: list[TermHit] = []
        n, free = len(canon), 0
        # only positions whose word starts a term are visited, found in C; ``free`` skips the tokens a hit consumed
        for i in compress(range(n), map(first.__contains__, canon)):
            if i < free:
                continue
            c = canon[i]
            for t in first[c]:
                k = len(t)
                if k == 1:
                    if c in acronyms and not _ACRONYM.match(original[i]):
                        continue
                elif i + k > n or tuple(canon[i:i + k]) != t:
                    continue
                hits.append(TermHit(i, i + k, terms[t]))
                free = i + k
                break
        return hits


class _CanonCache(dict):
    """token -> canonical lexicon word (or None), computed on first sight."""

    def __init__(self, fn: Callable[[str], str | None]):
        super().__init__()
        self.fn = fn

    def __missing__(self, tok: str) -> str | None:
        out = self[tok] = self.fn(tok)
        return out


def dose_after(text: str, pos: int) -> str | None:
    """A dose such as ``500 mg`` right after a drug mention ending at ``pos``."""
    m = _UNIT_RE.match(text, pos)
    return f"{m.group(1)} {m.group(2).lower()}" if m else None


_MATCHERS: dict[str, Matcher] = {}


def matcher(lang: str) -> Matcher:
    if lang not in _MATCHERS:
        _MATCHERS[lang] = Matcher(lang)
    return _MATCHERS[lang]
