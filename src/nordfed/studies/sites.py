"""Where a study's sites are: CDM URLs from the YAML, synthetic sites made on first use, or a hub.

Synthetic sites are written to ``<dir>/<site>.duckdb`` with their ground truth beside them and reused when the
truth JSON there records the same persons and seed; a site is written in a scratch folder first and moved into
place only when complete, so an interrupted run leaves nothing half-written.

``only`` (``study run --sites``) runs a study on a subset of its sites; the sites left out are named in the
transport line of the report and JSON, so a partial run never passes for a full one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nordfed.fed.protocol import AlgorithmError, Federation, InProcessFederation
from nordfed.omop.store import CDM, CDMError, CDMUrl, open_cdm
from nordfed.privacy.disclosure import DisclosurePolicy
from nordfed.studies.spec import PlpStudy, SpecError, SurvivalStudy, Synthetic

if TYPE_CHECKING:
    from nordfed.client.api import Client

Progress = Callable[[str], None]


class SiteChoiceError(ValueError):
    """``--sites`` names no site or a site the study does not have; the message lists the known ones."""


def choose_sites(known: Sequence[str], only: Sequence[str] | None, where: str) -> list[str]:
    """The sites of ``known`` that ``only`` names (all when None), in ``known``'s order; names match exactly or
    else case-insensitively. ``where`` says where the known names come from (for the error)."""
    if only is None:
        return list(known)
    upper = {k.upper(): k for k in known}
    names = [n.strip() for n in only if n.strip()]
    chosen = {n if n in known else upper.get(n.upper()) for n in names}
    unknown = [n for n in names if n not in known and n.upper() not in upper]
    if unknown or not names:
        what = f"unknown site(s) {', '.join(unknown)}" if unknown else "no site named"
        raise SiteChoiceError(f"--sites: {what}; {where}: {', '.join(known)}")
    return [k for k in known if k in chosen]


def without_hint(leave: Sequence[str], sites: Sequence[str]) -> str:
    """How to run the study on ``sites`` except ``leave`` ('' when none would be left)."""
    rest = [s for s in sites if s not in leave]
    return f"; to run the study without {', '.join(leave)}: --sites {','.join(rest)}" if rest else ""


def _left_out(known: Sequence[str], chosen: Sequence[str]) -> str:
    """The transport line's note on a subset run ('' for all sites)."""
    rest = [k for k in known if k not in chosen]
    return f"; only {', '.join(chosen)} (--sites), left out {', '.join(rest)}" if rest else ""


class SiteSubset(Federation):
    """Some of another federation's sites; every run names its sites, so the others never get a task (a hub
    node left out need not have started)."""

    def __init__(self, inner: Federation, sites: Sequence[str]):
        self.inner = inner
        self._sites = list(sites)

    @property
    def sites(self) -> list[str]:
        return list(self._sites)

    def run(self, name: str, params: Mapping[str, Any], sites: Sequence[str] | None = None) -> dict[str, Any]:
        return self.inner.run(name, params, self._chosen(sites))

    def aggregate(self, name: str, params: Mapping[str, Any], sites: Sequence[str] | None = None) -> Any:
        return self.inner.aggregate(name, params, self._chosen(sites))

    def _chosen(self, sites: Sequence[str] | None) -> list[str]:
        wanted = list(sites or self._sites)
        for s in wanted:
            if s not in self._sites:
                raise AlgorithmError(s, "not one of the sites chosen with --sites")
        return wanted


@dataclass
class StudySites:
    """An open federation plus what the runner may know about each site (URL, ground truth file)."""

    federation: Federation
    urls: dict[str, str] = field(default_factory=dict)
    truth: dict[str, Path] = field(default_factory=dict)
    transport: str = "in-process"
    _cdms: list[CDM] = field(default_factory=list)
    #: the study's sites (YAML sites or the collaboration's nodes) that ``--sites`` left out
    left_out: list[str] = field(default_factory=list)

    def close(self) -> None:
        for cdm in self._cdms:
            cdm.close()
        self._cdms.clear()

    def __enter__(self) -> StudySites:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def duckdb_url(path: Path) -> str:
    return f"duckdb:///{path.resolve()}"


