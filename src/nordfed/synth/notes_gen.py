"""The note generator: renders phrase-bank templates into notes and records gold annotations as it writes.

Gold spans are recorded while the text is assembled, so offsets are exact by construction. Typos
(transposed, dropped or doubled letters) are injected into a share of the entity words after gold is
fixed, so the pipeline is scored against what a clinician meant, not what they typed.

Speed: a note takes about a hundred random decisions. One numpy call per decision costs microseconds of
overhead, so decisions consume a buffered stream of uniforms (:class:`Draws`, one numpy call per block) and
templates are parsed once (:func:`compile_template`), not once per sentence.
"""

from __future__ import annotations

import datetime as dt
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import accumulate, chain
from typing import NamedTuple, TypeVar

import numpy as np

from nordfed.synth import notes_fiet, notes_scand
from nordfed.synth.notes_drugs import ADR_PAIRS, DOSES, drug_names, inflect
from nordfed.text.lexicon import load_lexicons

LANG_BANKS = {lang: notes_scand for lang in ("nb", "sv", "da")} | {lang: notes_fiet for lang in ("fi", "et")}
NOTE_TYPES = ("admission", "discharge", "mri_referral", "medication_review")
CONTEXT_P = {"present": 0.45, "negated": 0.2, "historical": 0.12, "family": 0.1, "uncertain": 0.13}
HARD_P = 0.06  # share of implant sentences drawn from the templates rules get wrong
TYPO_P = 0.05
DRAW_BLOCK = 1 << 14  # uniforms per numpy call: large enough to amortise the call, small enough for short runs
_SLOT = re.compile(r"\{(\w+)(?::(\w+))?\}")
_CONTEXTS = tuple(CONTEXT_P)
_CONTEXT_CUM = tuple(accumulate(CONTEXT_P.values()))
#: implant sentences per note (at most), ADR sentences (at most), medication lines (at most)
_N_IMP = {"mri_referral": 5, "admission": 3, "discharge": 3, "medication_review": 2}
_N_ADR = {"medication_review": 3, "discharge": 2, "admission": 1, "mri_referral": 1}
_N_MED = {"medication_review": 6, "discharge": 5, "admission": 4, "mri_referral": 3}
_REACTION_CASE = {"nom": 0, "gen": 1, "part": 2}

T = TypeVar("T")
Fill = tuple[str, str, int] | str


class Draws:
    """A buffered stream of uniforms on [0, 1) from ``rng``: same seed, same stream."""

    def __init__(self, rng: np.random.Generator, block: int = DRAW_BLOCK):
        # chained in C: no Python frame per draw, one numpy call per block
        blocks = iter(lambda: rng.random(block).tolist(), None)
        self.u: Callable[[], float] = chain.from_iterable(blocks).__next__

    def below(self, n: int) -> int:
        """Uniform integer in [0, n)."""
        return int(self.u() * n)

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.u() * len(seq))]

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        """``k`` distinct items in random order (partial Fisher-Yates: only the draws needed)."""
        pool = list(seq)
        n = len(pool)
        k = min(k, n)
        u = self.u
        for i in range(k):
            j = i + int(u() * (n - i))
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]


class Template(NamedTuple):
    """A template parsed once: ``parts`` are (literal before, slot key); ``cap`` says the first
    slot opens the sentence and takes a capital; ``slots`` are the distinct (key, name, case) to fill."""

    parts: tuple[tuple[str, str], ...]
    tail: str
    cap: bool
    slots: tuple[tuple[str, str, str], ...]


@cache
def compile_template(template: str) -> Template:
    parts, slots, seen, pos = [], [], set(), 0
    for m in _SLOT.finditer(template):
        lit = template[pos:m.start()]
        if not parts:  # the sentence opens with this literal
            lit = lit[:1].upper() + lit[1:]
        name, case = m.group(1), m.group(2) or ""
        key = f"{name}:{case}" if case else name
        parts.append((lit, key))
        if key not in seen:
            seen.add(key)
            slots.append((key, name, case))
        pos = m.end()
    return Template(tuple(parts), template[pos:], bool(parts) and not parts[0][0], tuple(slots))


class GoldMention(NamedTuple):
    start: int
    end: int
    text: str
    kind: str
    concept_id: int
    context: str
    hard: bool = False


