"""One algorithm, two transports.

A federated algorithm is a *partial* that runs at each node against its own data, and a *central* that runs
at the client and asks a :class:`Federation` for partial results. Algorithms cannot tell
:class:`InProcessFederation` from the network transport: both pass inputs and results through the same wire
encoding and the same disclosure control.

>>> fed = InProcessFederation.from_frames({"DK": df_dk, "NO": df_no})   # doctest: +SKIP
>>> fed.run("nordfed.count", {"dataset": None})                        # doctest: +SKIP
{'DK': {'n': 120}, 'NO': {'n': 95}}
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import pkgutil
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from nordfed.fed import wire
from nordfed.privacy.disclosure import DisclosureError, DisclosurePolicy

if TYPE_CHECKING:
    # pandas and nacl only for annotations: the CLI and the hub import this module and should start fast
    import pandas as pd
    from nacl.public import PrivateKey

    from nordfed.omop.store import CDM

PartialFn = Callable[["SiteData", dict[str, Any]], Any]
DatasetBuilder = Callable[["CDM", dict[str, Any]], "pd.DataFrame"]


class AlgorithmError(Exception):
    """Raised at the client when a site's partial failed or was refused."""

    def __init__(self, site: str, message: str, refused: bool = False):
        super().__init__(f"{site}: {message}")
        self.site = site
        self.message = message
        self.refused = refused


@dataclass(frozen=True)
class Algorithm:
    """A registered partial: name, version and the hash of the module that implements it."""

    name: str
    version: str
    partial: PartialFn
    #: releases under differential privacy when a task asks (``params["dp"]``, :mod:`nordfed.privacy.dp`)
    dp: bool = False

    @property
    def code_hash(self) -> str:
        """sha256 of the source of the module defining the partial (what a node pins)."""
        module = sys.modules[self.partial.__module__]
        return hashlib.sha256(inspect.getsource(module).encode("utf-8")).hexdigest()

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


_REGISTRY: dict[str, Algorithm] = {}
_DATASETS: dict[str, DatasetBuilder] = {}
_loaded = False


def algorithm(name: str, version: str = "1", dp: bool = False) -> Callable[[PartialFn], PartialFn]:
    """Register a node-side partial under ``name`` (decorator); ``dp``: it honours a task's ``params["dp"]``.

    >>> @algorithm("nordfed.count")              # doctest: +SKIP
    ... def count(data, params): return {"n": len(data.frame(params.get("dataset")))}
    """

    def deco(fn: PartialFn) -> PartialFn:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.partial is not fn and existing.partial.__qualname__ != fn.__qualname__:
            raise ValueError(f"algorithm {name!r} is registered twice")
        _REGISTRY[name] = Algorithm(name=name, version=version, partial=fn, dp=dp)
        return fn

    return deco


def dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Register a builder that turns a site's CDM into an analysis table (one row per person or event)."""

    def deco(fn: DatasetBuilder) -> DatasetBuilder:
        _DATASETS[name] = fn
        return fn

    return deco


def _load_all() -> None:
    """Import built-in algorithm modules (every module of ``nordfed.fed`` and ``nordfed.text``) and plug-ins."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for pkg_name in ("nordfed.fed", "nordfed.text", "nordfed.cohorts", "nordfed.features", "nordfed.omop",
                     "nordfed.studies"):
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.walk_packages(pkg.__path__, prefix=f"{pkg_name}."):
            importlib.import_module(info.name)
    for ep in entry_points(group="nordfed.algorithms"):
        ep.load()


def get_algorithm(name: str) -> Algorithm:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown algorithm {name!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def algorithms() -> dict[str, Algorithm]:
    _load_all()
    return dict(_REGISTRY)


def get_dataset_builder(name: str) -> DatasetBuilder:
    _load_all()
    try:
        return _DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(sorted(_DATASETS))}") from None


@dataclass
class SiteData:
    """What a partial sees at a node: its site name, its data and its disclosure policy."""

    site: str
    cdm: CDM | None = None
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    policy: DisclosurePolicy = field(default_factory=DisclosurePolicy)

    def frame(self, spec: str | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """The analysis table named by ``spec``.

        ``None`` or a name picks a table handed to the site directly (simulation); a mapping
        ``{"builder": NAME, ...}`` builds one from the site's CDM with a registered dataset builder.
        """
        if spec is None or isinstance(spec, str):
            key = spec or "default"
            if key in self.frames:
                return self.frames[key]
            if spec is None and len(self.frames) == 1:
                return next(iter(self.frames.values()))
            raise KeyError(f"site {self.site} has no table {key!r}")
        if self.cdm is None:
            raise KeyError(f"site {self.site} has no CDM to build dataset {spec.get('builder')!r} from")
        builder = get_dataset_builder(str(spec["builder"]))
        return builder(self.cdm, dict(spec))


class Federation(ABC):
    """The client's view of the network: names of sites and a way to run partials at them."""

    @property
    @abstractmethod
    def sites(self) -> list[str]: ...

    @abstractmethod
    def run(
        self, name: str, params: Mapping[str, Any], sites: Sequence[str] | None = None
    ) -> dict[str, Any]:
        """Run algorithm ``name`` with ``params`` at ``sites`` (default: all); return results by site.

        Raises :class:`AlgorithmError` naming the first site that failed or refused.
        """

    @abstractmethod
    def aggregate(self, name: str, params: Mapping[str, Any], sites: Sequence[str] | None = None) -> Any:
        """The sum over ``sites`` (default: all) of algorithm ``name``'s results, and nothing else: each site masks
        its result for secure aggregation (:mod:`nordfed.privacy.secure_sum`), so no one site's numbers reach
        the caller. Every number in the results is summed; the rest must be the same at every site.

        Raises :class:`AlgorithmError` as :meth:`run` does; a site that drops out fails the whole sum.
        """


