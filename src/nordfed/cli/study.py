"""`nordfed study`: run a ready-made study from its YAML (PLP or survival), validate study files, score a site's
patients with a PLP study's model (`study score`: the MDT list, at the site), and manage hub studies (a named
subset of a collaboration's organizations that tasks belong to: create, list, show).

`study run --sites DK,SE` runs on only those sites (YAML sites or hub nodes), e.g. to go on without a site too
small for the study. Through a hub (`study run --hub`) every task of the run is tagged with a hub study of the
organizations of the nodes taking part: named after the YAML's ``name`` on all the collaboration's nodes and
``name on DK,SE`` with `--sites DK,SE` (created on first use, reused afterwards; a study of that name for other
organizations is refused).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

study_app = typer.Typer(help="Run ready-made studies (PLP, survival) described by a YAML file; score a site's "
                             "patients with a PLP study's model; manage hub studies.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> None:
    # escaped: messages quote names from YAMLs and the hub, where "[x]" would be taken for rich markup and dropped
    Console(stderr=True).print(f"[red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@study_app.command("validate-spec")
def validate_spec(
    files: Annotated[list[Path], typer.Argument(help="study YAML file(s)", show_default=False)],
) -> None:
    """Check study YAML files: every problem is listed with the file and the field."""
    from nordfed.studies.spec import SpecError, load_spec

    bad = 0
    for f in files:
        try:
            spec = load_spec(f)
        except SpecError as exc:
            bad += 1
            Console(stderr=True).print(f"[red]invalid:[/] {exc}", highlight=False)
            continue
        Console().print(f"[green]ok:[/] {f} ({spec.kind} study {spec.name!r})", highlight=False)
    if bad:
        raise typer.Exit(1)


def _summary(results: dict[str, Any], html: Path, js: Path) -> None:
    con = Console()
    if results["kind"] == "plp":
        ev = results["internal"]
        lo, hi = ev["auroc_ci"]
        on = (f"{results['model']['n'] + ev['n']:,} persons; on the test part ({ev['n']:,} persons, "
              f"{ev['n_events']:,} outcomes)" if ev.get("on") == "test part" else
              f"{ev['n']:,} persons, {ev['n_events']:,} outcomes; on the training rows")
        con.print(f"[bold]{results['study']}[/]: {on}: pooled AUROC {ev['auroc']:.3f} ({lo:.3f}–{hi:.3f})")
        for site, r in ev["per_site"].items():
            ext = (results.get("external") or {}).get(site)
            ext_txt = (f", external (trained on the others) {ext['evaluation']['auroc']:.3f}"
                       if isinstance(ext, dict) and "evaluation" in ext else
                       ", external n/a (the report says why)" if isinstance(ext, dict) and "error" in ext else "")
            auc = r.get("auroc")
            con.print(f"  {site}: AUROC {auc:.3f}{ext_txt}" if auc is not None else f"  {site}: AUROC n/a")
        top = [(k, v) for k, v in results["model"]["named"].items() if k != "(Intercept)"][:8]
        con.print(f"  {results['model']['non_zero']} non-zero coefficients; largest:")
        for name, b in top:
            con.print(f"    {b:+.3f}  {name}", highlight=False)
        gt = results.get("ground_truth")
        if gt:
            con.print(f"  ground truth: AUROC fitted {gt['auroc_fitted']['pooled']['auroc']:.3f} vs generating "
                      f"{gt['auroc_truth']['pooled']['auroc']:.3f}; main risk factors recovered "
                      f"{len(gt['main_recovered'])}/{len(gt['main_factors'])}")
    else:
        km = results["km"]
        lr = km.get("logrank")
        con.print(f"[bold]{results['study']}[/]: {km['n']:,} persons"
                  + (f"; log-rank by {km['group']} chi2 {lr['chi2']:.1f} (p={lr['p_value']:.2g})" if lr else ""))
        cox = results.get("cox")
        if cox:
            for k, b in cox["coefficients"].items():
                con.print(f"    HR {k}: {2.718281828 ** b:.2f}", highlight=False)
    con.print(f"report: {html}\nnumbers: {js}")


@study_app.command("run")
def run(
    spec: Annotated[Path, typer.Argument(help="study YAML, e.g. studies/crc_1y_mortality.yaml", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="HTML report path (default reports/<name>.html); "
                                                            "the JSON of all numbers goes beside it")] = None,
    hub: Annotated[str | None, typer.Option("--hub", help="run through this hub (after `nordfed login`)")] = None,
    collaboration: Annotated[int | None, typer.Option("--collaboration", help="collaboration id (with --hub)")] = None,
    sites: Annotated[str | None, typer.Option(
        "--sites", help="run on only these sites, comma-separated (e.g. DK,SE): of the YAML's sites, or of the "
                        "collaboration's nodes with --hub; the report names the sites used and those left out",
        show_default=False)] = None,
) -> None:
    """Run a study end to end and write its HTML report and JSON."""
    from nordfed.client.api import HubError
    from nordfed.privacy.crypto import VerificationError
    from nordfed.privacy.disclosure import DisclosureError
    from nordfed.studies import SiteStopped, run_study
    from nordfed.studies.plp import STEPS as PLP_STEPS
    from nordfed.studies.sites import SiteChoiceError, without_hint
    from nordfed.studies.spec import SpecError, load_spec
    from nordfed.studies.survival import STEPS as SURVIVAL_STEPS

    hub = _hub_options(hub, collaboration)
    try:
        kind = load_spec(spec).kind
    except SpecError as exc:
        _fail(str(exc), 2)
    only = sites.split(",") if sites is not None else None
    with _progress([*(PLP_STEPS if kind == "plp" else SURVIVAL_STEPS), "report"]) as step:
        try:
            results, html, js = run_study(spec, out, hub, collaboration, step, only)
        except (SpecError, SiteChoiceError) as exc:
            _fail(str(exc), 2)
        except SiteStopped as exc:
            what = "refused" if exc.refused else "failed"  # refusal messages say "refused: " themselves
            _fail(f"site {exc.site} {what}: {exc.message.removeprefix(f'{what}: ')}"
                  + without_hint([exc.site], exc.sites))
        except (DisclosureError, ValueError, FileNotFoundError, HubError, VerificationError) as exc:
            _fail(str(exc))  # VerificationError: a node's keys differ from those pinned (the message says what to do)
    _summary(results, html, js)


def _site_url(spec: Any, site: str) -> tuple[str, str]:
    """(site name, CDM URL) of one of the study's sites, found as `study run` finds them (a synthetic site is
    made on first use)."""
    from nordfed.omop.store import CDMError
    from nordfed.studies.sites import SiteChoiceError, open_sites
    from nordfed.studies.spec import SpecError

    err = Console(stderr=True)
    try:
        with open_sites(spec, only=[site], progress=lambda m: err.print(f"  {m}", highlight=False)) as opened:
            return next(iter(opened.urls.items()))
    except SiteChoiceError as exc:
        _fail(str(exc).replace("--sites:", "--site:", 1), 2)
    except (SpecError, CDMError, ValueError) as exc:
        _fail(str(exc), 2)
    raise AssertionError("unreachable")  # _fail raises


def _writable(path: Path | None, option: str) -> None:
    if path is not None and not path.parent.is_dir():
        _fail(f"{option}: directory {path.parent} does not exist", 2)


@study_app.command("score")
def score(
    spec: Annotated[Path, typer.Argument(help="study YAML, e.g. studies/crc_1y_mortality.yaml", show_default=False)],
    results: Annotated[Path, typer.Option("--results", help="the study's results JSON (beside its HTML report)",
                                          show_default=False)],
    cdm: Annotated[str | None, typer.Option("--cdm", help="the site's CDM URL (default: the study's --site)",
                                            show_default=False)] = None,
    site: Annotated[str | None, typer.Option(
        "--site", help="one of the study's sites (e.g. DK), used without --cdm; with --cdm it names the site",
        show_default=False)] = None,
    since: Annotated[str | None, typer.Option("--since", help="only cohort entries on or after this date "
                                                               "(YYYY-MM-DD)", show_default=False)] = None,
    at: Annotated[str | None, typer.Option("--at", help="score --person as of this date (YYYY-MM-DD), e.g. a planned "
                                                      "operation, whether or not they are in the cohort yet",
                                           show_default=False)] = None,
    person: Annotated[list[int] | None, typer.Option("--person", help="only this person id (repeatable)",
                                                     show_default=False)] = None,
    top: Annotated[int, typer.Option("--top", min=0, help="reasons per patient")] = 3,
    out: Annotated[Path | None, typer.Option("--out", help="write the list as CSV", show_default=False)] = None,
    html: Annotated[Path | None, typer.Option("--html", help="write a printable MDT list (HTML)",
                                              show_default=False)] = None,
    show: Annotated[int, typer.Option("--show", min=0, help="patients printed, highest risk first (0: all)")] = 50,
) -> None:
    """Score a site's patients with a PLP study's model (e.g. the list for the MDT meeting).

    Risk, risk group, bundle and main reasons per patient. Runs at the site on its own CDM; nothing leaves it.
    """
    import datetime as dt

    from nordfed.omop.store import CDMError, open_cdm, redacted
    from nordfed.studies.score import (
        REFERENCE,
        ResultsError,
        load_results,
        mdt_report,
        score_at,
        score_patients,
        summary_line,
        to_csv,
    )
    from nordfed.studies.spec import PlpStudy, SpecError, load_spec

    try:
        study = load_spec(spec)
    except SpecError as exc:
        _fail(str(exc), 2)
    if not isinstance(study, PlpStudy):
        _fail(f"{spec}: a {study.kind} study; only a PLP study has a model to score patients with", 2)
    try:
        res = load_results(results, study)
    except ResultsError as exc:
        _fail(str(exc), 2)
    try:
        start = dt.date.fromisoformat(since) if since is not None else None
    except ValueError:
        _fail(f"--since: {since!r} is not a date (give YYYY-MM-DD, e.g. 2022-01-01)", 2)
    try:
        when = dt.date.fromisoformat(at) if at is not None else None
    except ValueError:
        _fail(f"--at: {at!r} is not a date (give YYYY-MM-DD, e.g. 2024-03-01)", 2)
    if when is not None and (not person or start is not None):
        _fail("--at scores the persons given with --person as of that date (and takes no --since)", 2)
    _writable(out, "--out")
    _writable(html, "--html")
    if cdm is None and site is None:
        known = ", ".join(study.synthetic.sites if study.synthetic else list(study.sites or {}))
        _fail(f"give --cdm URL (the site's CDM) or --site (one of the study's sites: {known or 'none'})", 2)
    name, url = (site or "this site", cdm) if cdm is not None else _site_url(study, str(site))
    try:
        handle = open_cdm(url)
    except (CDMError, OSError) as exc:
        _fail(f"--cdm: cannot open {redacted(url)}: {exc}", 2)
    started = time.monotonic()
    try:
        with handle:
            scores = score_at(study, res, handle, person or [], when, top=top) if when is not None else \
                score_patients(study, res, handle, since=start, persons=person, top=top)
    except CDMError as exc:  # not an OMOP CDM, or one without the tables the cohort needs
        _fail(f"{redacted(url)}: {exc}", 2)
    except ValueError as exc:  # a cohort definition or setting this CDM cannot apply
        _fail(str(exc))
    elapsed = time.monotonic() - started
    _score_table(scores, show)
    con = Console()
    if scores.attrs.get("message"):
        con.print(f"[yellow]note:[/] {escape(str(scores.attrs['message']))}", highlight=False)
    bundles = res["risk_groups"]["bundles"]
    con.print(f"[bold]{escape(summary_line(scores, bundles))}[/] ({name}, {elapsed:.1f} s)", highlight=False)
    if len(scores) and top:
        con.print(f"reasons: {REFERENCE}", highlight=False, style="dim")
    if out is not None:
        con.print(f"list: {to_csv(scores, out)}", highlight=False)
    if html is not None:
        from nordfed.synth.writer import truth_path_for

        try:
            synthetic = truth_path_for(url).exists()
        except CDMError:
            synthetic = False
        what = f"site {name}" + (f", cohort entries since {start.isoformat()}" if start else "") + (
            f", scored as of {when.isoformat()}" if when else "")
        report = mdt_report(scores, res, name, synthetic, what)
        con.print(f"MDT list: {report.write(html)}", highlight=False)


def _score_table(scores: Any, show: int) -> None:
    import pandas as pd

    if scores.empty:
        return
    shown = scores if not show else scores.head(show)
    t = Table(title=f"highest risk first ({len(shown)} of {len(scores)})" if len(shown) < len(scores) else None)
    t.add_column("person", justify="right", no_wrap=True)
    t.add_column("entry", no_wrap=True)
    t.add_column("age", justify="right", no_wrap=True)
    t.add_column("sex", no_wrap=True)
    t.add_column("risk", justify="right", no_wrap=True)
    t.add_column("group", justify="right")
    t.add_column("bundle", max_width=22)  # the reasons get the rest of the width
    t.add_column("reasons (log-odds)", ratio=1)
    for r in shown.itertuples(index=False):
        reasons = "\n".join(f"{d['contribution']:+.2f} {d['name']}"
                            + (f" = {d['value']:.4g}" if d["value"] is not None else "") for d in r.reason_details)
        t.add_row(str(r.person_id), str(r.cohort_start_date), "" if pd.isna(r.age) else str(r.age), r.sex,
                  f"{100 * r.risk:.1f} %", str(r.risk_group),
                  escape(r.bundle), escape(reasons))
    Console().print(t)


@contextmanager
def _progress(steps: Sequence[str]) -> Iterator[Callable[[str], None]]:
    """Report a study's steps on stderr: rich's bar where it shows (an interactive terminal); elsewhere (piped,
    logged) the bar draws nothing, so a long run would look hung: one timestamped line per step instead."""
    err = Console(stderr=True)
    if not err.is_interactive:
        started = time.monotonic()

        def line(name: str) -> None:
            text = f"{name} ({steps.index(name) + 1}/{len(steps)})" if name in steps else f"  {name}"
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

        yield line
        print(f"[{time.strftime('%H:%M:%S')}] done in {time.monotonic() - started:.0f} s", file=sys.stderr,
              flush=True)
        return
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err, transient=True)
    with progress:
        task = progress.add_task("starting", total=len(steps))

        def bar(name: str) -> None:
            if name in steps:
                progress.update(task, completed=steps.index(name), description=name)
            else:  # sub-steps such as synthesising a site
                err.print(f"  {name}", highlight=False)

        yield bar
        progress.update(task, completed=len(steps), description="done")


def _hub_options(hub: str | None, collaboration: int | None) -> str | None:
    """``--hub`` as the client keeps it; the options that only mean something with it are refused without it."""
    from nordfed.client.api import hub_base_url

    if hub is None:
        if collaboration is not None:
            _fail("--collaboration only applies with --hub (without --hub the study runs in process on the "
                  "sites of its YAML); add --hub URL or drop --collaboration", 2)
        return None
    if collaboration is None:
        _fail("--hub needs --collaboration (the collaboration id whose nodes run the study)", 2)
    try:
        return hub_base_url(hub)
    except ValueError as exc:
        _fail(f"--hub: {exc}", 2)


def _client() -> Any:
    from nordfed.client.api import Client

    try:
        return Client.from_state()
    except FileNotFoundError as exc:
        _fail(str(exc))


def _orgs(ids: list[int]) -> str:
    return ", ".join(map(str, ids)) or "-"


@study_app.command("create")
def create(
    collaboration: Annotated[int, typer.Option("--collaboration", "-c", help="collaboration id")],
    name: Annotated[str, typer.Option("--name", help="study name (unique in the collaboration)")],
    description: Annotated[str | None, typer.Option("--description")] = None,
    organization: Annotated[list[int] | None, typer.Option(
        "--organization", "-o", help="member organization id (repeatable; default: the collaboration's all)")] = None,
) -> None:
    """Create a hub study: a subset of a collaboration's organizations that tasks can belong to."""
    from nordfed.client.api import HubError

    try:
        st = _client().create_study(collaboration, name, description, organization or None)
    except HubError as exc:
        _fail(str(exc))
    Console().print(f"study {st['id']} {st['name']!r} created in collaboration {st['collaboration_id']} "
                    f"(organizations {_orgs(st['organization_ids'])})", highlight=False)


