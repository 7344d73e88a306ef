"""nordfed.text: language id → sentences → tokens → lexicon terms → ConText → ADR pairs → NOTE_NLP rows.

>>> res = annotate("Pasienten har ingen pacemaker. Fikk utslett av amoksicillin 500 mg.")
>>> [(m.text, m.context) for m in res.mentions]
[('pacemaker', 'negated'), ('utslett', 'present'), ('amoksicillin', 'present')]
>>> [(p.drug.text, p.reaction.text) for p in res.adr_pairs]
[('amoksicillin', 'utslett')]
"""

from __future__ import annotations

import bisect
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nordfed.text.context import ContextRules, Trigger, assert_context
from nordfed.text.langid import identify
from nordfed.text.lexicon import LEXICON_VERSION, TOKEN_RE, Lexicons, load_lexicons
from nordfed.text.match import Matcher, dose_after, matcher
from nordfed.text.sentences import split_sentences

__version__ = "1.0"
NLP_SYSTEM = f"nordfed.text {__version__} (lexicon {LEXICON_VERSION})"
SNIPPET_WINDOW = 60


@dataclass
class Mention:
    """One concept mention with its assertion context."""

    kind: str  # implant | model | drug | reaction
    concept_id: int
    start: int
    end: int
    text: str
    sentence: int
    tok_start: int
    tok_end: int
    context: str = "present"
    triggers: list[str] = field(default_factory=list)
    dose: str | None = None
    implant_type_concept_id: int | None = None
    mr_class: str | None = None

    @property
    def term_exists(self) -> str:
        return "N" if self.context in ("negated", "uncertain", "family") else "Y"

    @property
    def term_temporal(self) -> str:
        return "past" if self.context == "historical" else "present"

    def modifiers(self, extra: dict[str, Any] | None = None) -> str:
        """``key=value;…``: kind, context, negated, experiencer, certainty, then what applies."""
        c = self.context
        out = (f"kind={self.kind};context={c};negated={'true' if c == 'negated' else 'false'};"
               f"experiencer={'family' if c == 'family' else 'patient'};"
               f"certainty={'uncertain' if c == 'uncertain' else 'certain'}")
        if self.implant_type_concept_id:
            out += f";implant_type_concept_id={self.implant_type_concept_id}"
        if self.mr_class:
            out += f";mr_class={self.mr_class}"
        if self.dose:
            out += f";dose={self.dose}"
        for k, v in (extra or {}).items():
            out += f";{k}={v}"
        return out


@dataclass(frozen=True)
class AdrPair:
    drug: Mention
    reaction: Mention

    @property
    def key(self) -> tuple[int, int]:
        return (self.drug.concept_id, self.reaction.concept_id)


@dataclass
class NoteResult:
    lang: str
    mentions: list[Mention]
    adr_pairs: list[AdrPair]
    sentences: list[tuple[int, int]]


class Pipeline:
    """One language's matcher and rules (built once, reused for every note)."""

    def __init__(self, lang: str, lex: Lexicons | None = None):
        self.lang = lang
        self.lex = lex or load_lexicons()
        self.matcher: Matcher = matcher(lang) if lex is None else Matcher(lang, lex)
        self.rules = ContextRules(lang, self.lex)
        self.adr_first: dict[str, list[tuple[str, ...]]] = {}
        for cue in sorted(self.lex.adr_cues.get(lang, ()), key=len, reverse=True):
            self.adr_first.setdefault(cue[0], []).append(cue)

    def annotate(self, text: str) -> NoteResult:
        low = text.lower()
        if len(low) != len(text):  # a few characters change length when lowercased; keep offsets exact
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        sents = split_sentences(text) or [(0, len(text))]
        # tokenise sentence by sentence (findall is fast); character spans are computed only where needed
        lower: list[str] = []
        first_tok: list[int] = []
        for s0, s1 in sents:
            first_tok.append(len(lower))
            lower.extend(TOKEN_RE.findall(low, s0, s1))
        n_tok = len(lower)
        spans = _Spans(low, sents, first_tok)
        original = _Original(text, spans)

        def sentence_of(i: int) -> int:
            return max(0, bisect.bisect_right(first_tok, i) - 1)

        def bounds_of(s: int) -> tuple[int, int]:
            return first_tok[s], first_tok[s + 1] if s + 1 < len(first_tok) else n_tok

        bounds = _Bounds(bounds_of)
        entries = self.lex.entries
        mentions: list[Mention] = []
        trig_cache: dict[int, list[Trigger]] = {}
        for hit in self.matcher.find(lower, original):
            e = entries[hit.concept_id]
            a, b = spans[hit.tok_start][0], spans[hit.tok_end - 1][1]
            s = sentence_of(hit.tok_start)
            lo, hi = bounds_of(s)
            if s not in trig_cache:
                trig_cache[s] = self.rules.triggers(lower, lo, hi)
            ctx, fired = assert_context(trig_cache[s], lower, (hit.tok_start, hit.tok_end), lo, hi)
            m = Mention(e.kind, e.concept_id, a, b, text[a:b], s, hit.tok_start, hit.tok_end, ctx, fired)
            if e.kind == "model":
                m.implant_type_concept_id = e.type_concept_id
                m.mr_class = e.mr_class
            elif e.kind == "implant":
                m.implant_type_concept_id = e.concept_id
            elif e.kind == "drug":
                m.dose = dose_after(text, b)
            mentions.append(m)
        _merge_manufacturers(mentions, lower, spans, text, self.lex)
        _inherit_model_class(mentions)
        pairs = self._pair(mentions, lower, bounds)
        return NoteResult(self.lang, mentions, pairs, sents)

    def _has_cue(self, lower: list[str], lo: int, hi: int) -> bool:
        for i in range(lo, hi):
            for cue in self.adr_first.get(lower[i], ()):
                if tuple(lower[i:i + len(cue)]) == cue:
                    return True
            if lower[i].endswith(("indusert", "inducerad", "induceret", "indusoitu", "indutseeritud")):
                return True
        return False

    def _pair(self, mentions: list[Mention], lower: list[str], bounds: _Bounds) -> list[AdrPair]:
        by_sent: dict[int, list[Mention]] = {}
        for m in mentions:
            if m.kind in ("drug", "reaction"):
                by_sent.setdefault(m.sentence, []).append(m)
        pairs: list[AdrPair] = []
        for s, ms in by_sent.items():
            drugs = [m for m in ms if m.kind == "drug" and m.context not in ("negated", "family")]
            reacs = [m for m in ms if m.kind == "reaction" and m.context not in ("negated", "family")]
            if not drugs or not reacs or not self._has_cue(lower, *bounds[s]):
                continue
            for r in reacs:
                d = min(drugs, key=lambda d, r=r: min(abs(d.tok_start - r.tok_end), abs(r.tok_start - d.tok_end)))
                pairs.append(AdrPair(d, r))
        return pairs


