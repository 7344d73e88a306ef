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
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

from nordfed.text.context import CLASSES, ContextRules, assert_context
from nordfed.text.langid import identify
from nordfed.text.lexicon import LEXICON_VERSION, TOKEN_RE, Lexicons, load_lexicons
from nordfed.text.match import CACHE_MAX, Matcher, dose_after, matcher
from nordfed.text.sentences import split_sentences

__version__ = "1.0"
NLP_SYSTEM = f"nordfed.text {__version__} (lexicon {LEXICON_VERSION})"
SNIPPET_WINDOW = 60


@dataclass(slots=True)
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
        out = f"kind={self.kind};{_CONTEXT_MODIFIERS.get(c) or _context_modifiers(c)}"
        if self.implant_type_concept_id:
            out += f";implant_type_concept_id={self.implant_type_concept_id}"
        if self.mr_class:
            out += f";mr_class={self.mr_class}"
        if self.dose:
            out += f";dose={self.dose}"
        for k, v in (extra or {}).items():
            out += f";{k}={v}"
        return out


def _context_modifiers(c: str) -> str:
    return (f"context={c};negated={'true' if c == 'negated' else 'false'};"
            f"experiencer={'family' if c == 'family' else 'patient'};"
            f"certainty={'uncertain' if c == 'uncertain' else 'certain'}")


_CONTEXT_MODIFIERS = {c: _context_modifiers(c) for c in CLASSES}


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
        # by last token, in the set's own order: the first match wins, as a scan over the whole set would find
        self.man_by_last: dict[str, list[tuple[str, ...]]] = {}
        for man in self.lex.manufacturers:
            if man:
                self.man_by_last.setdefault(man[-1], []).append(man)

    def annotate(self, text: str) -> NoteResult:
        low = text.lower()
        if len(low) != len(text):  # a few characters change length when lowercased; keep offsets exact
            low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
        sents = split_sentences(text) or [(0, len(text))]
        lower, first_tok = tokenise(low, sents)
        n_tok = len(lower)
        spans = _Spans(low, sents, first_tok, lower)
        entries = self.lex.entries
        mentions: list[Mention] = []
        hits = self.matcher.find_canon(self.matcher.canon_all(lower), _Original(text, spans))
        sent_of = [bisect.bisect_right(first_tok, h[0]) - 1 for h in hits]
        triggers = self.rules.note_triggers(lower, first_tok, set(sent_of))  # only where they can matter
        n_sent = len(first_tok)
        for (tok_start, tok_end, cid), s in zip(hits, sent_of, strict=True):
            e = entries[cid]
            a, b = spans.char_span(s, tok_start, tok_end)
            trig = triggers.get(s)
            if trig is None:  # nothing can change the context: skip the rule walk
                ctx, fired = "present", []
            else:
                hi = first_tok[s + 1] if s + 1 < n_sent else n_tok
                ctx, fired = assert_context(trig, lower, (tok_start, tok_end), first_tok[s], hi)
            m = Mention(e.kind, cid, a, b, text[a:b], s, tok_start, tok_end, ctx, fired)
            kind = e.kind
            if kind == "model":
                m.implant_type_concept_id = e.type_concept_id
                m.mr_class = e.mr_class
            elif kind == "implant":
                m.implant_type_concept_id = cid
            elif kind == "drug":
                m.dose = dose_after(text, b)
            mentions.append(m)
        self._merge_manufacturers(mentions, lower, spans, text)
        _inherit_model_class(mentions)
        pairs = self._pair(mentions, lower, first_tok)
        return NoteResult(self.lang, mentions, pairs, sents)

    def _merge_manufacturers(self, mentions: list[Mention], lower: list[str], spans: _Spans, text: str) -> None:
        """Extend a model mention leftwards over its manufacturer's name ("Medtronic Azure XT DR")."""
        for m in mentions:
            if m.kind != "model" or m.tok_start == 0:
                continue
            for man in self.man_by_last.get(lower[m.tok_start - 1], ()):
                k = len(man)
                if m.tok_start - k >= 0 and tuple(lower[m.tok_start - k:m.tok_start]) == man:
                    m.tok_start -= k
                    m.start = spans[m.tok_start][0]
                    m.text = text[m.start:m.end]
                    break

    def _has_cue(self, lower: list[str], lo: int, hi: int) -> bool:
        for i in range(lo, hi):
            for cue in self.adr_first.get(lower[i], ()):
                if tuple(lower[i:i + len(cue)]) == cue:
                    return True
            if lower[i].endswith(("indusert", "inducerad", "induceret", "indusoitu", "indutseeritud")):
                return True
        return False

    def _pair(self, mentions: list[Mention], lower: list[str], first_tok: list[int]) -> list[AdrPair]:
        by_sent: dict[int, list[Mention]] = {}
        for m in mentions:
            if m.kind in ("drug", "reaction"):
                by_sent.setdefault(m.sentence, []).append(m)
        pairs: list[AdrPair] = []
        for s, ms in by_sent.items():
            drugs = [m for m in ms if m.kind == "drug" and m.context not in ("negated", "family")]
            reacs = [m for m in ms if m.kind == "reaction" and m.context not in ("negated", "family")]
            hi = first_tok[s + 1] if s + 1 < len(first_tok) else len(lower)
            if not drugs or not reacs or not self._has_cue(lower, first_tok[s], hi):
                continue
            for r in reacs:
                d = min(drugs, key=lambda d, r=r: min(abs(d.tok_start - r.tok_end), abs(r.tok_start - d.tok_end)))
                pairs.append(AdrPair(d, r))
        return pairs


