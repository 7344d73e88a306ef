"""ConText-style assertion rules: negation, uncertainty, history (explanted) and experiencer (family).

Triggers come from ``lexicons/context.csv`` (per language; the Swedish and Norwegian lists start from the
published NegEx translations, Danish, Finnish and Estonian are our own). A trigger governs the mentions in
its sentence in its direction until a termination term, up to a window of tokens; a backward scope and the
history/uncertainty scopes also stop at a comma. Pseudo-triggers ("no complications after ...") consume
their tokens so the negation word inside them governs nothing.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Container
from itertools import compress
from typing import NamedTuple

from nordfed.text.lexicon import Lexicons, load_lexicons

CLASSES = ("present", "negated", "uncertain", "historical", "family")
_CAT_CLASS = {"FAM": "family", "NEG": "negated", "HIST": "historical", "UNC": "uncertain"}
_PRECEDENCE = {"family": 4, "negated": 3, "historical": 2, "uncertain": 1, "present": 0}
_WINDOW = {"NEG": 8, "FAM": 10, "HIST": 5, "UNC": 6}
_BACK_WINDOW = 4


class Trigger(NamedTuple):  # a tuple: a note creates a dozen, and a frozen dataclass is 4x slower to build
    tok_start: int
    tok_end: int
    category: str
    direction: str


class ContextRules:
    """The trigger lists of one language, indexed by first token for a longest-match scan."""

    def __init__(self, lang: str, lex: Lexicons | None = None):
        lex = lex or load_lexicons()
        self.rules = lex.context.get(lang, {})
        self.first: dict[str, list[tuple[str, ...]]] = {}
        for t in sorted(self.rules, key=len, reverse=True):
            self.first.setdefault(t[0], []).append(t)

    def note_triggers(self, lower: list[str], first_tok: list[int],
                      sentences: Container[int] | None = None) -> dict[int, list[Trigger]]:
        """sentence -> :meth:`triggers` of that sentence, for a whole note in one pass (sentence ``s`` holds tokens
        ``first_tok[s]`` up to the next sentence's first token); only ``sentences`` if given."""
        out: dict[int, list[Trigger]] = {}
        first, rules, n, free = self.first, self.rules, len(lower), 0
        # only tokens that start some trigger are visited, found in C; a trigger never crosses its sentence's end,
        # so one left-to-right scan consumes tokens exactly as a scan per sentence does
        for i in compress(range(n), map(first.__contains__, lower)):
            if i < free:
                continue
            s = bisect_right(first_tok, i) - 1
            if sentences is not None and s not in sentences:
                continue
            hi = first_tok[s + 1] if s + 1 < len(first_tok) else n
            for t in first[lower[i]]:
                k = len(t)
                if i + k <= hi and (k == 1 or tuple(lower[i:i + k]) == t):
                    cat, direction = rules[t]
                    out.setdefault(s, []).append(Trigger(i, i + k, cat, direction))
                    free = i + k
                    break
        return out

    def triggers(self, lower: list[str], lo: int, hi: int) -> list[Trigger]:
        """Longest-match triggers of the sentence ``lower[lo:hi]``, token by token (the plain form of
        :meth:`note_triggers`, which the tests hold it to)."""
        out: list[Trigger] = []
        i = lo
        while i < hi:
            cands = self.first.get(lower[i])
            if cands:
                for t in cands:
                    k = len(t)
                    if i + k <= hi and tuple(lower[i:i + k]) == t:
                        cat, direction = self.rules[t]
                        out.append(Trigger(i, i + k, cat, direction))
                        i += k - 1
                        break
            i += 1
        return out


def assert_context(
    triggers: list[Trigger], lower: list[str], span: tuple[int, int], lo: int, hi: int
) -> tuple[str, list[str]]:
    """Context class of the mention at token ``span`` inside the sentence ``[lo, hi)``, and the firing triggers."""
    best, fired = "present", []
    s, e = span
    for trig in triggers:
        cat = trig.category
        if cat not in _CAT_CLASS:
            continue
        fwd = trig.direction in ("fwd", "both") and trig.tok_end <= s
        bwd = trig.direction in ("bwd", "both") and trig.tok_start >= e
        if (fwd and _in_scope(triggers, lower, trig.tok_end, s, cat, backward=False)) or (
                bwd and _in_scope(triggers, lower, e, trig.tok_start, cat, backward=True)):
            fired.append(" ".join(lower[trig.tok_start:trig.tok_end]))
            cls = _CAT_CLASS[cat]
            best = cls if _PRECEDENCE[cls] > _PRECEDENCE[best] else best
    return best, fired


def _in_scope(triggers: list[Trigger], lower: list[str], a: int, b: int, cat: str, backward: bool) -> bool:
    """Whether nothing between token ``a`` and ``b`` (exclusive) ends the scope of a ``cat`` trigger."""
    words = [w for w in lower[a:b] if w not in (",", "-", "(", ")", ":", "/")]
    # postposed triggers ("pacemaker: nei", "tahdistinta ei ole") sit right after their term
    if len(words) >= (_BACK_WINDOW if backward else _WINDOW[cat]):
        return False
    if (backward or cat in ("HIST", "UNC")) and ("," in lower[a:b] or ";" in lower[a:b]):
        return False
    return not any(t.category == "TERM" and a <= t.tok_start < b for t in triggers)