class _Spans:
    """Character span of token ``i``, found by tokenising only that token's sentence (cached per sentence)."""

    def __init__(self, low: str, sents: list[tuple[int, int]], first_tok: list[int]):
        self.low, self.sents, self.first_tok = low, sents, first_tok
        self._cache: dict[int, list[tuple[int, int]]] = {}

    def __getitem__(self, i: int) -> tuple[int, int]:
        s = max(0, bisect.bisect_right(self.first_tok, i) - 1)
        if s not in self._cache:
            s0, s1 = self.sents[s]
            self._cache[s] = [m.span() for m in TOKEN_RE.finditer(self.low, s0, s1)]
        return self._cache[s][i - self.first_tok[s]]


class _Original:
    """Original-case tokens, sliced only when asked (the acronym check needs a few)."""

    def __init__(self, text: str, spans: _Spans):
        self.text, self.spans = text, spans

    def __getitem__(self, i: int) -> str:
        a, b = self.spans[i]
        return self.text[a:b]


class _Bounds:
    def __init__(self, fn: Callable[[int], tuple[int, int]]):
        self.fn = fn

    def __getitem__(self, s: int) -> tuple[int, int]:
        return self.fn(s)


def _merge_manufacturers(mentions: list[Mention], lower: list[str], spans: _Spans, text: str,
                         lex: Lexicons) -> None:
    """Extend a model mention leftwards over its manufacturer's name ("Medtronic Azure XT DR")."""
    for m in mentions:
        if m.kind != "model":
            continue
        for man in lex.manufacturers:
            k = len(man)
            if m.tok_start - k >= 0 and tuple(lower[m.tok_start - k:m.tok_start]) == man:
                m.tok_start -= k
                m.start = spans[m.tok_start][0]
                m.text = text[m.start:m.end]
                break


def _inherit_model_class(mentions: list[Mention]) -> None:
    """A type mention takes the MR class of a model named in the same sentence, else the type's default."""
    lex = load_lexicons()
    for m in mentions:
        if m.kind != "implant":
            continue
        model = next((x for x in mentions if x.kind == "model" and x.sentence == m.sentence
                      and x.implant_type_concept_id == m.concept_id), None)
        m.mr_class = model.mr_class if model else lex.entries[m.concept_id].mr_class


_PIPELINES: dict[str, Pipeline] = {}


def pipeline(lang: str) -> Pipeline:
    if lang not in _PIPELINES:
        _PIPELINES[lang] = Pipeline(lang)
    return _PIPELINES[lang]


def annotate(text: str, lang: str | None = None) -> NoteResult:
    """Annotate one note; the language is identified from the text unless given."""
    return pipeline(lang or identify(text)).annotate(text)


def snippet(text: str, start: int, end: int, window: int = SNIPPET_WINDOW) -> str:
    a, b = max(0, start - window), min(len(text), end + window)
    return " ".join(text[a:b].split())[:250]


def note_nlp_rows(note_id: int, text: str, res: NoteResult, nlp_date: dt.date) -> list[dict[str, Any]]:
    """CDM ``note_nlp`` rows (without note_nlp_id) for one annotated note."""
    adr_of = {id(p.reaction): p.drug for p in res.adr_pairs}
    rows = []
    for m in res.mentions:
        extra = {"lang": res.lang}
        if id(m) in adr_of:
            extra["adr_drug_concept_id"] = adr_of[id(m)].concept_id
        rows.append({
            "note_id": int(note_id),
            "snippet": snippet(text, m.start, m.end),
            "offset": str(m.start),
            "lexical_variant": m.text[:250],
            "note_nlp_concept_id": int(m.concept_id),
            "note_nlp_source_concept_id": 0,
            "nlp_system": NLP_SYSTEM,
            "nlp_date": nlp_date,
            "term_exists": m.term_exists,
            "term_temporal": m.term_temporal,
            "term_modifiers": m.modifiers(extra),
        })
    return rows
