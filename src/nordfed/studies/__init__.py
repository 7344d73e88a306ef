"""Ready-made studies from a YAML file: a PLP study (LASSO with CV, validation, risk groups, ground truth)
and a survival study (Kaplan-Meier by group, Cox), each written as an HTML report with a JSON of all numbers.

>>> results, html, js = run_study("studies/crc_1y_mortality.yaml")     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from nordfed.fed.protocol import AlgorithmError


class SiteStopped(AlgorithmError):
    """A site failed or refused a step the study cannot do without; ``sites`` are the sites the study ran on
    (what a rerun without that site would keep)."""

    def __init__(self, err: AlgorithmError, sites: list[str]):
        super().__init__(err.site, err.message, err.refused)
        self.sites = sites


def run_study(path: str | Path, out: str | Path | None = None, hub: str | None = None,
              collaboration: int | None = None, step: Callable[[str], None] | None = None,
              sites: Sequence[str] | None = None) -> tuple[dict[str, Any], Path, Path]:
    """Load, run and report a study; returns (results, HTML path, JSON path).

    ``out`` defaults to ``reports/<study name>.html``; ``hub``/``collaboration`` run it through a hub; ``sites``
    runs it on only those of its sites (:class:`~nordfed.studies.sites.SiteChoiceError` for others). A site
    that stops the study raises :class:`SiteStopped`.
    """
    from nordfed.studies.plp import run_plp
    from nordfed.studies.report import write_report
    from nordfed.studies.sites import open_sites
    from nordfed.studies.spec import PlpStudy, load_spec
    from nordfed.studies.survival import run_survival

    spec = load_spec(path)
    target = Path(out) if out is not None else Path("reports") / f"{spec.name}.html"
    with open_sites(spec, hub, collaboration, progress=step, only=sites) as opened:
        try:
            if isinstance(spec, PlpStudy):
                results = run_plp(spec, opened.federation, opened.truth, step)
            else:
                results = run_survival(spec, opened.federation, step)
        except AlgorithmError as exc:
            raise SiteStopped(exc, opened.federation.sites) from exc
        results["transport"] = opened.transport
        results["sites_left_out"] = opened.left_out
        if step:
            step("report")
        html, js = write_report(results, target, opened.transport)
    return results, html, js
