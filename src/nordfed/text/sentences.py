"""Sentence splitting that respects clinical abbreviations, decimals and dates."""

from __future__ import annotations

import re

_ABBREV = {
    "bl", "f", "eks", "ca", "dvs", "pga", "evt", "mm", "nr", "kl", "ifm", "mht", "t", "ex", "sk", "d", "s", "a",
    "esim", "ns", "jne", "yms", "tms", "n", "klo", "mg", "vs", "nt", "jm", "u", "dr", "st", "prof", "tlf", "ti",
    "to", "fre", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "okt", "nov", "des", "dec", "dets",
}
_BOUNDARY = re.compile(r"(?<=[.!?])\s+(?=\S)|\n+")
_LAST_WORD = re.compile(r"([^\W\d_]+)\.$")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the sentences of ``text``."""
    spans: list[tuple[int, int]] = []
    start = 0
    for m in _BOUNDARY.finditer(text):
        end = m.start()
        nxt = text[m.end():m.end() + 1]
        # a capital after the stop always starts a sentence; otherwise an abbreviation or a number may go on
        if not nxt.isupper() and "\n" not in m.group(0):
            tail = text[max(start, end - 24):end]  # only the last word matters; keep this O(1) per boundary
            last = _LAST_WORD.search(tail)
            if last and (last.group(1).lower() in _ABBREV or len(last.group(1)) == 1):
                continue
            if len(tail) >= 2 and tail[-2].isdigit() and nxt.isdigit():
                continue
        if end > start and not text[start:end].isspace():
            spans.append((start, end))
        start = m.end()
    if text[start:].strip():
        spans.append((start, len(text)))
    return spans