class _ChunkTokens(dict):
    """Chunk of text -> its tokens. Tokens never span white space, so a note's tokens are those of its pieces
    between spaces; most pieces recur, so tokenising is mostly ``str.split`` and dict lookups."""

    def __missing__(self, chunk: str) -> tuple[str, ...]:
        out = self[chunk] = tuple(TOKEN_RE.findall(chunk))
        return out


_CHUNK_TOKENS = _ChunkTokens()


def tokenise(low: str, sents: list[tuple[int, int]]) -> tuple[list[str], list[int]]:
    """Tokens of the lowercased note ``low`` sentence by sentence (``TOKEN_RE``), and each sentence's first token."""
    if len(_CHUNK_TOKENS) > CACHE_MAX:
        _CHUNK_TOKENS.clear()
    tokens_of = _CHUNK_TOKENS.__getitem__
    lower: list[str] = []
    first_tok: list[int] = []
    for s0, s1 in sents:
        first_tok.append(len(lower))
        # pieces between single spaces: str.split(" ") is cheaper than splitting on all white space, and a piece
        # holding a line break is tokenised (and cached) like any other
        lower.extend(chain.from_iterable(map(tokens_of, low[s0:s1].split(" "))))
    return lower, first_tok


class _Spans:
    """Character span of token ``i``. Only mention tokens need one, so offsets are found by walking that token's
    sentence with ``str.find`` from its start (resumed where the last walk in the sentence stopped): a token is the
    next occurrence of its text, because only white space and ``_`` lie between tokens."""

    def __init__(self, low: str, sents: list[tuple[int, int]], first_tok: list[int], lower: list[str]):
        self.low, self.sents, self.first_tok, self.lower = low, sents, first_tok, lower
        self._starts: dict[int, list[int]] = {}  # sentence -> char starts of its first tokens

    def __getitem__(self, i: int) -> tuple[int, int]:
        return self.char_span(bisect.bisect_right(self.first_tok, i) - 1, i, i + 1)

    def char_span(self, s: int, i: int, j: int) -> tuple[int, int]:
        """From the start of token ``i`` (in sentence ``s``) to the end of token ``j - 1``."""
        first_tok, lower = self.first_tok, self.lower
        f = first_tok[s]
        last = j - 1
        if s + 1 < len(first_tok) and last >= first_tok[s + 1]:  # a term running into the next sentence
            return self.char_span(s, i, i + 1)[0], self[last][1]
        starts = self._starts.get(s)
        if starts is None:
            starts = self._starts[s] = []
        if last - f >= len(starts):
            find = self.low.find
            k0 = f + len(starts)
            pos = starts[-1] + len(lower[k0 - 1]) if starts else self.sents[s][0]
            for k in range(k0, j):
                pos = find(lower[k], pos)
                starts.append(pos)
                pos += len(lower[k])
        return starts[i - f], starts[last - f] + len(lower[last])


class _Original:
    """Original-case tokens, sliced only when asked (the acronym check needs a few)."""

    def __init__(self, text: str, spans: _Spans):
        self.text, self.spans = text, spans

    def __getitem__(self, i: int) -> str:
        a, b = self.spans[i]
        return self.text[a:b]


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


_MODIFIERS: dict[tuple[Any, ...], str] = {}


def note_nlp_rows(note_id: int, text: str, res: NoteResult, nlp_date: dt.date) -> list[dict[str, Any]]:
    """CDM ``note_nlp`` rows (without note_nlp_id) for one annotated note."""
    adr_of = {id(p.reaction): p.drug for p in res.adr_pairs}
    nid, lang_mod = int(note_id), f";lang={res.lang}"
    rows = []
    for m in res.mentions:
        # what m.modifiers({"lang": ..., "adr_drug_concept_id": ...}) gives; few distinct ones, so cached
        key = (m.kind, m.context, m.implant_type_concept_id, m.mr_class, m.dose)
        mods = _MODIFIERS.get(key)
        if mods is None:
            if len(_MODIFIERS) > CACHE_MAX:
                _MODIFIERS.clear()
            mods = _MODIFIERS[key] = m.modifiers()
        mods += lang_mod
        drug = adr_of.get(id(m))
        if drug is not None:
            mods += f";adr_drug_concept_id={drug.concept_id}"
        rows.append({
            "note_id": nid,
            "snippet": snippet(text, m.start, m.end),
            "offset": str(m.start),
            "lexical_variant": m.text[:250],
            "note_nlp_concept_id": int(m.concept_id),
            "note_nlp_source_concept_id": 0,
            "nlp_system": NLP_SYSTEM,
            "nlp_date": nlp_date,
            "term_exists": m.term_exists,
            "term_temporal": m.term_temporal,
            "term_modifiers": mods,
        })
    return rows