def _up_to_date(truth: Path, site: str, syn: Synthetic) -> bool:
    try:
        doc = json.loads(truth.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    return doc.get("site") == site and doc.get("persons") == syn.persons and doc.get("seed") == syn.seed


def synthesise(syn: Synthetic, folder: Path, progress: Progress | None = None) -> dict[str, str]:
    """Make (or reuse) the synthetic sites; returns site -> DuckDB URL."""
    from nordfed.synth import write_site

    folder.mkdir(parents=True, exist_ok=True)
    urls = {}
    for site in syn.sites:
        db = folder / f"{site.lower()}.duckdb"
        truth = db.with_suffix(".truth.json")
        if db.exists() and _up_to_date(truth, site, syn):
            urls[site] = duckdb_url(db)
            continue
        if progress:
            progress(f"synthesising {site}: {syn.persons} persons (seed {syn.seed})")
        scratch = Path(tempfile.mkdtemp(prefix=f".{site.lower()}-", dir=folder))
        try:
            tmp_db = scratch / db.name
            write_site(site, syn.persons, syn.seed, duckdb_url(tmp_db), notes=False)
            for old in folder.glob(f"{site.lower()}.*"):  # stale files of other settings
                old.unlink()
            truth.unlink(missing_ok=True)
            # the database last: its presence with a matching truth file marks the site complete
            for f in sorted(scratch.iterdir(), key=lambda p: p.suffix == ".duckdb"):
                os.replace(f, folder / f.name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        urls[site] = duckdb_url(db)
    return urls


def _relative_to_spec(spec: PlpStudy | SurvivalStudy, url: str) -> str:
    """A DuckDB URL with a relative path is relative to the YAML's folder, as the study's other paths are."""
    location = CDMUrl.parse(url)
    if location.engine != "duckdb" or location.target == ":memory:" or Path(location.target).is_absolute():
        return url
    return f"duckdb:///{spec.resolve(location.target).resolve()}" + (f"?{url.split('?', 1)[1]}" if "?" in url else "")


def open_sites(spec: PlpStudy | SurvivalStudy, hub: str | None = None, collaboration: int | None = None,
               progress: Progress | None = None, only: Sequence[str] | None = None) -> StudySites:
    """The study's federation: through ``hub`` if given, else its ``sites`` or ``synthetic`` section; ``only``
    restricts it to those sites (:class:`SiteChoiceError` if it names others)."""
    if hub is not None:
        return _hub_sites(hub, collaboration, spec.name, spec.description or None, only)
    if spec.synthetic is not None:
        known = spec.synthetic.sites
        chosen = choose_sites(known, only, f"the study's sites (synthetic.sites of {spec.source})")
        # only the chosen sites are made: a left-out site costs nothing
        syn = spec.synthetic.model_copy(update={"sites": chosen})
        urls = synthesise(syn, spec.resolve(spec.synthetic.dir), progress)
    elif spec.sites:
        known = list(spec.sites)
        chosen = choose_sites(known, only, f"the study's sites (sites: of {spec.source})")
        urls = {site: _relative_to_spec(spec, spec.sites[site]) for site in chosen}
    else:
        raise ValueError(f"{spec.source}: the study names no sites (give sites:, synthetic: or --hub)")
    policy = DisclosurePolicy(min_cell_count=spec.disclosure.min_cell_count,
                              exact_event_times=spec.disclosure.exact_event_times)
    cdms: dict[str, CDM] = {}
    try:
        for site, url in urls.items():
            try:
                cdms[site] = open_cdm(url)
            except (CDMError, OSError) as exc:  # a wrong path in the YAML: a spec error (exit 2), like a bad field
                raise SpecError(spec.source, [f"sites.{site}: cannot open {url}: {exc}"]) from exc
    except BaseException:
        for c in cdms.values():
            c.close()
        raise
    truth = {}
    for site, url in urls.items():
        try:
            from nordfed.synth.writer import truth_path_for

            path = truth_path_for(url)
        except CDMError:
            continue
        if path.exists():
            truth[site] = path
    return StudySites(InProcessFederation.from_cdms(cdms, policy), urls, truth,
                      "in-process" + _left_out(known, chosen), list(cdms.values()),
                      left_out=[k for k in known if k not in chosen])


def _hub_sites(hub: str, collaboration: int | None, study: str, description: str | None,
               only: Sequence[str] | None) -> StudySites:
    """Every task of the run is tagged with a hub study of the organizations of the chosen nodes (created on first
    use, see :func:`hub_study_name`); a chosen node that never started fails the run before the study is made."""
    from nordfed.client.api import Client, hub_base_url
    from nordfed.client.federation import HubFederation

    if collaboration is None:
        raise ValueError("--hub needs --collaboration (the collaboration id whose nodes run the study)")
    try:
        client = Client.from_state()
    except FileNotFoundError as exc:
        raise ValueError(str(exc)) from None
    if client.hub_url != hub_base_url(hub):  # the client keeps the same form of the URL
        raise ValueError(f"logged in to {client.hub_url}, not {hub}; run `nordfed login --hub {hub}` first")
    nodes = client.nodes(collaboration)
    known = [n["name"] for n in nodes]
    chosen = choose_sites(known, only, f"the nodes of collaboration {collaboration}")
    _require_keys(nodes, chosen)
    found = _hub_study(client, collaboration, hub_study_name(study, chosen, known), description, nodes, chosen)
    fed = HubFederation(client, collaboration, study_id=found["id"])
    transport = f"hub {hub}, collaboration {collaboration}, study {found['name']} (id {found['id']})"
    # an organization may have more nodes than those chosen: the subset keeps its others out
    return StudySites(fed if fed.sites == chosen else SiteSubset(fed, chosen),
                      transport=transport + _left_out(known, chosen), left_out=[k for k in known if k not in chosen])


#: the hub's longest name (``nordfed.hub.schemas.Name``)
HUB_NAME_MAX = 200


def hub_study_name(name: str, chosen: Sequence[str], known: Sequence[str]) -> str:
    """The hub study of a run: the YAML's ``name`` on all the collaboration's nodes, ``name on DK,SE`` on some.

    A hub study names the organizations taking part, so a run on other sites is another study: ``--sites DK,SE``
    after a full run (or before it) must neither list FI's organization as taking part nor have the full run's
    study narrowed under the tasks it already holds."""
    if list(chosen) == list(known):
        return name
    named = f"{name} on {','.join(chosen)}"
    if len(named) <= HUB_NAME_MAX:
        return named
    # too long for the hub (many sites): the same sites always give the same name
    digest = hashlib.sha256(",".join(chosen).encode()).hexdigest()[:12]
    return f"{name[:HUB_NAME_MAX - 40]} on {len(chosen)} sites {digest}"


def _hub_study(client: Client, collaboration: int, name: str, description: str | None,
               nodes: Sequence[Mapping[str, Any]], chosen: Sequence[str]) -> dict[str, Any]:
    """The collaboration's study called ``name`` for the organizations of the ``chosen`` nodes, made when missing.

    A study of that name for other organizations is refused, not reused nor changed: reusing it would list
    organizations that take no part (or miss some that do), and changing it would rewrite the membership its
    earlier tasks ran under. Organizations without a node in the collaboration run none of its tasks, so a study
    that also lists them (``study create`` takes all of the collaboration's by default) is the same study here.
    """
    org_of = {n["name"]: n["organization_id"] for n in nodes}
    wanted = sorted({org_of[s] for s in chosen})
    found = client.ensure_study(collaboration, name, description, organization_ids=wanted)
    with_nodes = set(org_of.values())
    has = sorted(set(found["organization_ids"]) & with_nodes)
    if has != wanted:
        raise ValueError(f"hub study {name!r} (id {found['id']}) of collaboration {collaboration} is for other "
                         f"organizations than this run's sites: {_difference(has, wanted, nodes)}; a hub study is "
                         "not reused for other organizations: rename the study (name: in its YAML), or have the "
                         "study's creator or a collaboration admin change its organizations")
    return found


def _difference(has: Sequence[int], wanted: Sequence[int], nodes: Sequence[Mapping[str, Any]]) -> str:
    """What the study lacks and what it has beyond the run, its organizations named by their nodes, as the user
    knows them."""
    def named(orgs: list[int]) -> str:
        return ", ".join(f"{'+'.join(n['name'] for n in nodes if n['organization_id'] == o)}'s (organization {o})"
                         for o in orgs)

    parts = []
    missing = [o for o in wanted if o not in has]
    if missing:
        parts.append(f"it lacks {named(missing)}")
    extra = [o for o in has if o not in wanted]
    if extra:
        parts.append(f"it has {named(extra)}, which the run leaves out")
    return " and ".join(parts)


def _require_keys(nodes: list[dict[str, Any]], chosen: list[str]) -> None:
    """Fail before the first task if a chosen node never started (it has no keys to seal the task input to)."""
    keyless = [n["name"] for n in nodes if n["name"] in chosen and not n.get("encryption_key")]
    if keyless:
        what = (f"node {keyless[0]} has not published keys yet (has it ever started?)" if len(keyless) == 1 else
                f"nodes {', '.join(keyless)} have not published keys yet (have they ever started?)")
        raise ValueError(what + without_hint(keyless, chosen))
