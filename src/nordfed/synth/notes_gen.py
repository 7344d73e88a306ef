"""The note generator: renders phrase-bank templates into notes and records gold annotations as it writes.

Gold spans are recorded while the text is assembled, so offsets are exact by construction. Typos
(transposed, dropped or doubled letters) are injected into a share of the entity words after gold is
fixed, so the pipeline is scored against what a clinician meant, not what they typed.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

import numpy as np

from nordfed.synth import notes_fiet, notes_scand
from nordfed.synth.notes_drugs import ADR_PAIRS, DOSES, drug_names, inflect
from nordfed.text.lexicon import load_lexicons

LANG_BANKS = {lang: notes_scand for lang in ("nb", "sv", "da")} | {lang: notes_fiet for lang in ("fi", "et")}
NOTE_TYPES = ("admission", "discharge", "mri_referral", "medication_review")
CONTEXT_P = {"present": 0.45, "negated": 0.2, "historical": 0.12, "family": 0.1, "uncertain": 0.13}
HARD_P = 0.06  # share of implant sentences drawn from the templates rules get wrong
TYPO_P = 0.05
_SLOT = re.compile(r"\{(\w+)(?::(\w+))?\}")


@dataclass
class GoldMention:
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


@dataclass
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


def typo(word: str, rng: np.random.Generator) -> str:
    """One keyboard slip inside a word of seven or more letters (first two and last letter kept)."""
    if len(word) < 7 or not word.isalpha():
        return word
    i = int(rng.integers(2, len(word) - 2))
    op = int(rng.integers(3))
    if op == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if op == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


class Generator:
    """Writes notes for one language."""

    def __init__(self, lang: str, rng: np.random.Generator):
        self.lang, self.rng = lang, rng
        self.bank = LANG_BANKS[lang]
        self.implant_ids, self.drug_ids, self.reaction_ids, self.models = _ids()
        self.text = self.bank.NOTE_TEXT[lang]
        self.case_lang = lang in ("fi", "et")

    # ------------------------------------------------------------------ helpers
    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def date(self, d: dt.date) -> str:
        if self.lang == "sv":
            return d.isoformat()
        if self.lang == "fi":
            return f"{d.day}.{d.month}.{d.year}"
        return d.strftime("%d.%m.%Y")

    def past_date(self, note_date: dt.date) -> dt.date:
        return note_date - dt.timedelta(days=int(self.rng.integers(60, 6000)))

    def _entity(self, s: str) -> str:
        if self.rng.random() < TYPO_P:
            words = s.split(" ")
            j = int(np.argmax([len(w) for w in words]))
            words[j] = typo(words[j], self.rng)
            return " ".join(words)
        return s

    # ------------------------------------------------------------------ templates
    def render(self, draft: NoteDraft, template: str, ctx: str, fills: dict[str, tuple[str, str, int] | str],
               hard: bool = False) -> None:
        """Write ``template`` with ``fills`` (slot -> text or (text, kind, concept)); record gold mentions."""
        pos, first = 0, True
        for m in _SLOT.finditer(template):
            lit = template[pos:m.start()]
            if lit:
                draft.write(lit if not first else lit[:1].upper() + lit[1:])
                first = False
            key = m.group(1) + (f":{m.group(2)}" if m.group(2) else "")
            val = fills.get(key, fills.get(m.group(1), ""))
            if isinstance(val, tuple):
                surface, kind, cid = val
                if first:
                    surface = surface[:1].upper() + surface[1:]
                start = draft.length
                draft.write(surface)
                draft.mentions.append(GoldMention(start, draft.length, surface, kind, cid, ctx, hard))
            else:
                draft.write(val[:1].upper() + val[1:] if first else val)
            first = False
            pos = m.end()
        draft.write(template[pos:])

    def implant_fill(self, itype: str, case: str) -> tuple[str, str, int]:
        forms = self.bank.IMPLANTS[self.lang][itype]
        key = case if case in forms else ("indef" if "indef" in forms else "nom")
        return self._entity(self.pick(forms[key])), "implant", self.implant_ids[itype]

    def model_fill(self, itype: str) -> tuple[str, str, int] | None:
        tid = self.implant_ids[itype]
        options = [m for m in self.models if m[1] == tid]
        if not options:
            return None
        cid, _, manufacturer, model, _ = self.pick(options)
        r = self.rng.random()
        text = f"{manufacturer} {model}" if r < 0.55 else model
        return text, "model", cid

    def person_state(self) -> PersonImplants:
        """What a patient has: implants now (with a fixed model), explanted ones, and relatives' implants."""
        types = list(self.implant_ids)
        order = [types[i] for i in self.rng.permutation(len(types))]
        k_now, k_gone, k_fam = (int(x) for x in self.rng.integers(0, 3, size=3))
        now = order[:k_now]
        models = {t: m for t in now if (m := self.model_fill(t)) is not None}
        return PersonImplants(now, order[k_now:k_now + k_gone], order[k_now + k_gone:k_now + k_gone + k_fam], models)

    def implant_sentence(self, draft: NoteDraft, note_date: dt.date, ctx: str | None = None,
                         state: PersonImplants | None = None) -> None:
        ctx = ctx or str(self.rng.choice(list(CONTEXT_P), p=list(CONTEXT_P.values())))
        types = list(self.implant_ids)
        pool = types
        if state is not None:
            # statements agree with the patient: affirmed/explanted/family mentions name what the patient
            # (or relative) has; negations name what the patient has not
            pool = {"present": state.now, "historical": state.removed, "family": state.family,
                    "negated": [t for t in types if t not in state.now], "uncertain": types}[ctx]
            if not pool:
                ctx, pool = "negated", [t for t in types if t not in state.now]
        templates = self.bank.IMPLANT_TEMPLATES[self.lang][ctx]
        hard_t = [t for t in templates if t.startswith("!")]
        easy_t = [t for t in templates if not t.startswith("!")]
        hard = bool(hard_t) and self.rng.random() < HARD_P
        template = self.pick(hard_t)[1:] if hard else self.pick(easy_t)
        itype = self.pick(pool)
        itype2 = self.pick([t for t in (pool if len(pool) > 1 else types) if t != itype])
        fills: dict[str, tuple[str, str, int] | str] = {
            "date": self.date(self.past_date(note_date)), "year": str(self.past_date(note_date).year),
            "hospital": self.pick(self.text["hospitals"]),
        }
        for slot in _SLOT.finditer(template):
            name, case = slot.group(1), slot.group(2) or ""
            key = f"{name}:{case}" if case else name
            if name == "imp":
                fills[key] = self.implant_fill(itype, case or "indef")
            elif name == "imp2":
                fills[key] = self.implant_fill(itype2, case or "indef")
            elif name == "cmp":
                fills[key] = (self.pick(self.bank.IMPLANTS[self.lang][itype]["cmp"]), "implant",
                              self.implant_ids[itype])
            elif name == "model":
                model = state.models.get(itype) if state is not None and ctx == "present" else None
                model = model or self.model_fill(itype)
                if model is None:  # a type without catalogued models: say the type instead
                    model = self.implant_fill(itype, "nom" if self.case_lang else "indef")
                fills[key] = model
        self.render(draft, template, ctx, fills, hard)

    def _drug(self, ingredient: str, case: str) -> tuple[str, str, int]:
        name = self.pick(drug_names(ingredient, self.lang))
        return self._entity(inflect(name, case, self.lang)), "drug", self.drug_ids[ingredient]

    def _reaction(self, reaction: str, case: str) -> tuple[str, str, int]:
        forms = self.bank.REACTIONS[self.lang][reaction]
        f = self.pick(forms)
        surface = f if isinstance(f, str) else f[{"nom": 0, "gen": 1, "part": 2}.get(case or "nom", 0)]
        return self._entity(surface), "reaction", self.reaction_ids[reaction]

    def drug_sentence(self, draft: NoteDraft, template: str, ingredient: str, reaction: str | None,
                      ctx_drug: str = "present", ctx_reac: str = "present") -> None:
        fills: dict[str, tuple[str, str, int] | str] = {
            "dose": self.pick(DOSES), "freq": self.pick(self.bank.FREQ[self.lang])}
        for slot in _SLOT.finditer(template):
            name, case = slot.group(1), slot.group(2) or "nom"
            key = f"{name}:{slot.group(2)}" if slot.group(2) else name
            if name == "drug":
                fills[key] = self._drug(ingredient, case)
            elif name == "reac" and reaction:
                fills[key] = self._reaction(reaction, case)
        n0 = len(draft.mentions)
        self.render(draft, template, "present", fills)
        for gm in draft.mentions[n0:]:
            gm.context = ctx_reac if gm.kind == "reaction" else ctx_drug

    def adr_sentence(self, draft: NoteDraft, positive: bool) -> None:
        ingredient = self.pick(sorted(ADR_PAIRS))
        reaction = self.pick(ADR_PAIRS[ingredient])
        if positive:
            self.drug_sentence(draft, self.pick(self.bank.ADR_TEMPLATES[self.lang]), ingredient, reaction)
            draft.adr.append((self.drug_ids[ingredient], self.reaction_ids[reaction]))
        else:
            self.drug_sentence(draft, self.pick(self.bank.ADR_NEG_TEMPLATES[self.lang]), ingredient, reaction,
                               ctx_reac="negated")

    def symptom_sentence(self, draft: NoteDraft) -> None:
        reaction = self.pick(sorted(self.reaction_ids))
        if reaction not in self.bank.REACTIONS[self.lang]:
            return
        self.drug_sentence(draft, self.pick(self.bank.SYMPTOM_TEMPLATES[self.lang]), "", reaction)

    # ------------------------------------------------------------------ notes
    def note(self, note_type: str, note_date: dt.date, state: PersonImplants | None = None) -> NoteDraft:
        d = NoteDraft()
        t, rng = self.text, self.rng
        d.write(f"{t['titles'][note_type]} {self.date(note_date)}\n")
        fillers = list(t["fillers"])
        rng.shuffle(fillers)
        fill = iter(fillers)

        def filler(k: int) -> None:
            for _ in range(k):
                d.write(next(fill, "") + " ")

        filler(int(rng.integers(3, 6)))
        n_imp = {"mri_referral": 5, "admission": 3, "discharge": 3, "medication_review": 2}[note_type]
        for _ in range(int(rng.integers(1, n_imp + 1))):
            self.implant_sentence(d, note_date, state=state)
            d.write(" ")
        filler(int(rng.integers(2, 5)))
        if note_type == "mri_referral":
            d.write(f"\n{t['implants']} ")
            for _ in range(int(rng.integers(1, 3))):
                self.implant_sentence(d, note_date, ctx="negated", state=state)
                d.write(" ")
        if rng.random() < 0.5:
            self.symptom_sentence(d)
            d.write(" ")
        n_adr = {"medication_review": 3, "discharge": 2, "admission": 1, "mri_referral": 1}[note_type]
        d.write(f"\n{t['allergy']} ")
        for _ in range(int(rng.integers(0, n_adr + 1))):
            self.adr_sentence(d, positive=rng.random() < 0.75)
            d.write(" ")
        d.write(f"\n{t['meds']}\n")
        n_med = {"medication_review": 6, "discharge": 5, "admission": 4, "mri_referral": 3}[note_type]
        for ing in rng.choice(sorted(self.drug_ids), size=int(rng.integers(2, n_med + 1)), replace=False):
            self.drug_sentence(d, self.bank.MED_LINE[self.lang], str(ing), None)
            d.write("\n")
        filler(int(rng.integers(2, 5)))
        return d
