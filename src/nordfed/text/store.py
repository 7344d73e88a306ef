"""The pipeline against a site's CDM: fill ``note_nlp``, list a patient's current implants, count per site."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd

from nordfed.fed.protocol import Federation, SiteData, algorithm
from nordfed.omop.store import CDM
from nordfed.privacy.disclosure import DisclosureError, suppress_counts
from nordfed.text.classifier import ContextClassifier
from nordfed.text.lexicon import load_lexicons
from nordfed.text.pipeline import NLP_SYSTEM, annotate, note_nlp_rows

COUNT_ALGORITHM = "nordfed.text.implant_counts"
#: literal URL: the message may go to a requester's log, and a site's real URL can hold credentials
NOT_ANNOTATED = "no annotations in this CDM: run `nordfed text annotate --cdm URL` first"
#: ``metadata.name`` of the record a `nordfed text annotate` run leaves (value_as_number: note_nlp rows written), so
#: a run that found nothing is told from none; per pipeline version, as ``note_nlp.nlp_system`` is
RUN_RECORD = f"note_nlp by {NLP_SYSTEM}"[:250]


class NotAnnotatedError(ValueError):
    """The CDM has notes but neither ``note_nlp`` rows of this pipeline nor a record of its run: any count or list
    would be a silent 0."""


class UnknownPersonError(LookupError):
    """The person_id is not in the CDM's ``person`` table."""


def check_annotated(cdm: CDM) -> None:
    """Raise :class:`NotAnnotatedError` when the site has notes but `nordfed text annotate` has not run on it.

    A run that found nothing writes no ``note_nlp`` rows; its record in ``metadata`` (:func:`annotate_cdm`) tells
    it from no run at all, so the site answers 0 rather than "run annotate first"."""
    ours = cdm.scalar("SELECT count(*) FROM (SELECT 1 FROM note_nlp WHERE nlp_system = :sys LIMIT 1) t",
                      {"sys": NLP_SYSTEM})
    if ours or not cdm.scalar("SELECT count(*) FROM (SELECT 1 FROM note LIMIT 1) t"):
        return
    if not annotation_recorded(cdm):
        raise NotAnnotatedError(NOT_ANNOTATED)


def annotation_recorded(cdm: CDM) -> bool:
    """Whether this pipeline version's `nordfed text annotate` left its record in ``metadata`` (False in a CDM
    without a ``metadata`` table)."""
    if "metadata" not in cdm.table_names():
        return False
    return bool(cdm.scalar("SELECT count(*) FROM (SELECT 1 FROM metadata WHERE name = :name LIMIT 1) t",
                           {"name": RUN_RECORD}))


def _record_run(cdm: CDM, notes: int, rows: int, day: dt.date) -> None:
    """Replace this pipeline's run record in ``metadata`` (inside the caller's transaction). A CDM without a
    ``metadata`` table gets none: its owner may not allow nordfed to add tables."""
    if "metadata" not in cdm.table_names():
        return
    cdm.execute("DELETE FROM metadata WHERE name = :name", {"name": RUN_RECORD})
    next_id = int(cdm.scalar("SELECT coalesce(max(metadata_id), 0) FROM metadata")) + 1
    cdm.insert("metadata", pd.DataFrame([{
        "metadata_id": next_id, "metadata_concept_id": 0, "metadata_type_concept_id": 0, "name": RUN_RECORD,
        "value_as_string": f"{notes} notes annotated", "value_as_number": float(rows), "metadata_date": day}]))


def parse_modifiers(s: str | None) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in (s or "").split(";") if "=" in kv)


def annotate_cdm(cdm: CDM, batch: int = 500, classifier: ContextClassifier | None = None,
                 progress: Callable[[int, int], None] | None = None, nlp_date: dt.date | None = None) -> int:
    """Annotate every note of the site and replace this NLP system's ``note_nlp`` rows in one transaction.

    Re-running gives the same rows (other systems' rows are left alone). The run is recorded in ``metadata``
    (:func:`annotation_recorded`), so one that found nothing still counts as annotated. ``progress(done, total)`` is
    called after each batch. Returns the number of rows written.
    """
    total = int(cdm.scalar("SELECT count(*) FROM note"))
    day = nlp_date or dt.date.today()
    rows: list[dict[str, Any]] = []
    done, last_id = 0, None
    while done < total:
        # keyset pagination: stable and cheap on both engines
        where = "" if last_id is None else f"WHERE note_id > {int(last_id)}"
        chunk = cdm.query(f"SELECT note_id, note_text FROM note {where} ORDER BY note_id LIMIT {int(batch)}")
        if chunk.empty:
            break
        texts = [t or "" for t in chunk["note_text"]]
        results = [annotate(t) for t in texts]
        if classifier is not None:
            results = classifier.apply_many(texts, results)
        for nid, text, res in zip(chunk["note_id"], texts, results, strict=True):
            rows.extend(note_nlp_rows(int(nid), text, res, day))
        done += len(chunk)
        last_id = int(chunk["note_id"].iloc[-1])
        if progress:
            progress(done, total)
    with cdm.transaction():
        cdm.execute("DELETE FROM note_nlp WHERE nlp_system = :sys", {"sys": NLP_SYSTEM})
        start = int(cdm.scalar("SELECT coalesce(max(note_nlp_id), 0) FROM note_nlp")) + 1
        df = pd.DataFrame(rows)
        if not df.empty:
            df.insert(0, "note_nlp_id", range(start, start + len(df)))
            cdm.insert("note_nlp", df)
        _record_run(cdm, done, len(rows), day)
    return len(rows)