@dataclass
class PersonImplants:
    """One patient's implant history, so that all of their notes tell the same story."""

    now: list[str]
    removed: list[str]
    family: list[str]
    models: dict[str, tuple[str, str, int]]
    absent: list[str] = field(default_factory=list)  # types the patient does not have (what negations name)


@dataclass(slots=True)
class NoteDraft:
    """Text under construction plus its gold annotations."""

    parts: list[str] = field(default_factory=list)
    length: int = 0
    mentions: list[GoldMention] = field(default_factory=list)
    adr: list[tuple[int, int]] = field(default_factory=list)

    def write(self, s: str) -> None:
        self.parts.append(s)
        self.length += len(s)

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _ids() -> tuple[dict[str, int], dict[str, int], dict[str, int], list[tuple[int, int, str, str, str]]]:
    lex = load_lexicons()
    implants = {e.name: e.concept_id for e in lex.entries.values() if e.kind == "implant"}
    drugs = {e.name: e.concept_id for e in lex.entries.values() if e.kind == "drug"}
    reactions = {e.name: e.concept_id for e in lex.entries.values() if e.kind == "reaction"}
    models = [(e.concept_id, e.type_concept_id or 0, e.manufacturer or "", e.name, e.mr_class or "")
              for e in lex.entries.values() if e.kind == "model"]
    return implants, drugs, reactions, models


def typo(word: str, draws: Draws) -> str:
    """One keyboard slip inside a word of seven or more letters (first two and last letter kept)."""
    if len(word) < 7 or not word.isalpha():
        return word
    i = 2 + draws.below(len(word) - 4)
    op = draws.below(3)
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


