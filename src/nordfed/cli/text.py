"""`nordfed text …`: clinical text in Nordic languages — annotate notes, list implants, count per site."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:
    from nordfed.omop.store import CDM

text_app = typer.Typer(help="Clinical text: implants, drugs and adverse reactions in Nordic notes.",
                       no_args_is_help=True)
CdmOpt = Annotated[str, typer.Option("--cdm", help="CDM URL: duckdb:///file.duckdb or postgresql://host/db?schema=cdm")]


def _out() -> Console:
    return Console()


def _err() -> Console:
    return Console(stderr=True)


def _open(url: str) -> CDM:
    from nordfed.omop.store import CDMError, open_cdm

    try:
        cdm = open_cdm(url)
    except CDMError as exc:
        _err().print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from None
    missing = {"note", "note_nlp"} - cdm.table_names()
    if missing:
        _err().print(f"[red]error:[/] {escape(url)} has no table(s) {', '.join(sorted(missing))}")
        raise typer.Exit(2)
    return cdm


def _not_annotated(url: str, site: str | None = None) -> NoReturn:
    where = f"{escape(site)}: " if site else ""
    _err().print(f"[red]error:[/] {where}no annotations in this CDM: run `nordfed text annotate --cdm "
                 f"{escape(url)}` first", highlight=False)
    raise typer.Exit(1)


def _is_url(spec: str) -> bool:
    from nordfed.omop.store import CDMError, CDMUrl

    try:
        CDMUrl.parse(spec)
    except CDMError:
        return False
    return True


def _cdm_sites(specs: list[str]) -> dict[str, str]:
    """Site name → URL from --cdm values: SITE=URL, or a bare URL named as `nordfed omop` names its columns."""
    from nordfed.cli.omop import site_names

    # a URL may hold "=" itself (postgresql://h/db?schema=s): a value that parses as a URL is a bare URL
    bare = [s for s in specs if _is_url(s)]
    for spec in specs:
        name, _, url = spec.partition("=")
        if spec not in bare and not (name and url and _is_url(url)):
            _err().print(f"[red]error:[/] --cdm {escape(spec)}: expected a CDM URL (duckdb:///file.duckdb, "
                         "postgresql://host/db?schema=cdm) or SITE=URL", highlight=False)
            raise typer.Exit(2)
    named = dict(zip(bare, site_names(bare), strict=True)) if bare else {}
    sites: dict[str, str] = {}
    for spec in specs:
        name, url = (named[spec], spec) if spec in named else spec.split("=", 1)
        if name in sites:
            _err().print(f"[red]error:[/] --cdm: site {escape(name)} given twice; name the sites with SITE=URL",
                         highlight=False)
            raise typer.Exit(2)
        sites[name] = url
    return sites


@text_app.command("annotate")
def annotate_cmd(
    cdm_url: CdmOpt,
    batch: Annotated[int, typer.Option(help="notes read per query")] = 500,
    model: Annotated[Path | None, typer.Option(help="context classifier (.npz) to use instead of the rules")] = None,
) -> None:
    """Annotate every note of a site and fill note_nlp (replaces this system's rows; safe to re-run)."""
    from nordfed.omop.store import CDMError
    from nordfed.text.classifier import ContextClassifier
    from nordfed.text.pipeline import NLP_SYSTEM
    from nordfed.text.store import annotate_cdm, annotation_recorded

    clf = None
    if model is not None:
        try:
            clf = ContextClassifier.load(model)
        except (OSError, KeyError, ValueError) as exc:
            _err().print(f"[red]error:[/] cannot read model {escape(str(model))}: {escape(str(exc))}")
            raise typer.Exit(2) from None
    with _open(cdm_url) as cdm, Progress(TextColumn("[bold]annotating notes"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=_err(), transient=True) as bar:
        task = bar.add_task("notes", total=None, rate="")

        def progress(done: int, total: int) -> None:
            elapsed = bar.tasks[0].elapsed or 1e-9
            bar.update(task, completed=done, total=total, rate=f"{done / elapsed:,.0f} notes/s")

        try:
            n = annotate_cdm(cdm, batch=batch, classifier=clf, progress=progress)
        except CDMError as exc:
            _err().print(f"[red]error:[/] {escape(str(exc))}")
            raise typer.Exit(1) from None
        notes, recorded = int(cdm.scalar("SELECT count(*) FROM note")), annotation_recorded(cdm)
    _out().print(f"wrote {n:,} note_nlp rows ({NLP_SYSTEM}) from {notes:,} notes", highlight=False)
    if n == 0 and notes and recorded:
        _out().print("no findings in the notes; the run is recorded in the CDM's metadata table, so `nordfed text "
                     "implants` and `text count` answer with none", highlight=False)
    elif n == 0 and notes:
        _err().print("[yellow]warning:[/] no findings in the notes, and this CDM has no metadata table to record "
                     "the run in: `nordfed text implants` and `text count` will take it for not annotated",
                     highlight=False)


@text_app.command("implants")
def implants_cmd(
    person: Annotated[int, typer.Option("--person", help="person_id")],
    cdm_url: CdmOpt,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON instead of a table")] = False,
) -> None:
    """List the implants a patient has now (from note_nlp; run `nordfed text annotate` first)."""
    from nordfed.text.store import NotAnnotatedError, UnknownPersonError, current_implants

    with _open(cdm_url) as cdm:
        try:
            implants = current_implants(cdm, person)
        except UnknownPersonError as exc:
            _err().print(f"[red]error:[/] {escape(str(exc))}: {escape(cdm_url)}", highlight=False)
            raise typer.Exit(1) from None
        except NotAnnotatedError:
            _not_annotated(cdm_url)
    if as_json:
        typer.echo(json.dumps([i.as_dict() for i in implants], ensure_ascii=False, indent=2))
        return
    if not implants:
        _out().print(f"no current implants recorded in the notes of person {person}")
        return
    t = Table(title=f"Implants of person {person}")
    for col in ("type", "model", "MR class", "first seen", "last seen", "evidence"):
        t.add_column(col)
    colour = {"safe": "green", "conditional": "yellow", "unsafe": "red"}
    for i in implants:
        model = " ".join(x for x in (i.manufacturer, i.model) if x) or "-"
        t.add_row(i.implant_type, escape(model), f"[{colour.get(i.mr_class, 'white')}]MR {i.mr_class}[/]",
                  i.first_date.isoformat(), i.last_date.isoformat(), escape(i.snippet))
    _out().print(t)


@text_app.command("count")
def count_cmd(
    implant_type: Annotated[str, typer.Argument(help="implant type name (e.g. pacemaker) or concept id")],
    cdm: Annotated[list[str], typer.Option("--cdm", help="CDM URL (site named after its file or schema) or "
                                                      "SITE=URL; repeat per site")],
) -> None:
    """Federated count of persons with a current implant of a type, per site (small counts suppressed)."""
    from nordfed.fed.protocol import AlgorithmError, InProcessFederation
    from nordfed.text.store import NotAnnotatedError, check_annotated, implant_counts

    sites = {}
    for name, url in _cdm_sites(cdm).items():
        sites[name] = _open(url)
        try:
            check_annotated(sites[name])
        except NotAnnotatedError:
            for c in sites.values():
                c.close()
            _not_annotated(url, site=name)
    try:
        df = implant_counts(InProcessFederation.from_cdms(sites), implant_type)
    except (AlgorithmError, ValueError) as exc:
        _err().print(f"[red]error:[/] {escape(str(exc))}")
        raise typer.Exit(1) from None
    finally:
        for c in sites.values():
            c.close()
    t = Table(title=f"Persons with {implant_type}")
    t.add_column("site")
    t.add_column("persons", justify="right")
    for r in df.to_dict("records"):
        t.add_row(r["site"], "<min cell" if r["suppressed"] else str(r["persons"]))
    _out().print(t)


@text_app.command("evaluate")
def evaluate_cmd(
    seed: Annotated[int, typer.Option(help="seed of the synthetic notes (use one not used in development)")] = 1,
    persons: Annotated[int, typer.Option(help="synthetic persons per site")] = 200,
    model: Annotated[Path | None, typer.Option(help="context classifier (.npz) applied after the rules")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the full JSON report")] = False,
) -> None:
    """Score the pipeline on synthetic notes of all five sites: P/R/F1 per language and context class."""
    import datetime as dt

    import numpy as np
    import pandas as pd

    from nordfed.synth.notes import make_notes
    from nordfed.text.classifier import ContextClassifier
    from nordfed.text.evaluate import IMPLANT_KINDS, align, confusion, evaluate, predict
    from nordfed.text.lexicon import SITE_LANG
    from nordfed.text.pipeline import NoteResult, annotate

    clf = ContextClassifier.load(model) if model else None

    def run(text: str, lang: str | None) -> NoteResult:
        res = annotate(text, lang)
        return clf.apply(text, res) if clf else res

    rng = np.random.default_rng(seed)
    p = pd.DataFrame({"person_id": np.arange(1, persons + 1), "gender_concept_id": 8507, "year_of_birth": 1955,
                      "observation_period_start_date": dt.date(2015, 1, 1),
                      "observation_period_end_date": dt.date(2024, 1, 1)})
    golds, preds, pairs = [], [], []
    for k, site in enumerate(sorted(SITE_LANG)):
        notes, gold = make_notes(site, p, rng)
        notes["note_id"] += k * 10_000_000
        gold["note_id"] += k * 10_000_000
        pr, pa = predict(notes, annotate_fn=run)
        golds.append(gold)
        preds.append(pr)
        pairs.append(pa)
    gold, pred, pair = pd.concat(golds), pd.concat(preds), pd.concat(pairs)
    report = evaluate(gold, pred, pair, by="site")
    conf = confusion(align(gold, pred, IMPLANT_KINDS))
    if as_json:
        typer.echo(json.dumps({"by_site": report, "confusion": conf.to_dict()}, indent=2))
        return
    t = Table(title=f"nordfed.text on synthetic notes (seed {seed})")
    for col in ("site", "notes", "implant F1", "implant+context F1", "negated→present", "drug F1", "reaction F1",
                "ADR pair F1"):
        t.add_column(col, justify="right")
    for site, r in report.items():
        t.add_row(site, str(r["notes"]), f"{r['implant_mentions']['f1']:.3f}",
                  f"{r['implant_mentions_with_context']['f1']:.3f}",
                  f"{r['negated_reported_present']}/{r['negated_total']}", f"{r['drugs']['f1']:.3f}",
                  f"{r['reactions']['f1']:.3f}", f"{r['adr_pairs']['f1']:.3f}")
    _out().print(t)
    c = Table(title="implant context: gold (rows) × predicted (columns)")
    c.add_column("gold")
    for col in conf.columns:
        c.add_column(str(col), justify="right")
    for idx, row in conf.iterrows():
        c.add_row(str(idx), *(str(int(v)) for v in row))
    _out().print(c)


@text_app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option(help="where to save the federated model (.npz)")],
    seed: Annotated[int, typer.Option(help="seed of the synthetic training notes")] = 1,
    test_seed: Annotated[int, typer.Option(help="seed of the held-out notes the models are compared on")] = 2,
    persons: Annotated[int, typer.Option(help="synthetic persons per site")] = 200,
) -> None:
    """Simulate the five sites, train the context classifier federated, and compare it with centralised and
    site-only training on held-out notes (macro F1 over context classes)."""
    import datetime as dt

    import numpy as np
    import pandas as pd
    from sklearn.metrics import f1_score

    from nordfed.fed.protocol import InProcessFederation
    from nordfed.synth.notes import make_notes
    from nordfed.text.classifier import ContextClassifier, mention_frame
    from nordfed.text.fedtrain import fit_federated
    from nordfed.text.lexicon import SITE_LANG

    def frames(s: int) -> dict[str, pd.DataFrame]:
        rng = np.random.default_rng(s)
        p = pd.DataFrame({"person_id": np.arange(1, persons + 1), "gender_concept_id": 8507, "year_of_birth": 1955,
                          "observation_period_start_date": dt.date(2015, 1, 1),
                          "observation_period_end_date": dt.date(2024, 1, 1)})
        return {site: mention_frame(*make_notes(site, p, rng)) for site in sorted(SITE_LANG)}

    def f1(frame: pd.DataFrame, pred: np.ndarray) -> float:
        return float(f1_score(frame["label"], pred, average="macro"))

    train, test = frames(seed), frames(test_seed)
    everything = pd.concat(test.values())
    fed = fit_federated(InProcessFederation.from_frames(train))
    central = ContextClassifier.fit(pd.concat(train.values()))
    fed.save(out)
    t = Table(title="context classifier: macro F1 on held-out notes")
    for col in ("model", "all sites", "other sites' notes"):
        t.add_column(col, justify="right")
    t.add_row("rules only", f"{f1(everything, everything['rule'].to_numpy()):.4f}", "")
    t.add_row(f"federated ({fed.rounds} rounds)", f"{f1(everything, fed.predict(everything)):.4f}", "")
    t.add_row("centralised", f"{f1(everything, central.predict(everything)):.4f}", "")
    for site in sorted(train):
        others = pd.concat([f for s, f in test.items() if s != site])
        alone = ContextClassifier.fit(train[site])
        t.add_row(f"{site} only", f"{f1(everything, alone.predict(everything)):.4f}",
                  f"{f1(others, alone.predict(others)):.4f} (federated {f1(others, fed.predict(others)):.4f})")
    _out().print(t)
    _out().print(f"saved federated model to {escape(str(out))}")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the top-level app."""
    app.add_typer(text_app, name="text")
