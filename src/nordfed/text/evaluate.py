"""Scoring the pipeline against gold: precision/recall/F1 per language, site and context class, and an error report.

A predicted mention matches a gold mention of the same note and concept whose span overlaps it (one-to-one,
in text order). Implant scores count type and model mentions. ADR pairs match on (note, drug, reaction).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from nordfed.text.context import CLASSES
from nordfed.text.pipeline import NoteResult, annotate

IMPLANT_KINDS = ("implant", "model")


@dataclass(frozen=True)
class PRF:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": round(self.precision, 4),
                "recall": round(self.recall, 4), "f1": round(self.f1, 4)}


def predict(notes: pd.DataFrame, lang: str | None = None,
            annotate_fn: Callable[[str, str | None], NoteResult] = annotate) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Annotate ``notes`` (note_id, note_text): (mention frame, ADR pair frame)."""
    ments, pairs = [], []
    for nid, text in zip(notes["note_id"], notes["note_text"], strict=True):
        res = annotate_fn(text, lang)
        for m in res.mentions:
            ments.append({"note_id": int(nid), "kind": m.kind, "start": m.start, "end": m.end, "text": m.text,
                          "concept_id": m.concept_id, "context": m.context, "lang": res.lang})
        for p in res.adr_pairs:
            pairs.append({"note_id": int(nid), "drug_concept_id": p.drug.concept_id,
                          "reaction_concept_id": p.reaction.concept_id})
    return (pd.DataFrame(ments, columns=["note_id", "kind", "start", "end", "text", "concept_id", "context", "lang"]),
            pd.DataFrame(pairs, columns=["note_id", "drug_concept_id", "reaction_concept_id"]).drop_duplicates())


def align(gold: pd.DataFrame, pred: pd.DataFrame, kinds: Iterable[str]) -> pd.DataFrame:
    """One row per gold or predicted mention of ``kinds``: gold_context / pred_context (None when unmatched)."""
    kinds = tuple(kinds)
    g = gold[gold["kind"].isin(kinds)].copy()
    g["start"] = g["offset"].astype(int)
    p = pred[pred["kind"].isin(kinds)]
    by_note: dict[int, list[dict]] = {}
    for rec in p.to_dict("records"):
        by_note.setdefault(int(rec["note_id"]), []).append(rec)
    rows, used = [], set()
    for rec in g.to_dict("records"):
        best = None
        for i, q in enumerate(by_note.get(int(rec["note_id"]), [])):
            key = (int(rec["note_id"]), i)
            if key in used or q["concept_id"] != rec["note_nlp_concept_id"]:
                continue
            if q["start"] < rec["end"] and rec["start"] < q["end"]:
                best = (key, q)
                break
        if best:
            used.add(best[0])
        q = best[1] if best else None
        rows.append({"note_id": rec["note_id"], "lang": rec["lang"], "concept_id": rec["note_nlp_concept_id"],
                     "gold_text": rec["lexical_variant"], "pred_text": q["text"] if q else None,
                     "gold_context": rec["context"], "pred_context": q["context"] if q else None,
                     "hard": bool(rec.get("hard", False)), "snippet": rec["snippet"]})
    for nid, qs in by_note.items():
        for i, q in enumerate(qs):
            if (nid, i) not in used:
                rows.append({"note_id": nid, "lang": q["lang"], "concept_id": q["concept_id"], "gold_text": None,
                             "pred_text": q["text"], "gold_context": None, "pred_context": q["context"],
                             "hard": False, "snippet": q["text"]})
    return pd.DataFrame(rows)


def _prf(al: pd.DataFrame, with_context: bool) -> PRF:
    if al.empty:
        return PRF(0, 0, 0)
    matched = al["gold_context"].notna() & al["pred_context"].notna()
    if with_context:
        tp = int((matched & (al["gold_context"] == al["pred_context"])).sum())
        wrong = int((matched & (al["gold_context"] != al["pred_context"])).sum())
        return PRF(tp, int(al["gold_context"].isna().sum()) + wrong, int(al["pred_context"].isna().sum()) + wrong)
    return PRF(int(matched.sum()), int(al["gold_context"].isna().sum()), int(al["pred_context"].isna().sum()))