class Generator:
    """Writes notes for one language."""

    def __init__(self, lang: str, rng: np.random.Generator):
        self.lang = lang
        self.draws = Draws(rng)
        self.bank = LANG_BANKS[lang]
        self.implant_ids, self.drug_ids, self.reaction_ids, self.models = _ids()
        self.text = self.bank.NOTE_TEXT[lang]
        self.case_lang = lang in ("fi", "et")
        # everything that does not depend on a draw is looked up once per language, not once per sentence
        self.types = list(self.implant_ids)
        self.sorted_drugs = sorted(self.drug_ids)
        self.sorted_reactions = sorted(self.reaction_ids)
        self.adr_drugs = sorted(ADR_PAIRS)
        self.fillers = list(self.text["fillers"])
        self.implants = self.bank.IMPLANTS[lang]
        self.reactions = self.bank.REACTIONS[lang]
        self.freq = self.bank.FREQ[lang]
        self.models_by_type: dict[int, list[tuple[int, int, str, str, str]]] = {}
        for m in self.models:
            self.models_by_type.setdefault(m[1], []).append(m)
        self.implant_templates = {
            ctx: ([compile_template(t[1:]) for t in ts if t.startswith("!")],
                  [compile_template(t) for t in ts if not t.startswith("!")])
            for ctx, ts in self.bank.IMPLANT_TEMPLATES[lang].items()}
        self.adr_templates = [compile_template(t) for t in self.bank.ADR_TEMPLATES[lang]]
        self.adr_neg_templates = [compile_template(t) for t in self.bank.ADR_NEG_TEMPLATES[lang]]
        self.symptom_templates = [compile_template(t) for t in self.bank.SYMPTOM_TEMPLATES[lang]]
        self.med_line = compile_template(self.bank.MED_LINE[lang])
        self._forms: dict[tuple[str, str], list[str]] = {}
        self._drug_forms: dict[tuple[str, str], list[str]] = {}
        self.pick = self.draws.pick

    # ------------------------------------------------------------------ helpers

    def date(self, d: dt.date) -> str:
        if self.lang == "sv":
            return d.isoformat()
        if self.lang == "fi":
            return f"{d.day}.{d.month}.{d.year}"
        return f"{d.day:02d}.{d.month:02d}.{d.year}"

    def past_date(self, note_date: dt.date) -> dt.date:
        return note_date - dt.timedelta(days=60 + self.draws.below(5940))

    def _entity(self, s: str) -> str:
        if self.draws.u() < TYPO_P:
            words = s.split(" ")
            j = max(range(len(words)), key=lambda i: len(words[i]))  # the first longest word
            words[j] = typo(words[j], self.draws)
            return " ".join(words)
        return s

    # ------------------------------------------------------------------ templates
    def render(self, draft: NoteDraft, template: Template, ctx: str, fills: dict[str, Fill], hard: bool = False,
               ctx_reaction: str | None = None) -> None:
        """Write ``template`` with ``fills`` (every slot key -> text or (text, kind, concept)); record gold
        mentions (in context ``ctx``, reactions in ``ctx_reaction`` when given)."""
        parts, mentions, length, cap = draft.parts, draft.mentions, draft.length, template.cap
        for lit, key in template.parts:
            if lit:
                parts.append(lit)
                length += len(lit)
            val = fills[key]
            if isinstance(val, tuple):
                surface, kind, cid = val
                if cap:
                    surface = surface[:1].upper() + surface[1:]
                parts.append(surface)
                end = length + len(surface)
                c = ctx_reaction if ctx_reaction is not None and kind == "reaction" else ctx
                mentions.append(GoldMention(length, end, surface, kind, cid, c, hard))
                length = end
            else:
                if cap:
                    val = val[:1].upper() + val[1:]
                parts.append(val)
                length += len(val)
            cap = False
        parts.append(template.tail)
        draft.length = length + len(template.tail)

    def implant_fill(self, itype: str, case: str) -> tuple[str, str, int]:
        forms = self._forms.get((itype, case))
        if forms is None:
            by_case = self.implants[itype]
            key = case if case in by_case else ("indef" if "indef" in by_case else "nom")
            forms = self._forms[(itype, case)] = by_case[key]
        return self._entity(self.pick(forms)), "implant", self.implant_ids[itype]

    def model_fill(self, itype: str) -> tuple[str, str, int] | None:
        options = self.models_by_type.get(self.implant_ids[itype])
        if not options:
            return None
        cid, _, manufacturer, model, _ = self.pick(options)
        text = f"{manufacturer} {model}" if self.draws.u() < 0.55 else model
        return text, "model", cid

    def person_state(self) -> PersonImplants:
        """What a patient has: implants now (with a fixed model), explanted ones, and relatives' implants."""
        below = self.draws.below
        k_now, k_gone, k_fam = below(3), below(3), below(3)
        order = self.draws.sample(self.types, k_now + k_gone + k_fam)
        now = order[:k_now]
        models = {t: m for t in now if (m := self.model_fill(t)) is not None}
        return PersonImplants(now, order[k_now:k_now + k_gone], order[k_now + k_gone:], models,
                              [t for t in self.types if t not in now])

    def implant_sentence(self, draft: NoteDraft, note_date: dt.date, ctx: str | None = None,
                         state: PersonImplants | None = None) -> None:
        draws = self.draws
        if ctx is None:
            ctx = _CONTEXTS[min(bisect_right(_CONTEXT_CUM, draws.u()), len(_CONTEXTS) - 1)]
        types = self.types
        pool = types
        if state is not None:
            # statements agree with the patient: affirmed/explanted/family mentions name what the patient
            # (or relative) has; negations name what the patient has not
            pool = {"present": state.now, "historical": state.removed, "family": state.family,
                    "negated": state.absent, "uncertain": types}[ctx]
            if not pool:
                ctx, pool = "negated", state.absent
        hard_t, easy_t = self.implant_templates[ctx]
        hard = bool(hard_t) and draws.u() < HARD_P
        template = draws.pick(hard_t) if hard else draws.pick(easy_t)
        itype = draws.pick(pool)
        itype2 = ""  # a second type, drawn only when the template names one
        fills: dict[str, Fill] = {}
        for key, name, case in template.slots:
            if name == "imp":
                fills[key] = self.implant_fill(itype, case or "indef")
            elif name == "imp2":
                itype2 = itype2 or draws.pick([t for t in (pool if len(pool) > 1 else types) if t != itype])
                fills[key] = self.implant_fill(itype2, case or "indef")
            elif name == "cmp":
                fills[key] = (draws.pick(self.implants[itype]["cmp"]), "implant", self.implant_ids[itype])
            elif name == "model":
                model = state.models.get(itype) if state is not None and ctx == "present" else None
                model = model or self.model_fill(itype)
                if model is None:  # a type without catalogued models: say the type instead
                    model = self.implant_fill(itype, "nom" if self.case_lang else "indef")
                fills[key] = model
            elif name == "date":
                fills[key] = self.date(self.past_date(note_date))
            elif name == "year":
                fills[key] = str(self.past_date(note_date).year)
            elif name == "hospital":
                fills[key] = draws.pick(self.text["hospitals"])
            else:
                fills[key] = ""
        self.render(draft, template, ctx, fills, hard)

    def _drug(self, ingredient: str, case: str) -> tuple[str, str, int]:
        forms = self._drug_forms.get((ingredient, case))
        if forms is None:
            forms = self._drug_forms[(ingredient, case)] = [
                inflect(n, case, self.lang) for n in drug_names(ingredient, self.lang)]
        return self._entity(self.pick(forms)), "drug", self.drug_ids[ingredient]

    def _reaction(self, reaction: str, case: str) -> tuple[str, str, int]:
        f = self.pick(self.reactions[reaction])
        surface = f if isinstance(f, str) else f[_REACTION_CASE.get(case or "nom", 0)]
        return self._entity(surface), "reaction", self.reaction_ids[reaction]

    def drug_sentence(self, draft: NoteDraft, template: Template, ingredient: str, reaction: str | None,
                      ctx_drug: str = "present", ctx_reac: str = "present") -> None:
        fills: dict[str, Fill] = {}
        for key, name, case in template.slots:
            if name == "drug":
                fills[key] = self._drug(ingredient, case or "nom")
            elif name == "reac" and reaction:
                fills[key] = self._reaction(reaction, case or "nom")
            elif name == "dose":
                fills[key] = self.pick(DOSES)
            elif name == "freq":
                fills[key] = self.pick(self.freq)
            else:  # e.g. {reac} in a sentence about a drug alone
                fills[key] = ""
        self.render(draft, template, ctx_drug, fills, ctx_reaction=ctx_reac)

    def adr_sentence(self, draft: NoteDraft, positive: bool) -> None:
        ingredient = self.pick(self.adr_drugs)
        reaction = self.pick(ADR_PAIRS[ingredient])
        if positive:
            self.drug_sentence(draft, self.pick(self.adr_templates), ingredient, reaction)
            draft.adr.append((self.drug_ids[ingredient], self.reaction_ids[reaction]))
        else:
            self.drug_sentence(draft, self.pick(self.adr_neg_templates), ingredient, reaction, ctx_reac="negated")

    def symptom_sentence(self, draft: NoteDraft) -> None:
        reaction = self.pick(self.sorted_reactions)
        if reaction not in self.reactions:
            return
        self.drug_sentence(draft, self.pick(self.symptom_templates), "", reaction)

    # ------------------------------------------------------------------ notes
    def note(self, note_type: str, note_date: dt.date, state: PersonImplants | None = None) -> NoteDraft:
        d = NoteDraft()
        t, draws = self.text, self.draws
        below, u, write = draws.below, draws.u, d.write
        write(f"{t['titles'][note_type]} {self.date(note_date)}\n")
        n_fill = (3 + below(3), 2 + below(3), 2 + below(3))
        fill = iter(draws.sample(self.fillers, sum(n_fill)))

        def filler(k: int) -> None:
            for _ in range(k):
                write(next(fill, "") + " ")

        filler(n_fill[0])
        for _ in range(1 + below(_N_IMP[note_type])):
            self.implant_sentence(d, note_date, state=state)
            write(" ")
        filler(n_fill[1])
        if note_type == "mri_referral":
            write(f"\n{t['implants']} ")
            for _ in range(1 + below(2)):
                self.implant_sentence(d, note_date, ctx="negated", state=state)
                write(" ")
        if u() < 0.5:
            self.symptom_sentence(d)
            write(" ")
        write(f"\n{t['allergy']} ")
        for _ in range(below(_N_ADR[note_type] + 1)):
            self.adr_sentence(d, positive=u() < 0.75)
            write(" ")
        write(f"\n{t['meds']}\n")
        for ing in draws.sample(self.sorted_drugs, 2 + below(_N_MED[note_type] - 1)):
            self.drug_sentence(d, self.med_line, ing, None)
            write("\n")
        filler(n_fill[2])
        return d