def run_partial(algo: Algorithm, data: SiteData, params_wire: bytes) -> bytes:
    """What a node does with a task input: decode, run, encode. Raises DisclosureError on refusal."""
    params = wire.decode(params_wire)
    if isinstance(params, dict) and params.get("dp") is not None and not algo.dp:
        # answering without the noise the researcher asked for would release more than she was told
        raise DisclosureError(f"refused: {algo.name} does not release under differential privacy")
    result = algo.partial(data, params)
    return wire.encode(result)


class InProcessFederation(Federation):
    """Sites as objects in one process: unit tests, simulations and benchmarks."""

    def __init__(self, sites: Mapping[str, SiteData]):
        if not sites:
            raise ValueError("a federation needs at least one site")
        self._sites = dict(sites)
        self._keys: dict[str, PrivateKey] = {}  # each site's key pair for secure aggregation

    @classmethod
    def from_frames(
        cls, frames: Mapping[str, pd.DataFrame], policy: DisclosurePolicy | None = None
    ) -> InProcessFederation:
        pol = policy or DisclosurePolicy()
        return cls({s: SiteData(site=s, frames={"default": f}, policy=pol) for s, f in frames.items()})

    @classmethod
    def from_cdms(cls, cdms: Mapping[str, CDM], policy: DisclosurePolicy | None = None) -> InProcessFederation:
        pol = policy or DisclosurePolicy()
        return cls({s: SiteData(site=s, cdm=c, policy=pol) for s, c in cdms.items()})

    @property
    def sites(self) -> list[str]:
        return list(self._sites)

    def run(
        self, name: str, params: Mapping[str, Any], sites: Sequence[str] | None = None
    ) -> dict[str, Any]:
        algo = get_algorithm(name)
        params_wire = wire.encode(dict(params))
        return {site: wire.decode(self._partial(algo, site, params_wire)) for site in sites or self.sites}

    def aggregate(self, name: str, params: Mapping[str, Any], sites: Sequence[str] | None = None) -> Any:
        # the sites mask with keys of their own as nodes do, so the in-process sum is the same arithmetic
        from nacl.public import PrivateKey

        from nordfed.privacy import secure_sum
        from nordfed.privacy.crypto import b64

        algo = get_algorithm(name)
        params_wire = wire.encode(dict(params))
        chosen = list(sites or self.sites)
        keys = {s: self._keys.setdefault(s, PrivateKey.generate()) for s in chosen if s in self._sites}
        peers = {s: b64(bytes(k.public_key)) for s, k in keys.items()}
        session = secure_sum.round_id(os.urandom(16).hex(), name, b64(params_wire), peers)
        masked = []
        for site in chosen:
            result = wire.decode(self._partial(algo, site, params_wire))
            try:
                part = secure_sum.mask(result, site, keys[site], peers, session)
            except secure_sum.SecureSumError as exc:
                raise AlgorithmError(site, f"secure aggregation: {exc}") from exc
            masked.append(wire.decode(wire.encode(part)))
        return secure_sum.unmask_sum(masked)

    def _partial(self, algo: Algorithm, site: str, params_wire: bytes) -> bytes:
        if site not in self._sites:
            raise AlgorithmError(site, "no such site in this federation")
        try:
            return run_partial(algo, self._sites[site], params_wire)
        except DisclosureError as exc:
            raise AlgorithmError(site, str(exc), refused=True) from exc