@study_app.command("list")
def list_studies(
    collaboration: Annotated[int | None, typer.Option("--collaboration", "-c", help="only this collaboration")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List the hub studies you can see."""
    from nordfed.client.api import HubError

    try:
        rows = _client().studies(collaboration)
    except HubError as exc:
        _fail(str(exc))
    if as_json:
        Console().print_json(json.dumps(rows))
        return
    t = Table(title="studies")
    for col in ("id", "name", "collaboration", "organizations", "description"):
        t.add_column(col)
    for st in rows:
        t.add_row(str(st["id"]), st["name"], str(st["collaboration_id"]), _orgs(st["organization_ids"]),
                  st.get("description") or "")
    Console().print(t)


@study_app.command("show")
def show(
    study_id: Annotated[int, typer.Argument(help="study id", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Show a hub study: its organizations and its tasks by status."""
    from nordfed.client.api import HubError

    try:
        st = _client().study(study_id)
    except HubError as exc:
        _fail(str(exc))
    if as_json:
        Console().print_json(json.dumps(st))
        return
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(st["tasks_by_status"].items())) or "none"
    Console().print(f"[bold]study {st['id']}[/] {st['name']!r} in collaboration {st['collaboration_id']}\n"
                    f"  organizations: {_orgs(st['organization_ids'])}\n"
                    f"  description: {st.get('description') or '-'}\n"
                    f"  tasks: {st['task_count']} ({by_status})", highlight=False)


def register(app: typer.Typer) -> None:
    """Add the `study` command group to the top-level app."""
    app.add_typer(study_app, name="study")