def adr_prf(gold: pd.DataFrame, pred_pairs: pd.DataFrame, note_ids: Iterable[int] | None = None) -> PRF:
    g = gold[gold["kind"] == "adr"]
    gs = {(int(a), int(b), int(c)) for a, b, c in zip(g["note_id"], g["drug_concept_id"], g["reaction_concept_id"],
                                                      strict=True)}
    ps = {(int(a), int(b), int(c)) for a, b, c in zip(pred_pairs["note_id"], pred_pairs["drug_concept_id"],
                                                      pred_pairs["reaction_concept_id"], strict=True)}
    if note_ids is not None:
        keep = set(int(n) for n in note_ids)
        gs = {x for x in gs if x[0] in keep}
        ps = {x for x in ps if x[0] in keep}
    return PRF(len(gs & ps), len(ps - gs), len(gs - ps))


def evaluate(gold: pd.DataFrame, pred: pd.DataFrame, pairs: pd.DataFrame, by: str = "lang") -> dict:
    """Scores per language (or per ``by`` column of gold, e.g. ``site``): implant detection, implant detection
    with context, per-class context F1, drugs, reactions, ADR pairs, and gold-negated implants reported present."""
    report: dict = {}
    al = align(gold, pred, IMPLANT_KINDS)
    for lang, ga in gold.groupby(by):
        notes = set(ga["note_id"].astype(int))
        a = al[al["note_id"].isin(notes)]
        sub_pred = pred[pred["note_id"].isin(notes)]
        matched = a[a["gold_context"].notna() & a["pred_context"].notna()]
        per_class = {}
        for c in CLASSES:
            tp = int(((matched["gold_context"] == c) & (matched["pred_context"] == c)).sum())
            fp = int(((matched["gold_context"] != c) & (matched["pred_context"] == c)).sum())
            fn = int(((matched["gold_context"] == c) & (matched["pred_context"] != c)).sum())
            per_class[c] = PRF(tp, fp, fn).as_dict()
        neg = matched[matched["gold_context"] == "negated"]
        report[str(lang)] = {
            "notes": len(notes),
            "implant_mentions": _prf(a, False).as_dict(),
            "implant_mentions_with_context": _prf(a, True).as_dict(),
            "context_per_class": per_class,
            "negated_reported_present": int((neg["pred_context"] == "present").sum()),
            "negated_total": len(neg),
            "drugs": _prf(align(ga, sub_pred, ("drug",)), False).as_dict(),
            "reactions": _prf(align(ga, sub_pred, ("reaction",)), False).as_dict(),
            "adr_pairs": adr_prf(ga, pairs, notes).as_dict(),
        }
    return report


def error_report(al: pd.DataFrame, limit: int = 30) -> pd.DataFrame:
    """Missed, spurious and wrongly-asserted mentions with a kind of error column (a confusion report)."""
    err = al.copy()
    err["error"] = None
    err.loc[err["pred_context"].isna(), "error"] = "missed"
    err.loc[err["gold_context"].isna(), "error"] = "spurious"
    wrong = err["gold_context"].notna() & err["pred_context"].notna() & (err["gold_context"] != err["pred_context"])
    err.loc[wrong, "error"] = "context " + err.loc[wrong, "gold_context"] + "→" + err.loc[wrong, "pred_context"]
    return err[err["error"].notna()].head(limit) if limit else err[err["error"].notna()]


def confusion(al: pd.DataFrame) -> pd.DataFrame:
    """Gold context × predicted context counts (``missed``/``spurious`` for unmatched mentions)."""
    g = al["gold_context"].fillna("spurious")
    p = al["pred_context"].fillna("missed")
    return pd.crosstab(g, p)
