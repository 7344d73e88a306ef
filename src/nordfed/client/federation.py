"""HubFederation: the network transport of :class:`nordfed.fed.protocol.Federation`.

Algorithms cannot tell it from InProcessFederation: same ``run(name, params) -> {site: result}``, same wire
encoding, and a refusal raises ``AlgorithmError(site, message, refused=True)``. With a ``study_id`` every task is
tagged with that hub study and the sites are the nodes of the study's organizations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nordfed.client.api import FINISHED, Client, RunResult
from nordfed.client.errors import NodeOfflineError
from nordfed.fed.protocol import AlgorithmError, Federation
from nordfed.privacy.secure_sum import SecureSumError, unmask_sum


class HubFederation(Federation):
    def __init__(self, client: Client, collaboration_id: int, timeout: float = 600.0,
                 on_update: Callable[[dict[str, Any]], None] | None = None, study_id: int | None = None):
        self.client = client
        self.collaboration_id = collaboration_id
        self.study_id = study_id
        self.timeout = timeout
        self.on_update = on_update
        self._nodes: dict[str, int] | None = None
        self.last_task_id: int | None = None

    def _node_ids(self) -> dict[str, int]:
        if self._nodes is None:
            nodes = self.client.nodes(self.collaboration_id)
            if self.study_id is not None:
                members = set(self.client.study(self.study_id)["organization_ids"])
                nodes = [n for n in nodes if n["organization_id"] in members]
            self._nodes = {n["name"]: n["id"] for n in nodes}
        return self._nodes

    @property
    def sites(self) -> list[str]:
        return list(self._node_ids())

    def run(self, name: str, params: Mapping[str, Any], sites: Sequence[str] | None = None) -> dict[str, Any]:
        return self._run(name, params, sites, secure_sum=False)

    def aggregate(self, name: str, params: Mapping[str, Any], sites: Sequence[str] | None = None) -> Any:
        try:
            return unmask_sum(list(self._run(name, params, sites, secure_sum=True).values()))
        except SecureSumError as exc:
            raise AlgorithmError("all", f"secure aggregation: {exc}") from exc

    def _run(self, name: str, params: Mapping[str, Any], sites: Sequence[str] | None,
             secure_sum: bool) -> dict[str, Any]:
        ids = self._node_ids()
        wanted = list(sites or self.sites)
        for s in wanted:
            if s not in ids:
                raise AlgorithmError(s, "no such site in this federation")
        try:
            task = self.client.create_task(self.collaboration_id, name, params, node_ids=[ids[s] for s in wanted],
                                           study_id=self.study_id, secure_sum=secure_sum)
        except NodeOfflineError as exc:
            raise AlgorithmError(exc.names[0], str(exc)) from exc
        self.last_task_id = task["id"]
        try:
            results = self._finished_results(task["id"])
        except TimeoutError:
            self.client.cancel(task["id"])
            raise
        by_site = {r.node_name: r for r in results}
        out: dict[str, Any] = {}
        for s in wanted:
            r = by_site.get(s)
            if r is None:
                raise AlgorithmError(s, "the hub returned no run for this site")
            if r.status != "completed":
                raise AlgorithmError(s, _reason(s, r), refused=r.status == "refused")
            out[s] = r.value
        return out

    def _finished_results(self, task_id: int) -> list[RunResult]:
        """Results once every run finished; without a progress callback the hub long-polls the results request
        itself, which saves a round trip per call."""
        if self.on_update is not None:
            self.client.wait(task_id, timeout=self.timeout, on_update=self.on_update)
            return self.client.results(task_id, self.collaboration_id)
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            results = self.client.results(task_id, self.collaboration_id, wait=min(30.0, max(left, 0.001)))
            if all(r.status in FINISHED for r in results):
                return results
            if time.monotonic() >= deadline:
                raise TimeoutError(f"task {task_id} did not finish within {self.timeout:g} s")


def _reason(site: str, run: RunResult) -> str:
    """Why a run did not complete: the node's last log line without the node's own ``[site]`` tag (the error names
    the site), so a refusal reads as in process (``refused: fewer persons than ...``)."""
    lines = [ln for ln in run.log.splitlines() if ln.strip()]
    return lines[-1].removeprefix(f"[{site}] ") if lines else run.status