@dataclass(frozen=True)
class Implant:
    """An implant a patient has now, with its evidence."""

    implant_type: str
    implant_type_concept_id: int
    model: str | None
    manufacturer: str | None
    mr_class: str
    first_date: dt.date
    last_date: dt.date
    note_id: int
    snippet: str

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["first_date"], d["last_date"] = self.first_date.isoformat(), self.last_date.isoformat()
        return d


def person_mentions(cdm: CDM, person_id: int) -> pd.DataFrame:
    df = cdm.query(
        "SELECT n.note_id, n.note_date, x.note_nlp_concept_id, x.lexical_variant, x.snippet, x.term_exists, "
        "x.term_temporal, x.term_modifiers FROM note_nlp x JOIN note n ON n.note_id = x.note_id "
        "WHERE n.person_id = :pid AND x.nlp_system = :sys ORDER BY n.note_date, x.note_nlp_id",
        {"pid": int(person_id), "sys": NLP_SYSTEM})
    mods = df["term_modifiers"].map(parse_modifiers)
    df["kind"] = mods.map(lambda m: m.get("kind"))
    df["type_id"] = mods.map(lambda m: int(m.get("implant_type_concept_id", 0) or 0))
    df["mr_class"] = mods.map(lambda m: m.get("mr_class"))
    df["note_date"] = pd.to_datetime(df["note_date"]).dt.date
    return df[df["kind"].isin(["implant", "model"])]


def current_implants(cdm: CDM, person_id: int) -> list[Implant]:
    """Implants the notes say the patient has: affirmed mentions of the patient, not negated, uncertain,
    about family, nor explanted; an implant mentioned as removed after its last affirmation is gone.

    Raises :class:`UnknownPersonError` for a person not in the CDM and :class:`NotAnnotatedError` before
    `nordfed text annotate` has run (both would otherwise look like "no implants").
    """
    if not cdm.scalar("SELECT count(*) FROM person WHERE person_id = :pid", {"pid": int(person_id)}):
        raise UnknownPersonError(f"person {person_id} is not in this CDM")
    check_annotated(cdm)
    df = person_mentions(cdm, person_id)
    lex = load_lexicons()
    out = []
    for tid, g in df.groupby("type_id"):
        if not tid:
            continue
        present = g[(g["term_exists"] == "Y") & (g["term_temporal"] == "present")]
        removed = g[(g["term_exists"] == "Y") & (g["term_temporal"] == "past")]
        if present.empty:
            continue
        last = present["note_date"].max()
        if not removed.empty and removed["note_date"].max() > last:
            continue
        models = present[present["kind"] == "model"]
        model = lex.entries[int(models["note_nlp_concept_id"].iloc[-1])] if not models.empty else None
        mr = model.mr_class if model else str(present["mr_class"].dropna().iloc[-1])
        ev = present.iloc[-1]
        out.append(Implant(lex.entries[int(tid)].name, int(tid), model.name if model else None,
                           model.manufacturer if model else None, mr or "unsafe", present["note_date"].min(), last,
                           int(ev["note_id"]), str(ev["snippet"])))
    return out


def _implant_type_id(value: str | int) -> int:
    lex = load_lexicons()
    types = lex.implant_types()
    if isinstance(value, int) or str(value).isdigit():
        cid = int(value)
        if cid in lex.entries and lex.entries[cid].kind == "implant":
            return cid
    elif str(value) in types:
        return types[str(value)].concept_id
    raise ValueError(f"unknown implant type {value!r}; known: {', '.join(sorted(types))}")


@algorithm(COUNT_ALGORITHM, "1")
def implant_counts_partial(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Persons whose notes affirm a current implant of ``params['implant_type']`` (name or concept id).

    Counts between 1 and the node's minimum cell count are suppressed (returned as None). A site whose notes
    are not annotated fails with :data:`NOT_ANNOTATED` rather than reporting 0.
    """
    if data.cdm is None:
        raise DisclosureError("refused: implant counts need the site's CDM")
    check_annotated(data.cdm)
    tid = _implant_type_id(params["implant_type"])
    n = int(data.cdm.scalar(
        "SELECT count(DISTINCT n.person_id) FROM note_nlp x JOIN note n ON n.note_id = x.note_id "
        "WHERE x.nlp_system = :sys AND x.term_exists = 'Y' AND x.term_temporal = 'present' "
        "AND x.term_modifiers LIKE :pat",
        {"sys": NLP_SYSTEM, "pat": f"%implant_type_concept_id={tid};%"}) or 0)
    total = int(data.cdm.scalar("SELECT count(*) FROM person") or 0)
    counts = suppress_counts({"persons": n}, data.policy)
    return {"implant_type_concept_id": tid, "persons": counts["persons"], "suppressed": counts["persons"] is None,
            "site_persons": total}


def implant_counts(fed: Federation, implant_type: str | int) -> pd.DataFrame:
    """Researcher side: one row per site with the (possibly suppressed) count of persons with the implant."""
    out = fed.run(COUNT_ALGORITHM, {"implant_type": implant_type})
    df = pd.DataFrame([{"site": s, **r} for s, r in out.items()])
    df["persons"] = pd.Series([r["persons"] for r in out.values()], dtype=object)  # None stays None
    return df
