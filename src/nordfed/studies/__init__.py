"""Ready-made studies from a YAML file: a PLP study (LASSO with CV, validation, risk groups, ground truth)
and a survival study (Kaplan-Meier by group, Cox), each written as an HTML report with a JSON of all numbers.

>>> results, html, js = run_study("studies/crc_1y_mortality.yaml")     # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_study(path: str | Path, out: str | Path | None = None, hub: str | None = None,
              collaboration: int | None = None, step: Callable[[str], None] | None = None,
              ) -> tuple[dict[str, Any], Path, Path]:
    """Load, run and report a study; returns (results, HTML path, JSON path).

    ``out`` defaults to ``reports/<study name>.html``; ``hub``/``collaboration`` run it through a hub.
    """
    from nordfed.studies.plp import run_plp
    from nordfed.studies.report import write_report
    from nordfed.studies.sites import open_sites
    from nordfed.studies.spec import PlpStudy, load_spec
    from nordfed.studies.survival import run_survival

    spec = load_spec(path)
    target = Path(out) if out is not None else Path("reports") / f"{spec.name}.html"
    with open_sites(spec, hub, collaboration, progress=step) as sites:
        if isinstance(spec, PlpStudy):
            results = run_plp(spec, sites.federation, sites.truth, step)
        else:
            results = run_survival(spec, sites.federation, step)
        results["transport"] = sites.transport
        if step:
            step("report")
        html, js = write_report(results, target, sites.transport)
    return results, html, js
