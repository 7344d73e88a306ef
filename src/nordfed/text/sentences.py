"""Sentence splitting that respects clinical abbreviations, decimals and dates."""

from __future__ import annotations

import re

_ABBREV = {
    "bl", "f", "eks", "ca", "dvs", "pga", "evt", "mm", "nr", "kl", "ifm", "mht", "t", "ex", "sk", "d", "s", "a",
    "esim", "ns", "jne", "yms", "tms", "n", "klo", "mg", "vs", "nt", "jm", "u", "dr", "st", "prof", "tlf", "ti",
    "to", "fre", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "okt", "nov", "des", "dec", "dets",
}
# A boundary is a run of line breaks, or the white space after a stop when text follows. The pattern starts with a
# character class so the regex engine skips ahead to candidates (5x faster than a leading look-behind); the stop it
# consumes is never part of a boundary. Group 1 marks the only boundaries an abbreviation or a number may veto (no
# line break in the white space), group 2 the other ones after a stop.
_BOUNDARY = re.compile(r"[.!?\n](?:(?<=\n)\n*|(?<=[.!?])(?:([^\S\n]+)|(\s+))(?=\S))")
_LAST_WORD = re.compile(r"([^\W\d_]+)\.$")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        vetoable = m.lastindex == 1
        end, nxt_at = m.span()
        if m.lastindex:
            end += 1  # keep the stop in the sentence
        # a capital after the stop always starts a sentence; otherwise an abbreviation or a number may go on
        if vetoable and not text[nxt_at].isupper() and _continues(text, start, end, text[nxt_at]):
            continue
        # after a stop the next sentence starts with text, so only a run of line breaks needs the slow check
        if end > start and (not text[start].isspace() or not text[start:end].isspace()):
            spans.append((start, end))
        start = nxt_at
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans


def _continues(text: str, start: int, end: int, nxt: str) -> bool:
    """Whether the stop just before ``end`` belongs to an abbreviation or a number ("bl.a.", "2. 5")."""
    tail = text[max(start, end - 24):end]  # only the last word matters; keep this O(1) per boundary
    last = _LAST_WORD.search(tail)
    if last and (last.group(1).lower() in _ABBREV or len(last.group(1)) == 1):
        return True
    return len(tail) >= 2 and tail[-2].isdigit() and nxt.isdigit()
