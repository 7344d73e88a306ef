"""The example PLP and survival reports (SYNTHETIC data) render with every standard section, offline."""

from __future__ import annotations

import re
import warnings
from html import unescape

import pytest

from nordfed.reports.layouts import PLP_SECTIONS, SURVIVAL_SECTIONS


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    from nordfed.reports.example import build_examples

    out = tmp_path_factory.mktemp("reports")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)  # scikit-learn API deprecations, not ours
        return {name: rep.write(out / name).read_text(encoding="utf-8") for name, rep in build_examples().items()}


def _h2(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'<section class="part" id="[^"]+">\s*<h2>([^<]+)</h2>', html)]


def test_plp_example_has_all_sections_in_order(examples):
    html = examples["plp_example.html"]
    assert _h2(html) == list(PLP_SECTIONS)
    assert "Synthetic data — every person" in html
    # ROC + calibration side by side, coefficient plot, external ROC, ground-truth plot
    assert html.count('src="data:image/png;base64,') == 5
    for label in ("AUROC (internal)", "Calibration slope", "AUROC across sites", "Persons"):
        assert f'<div class="label">{label}</div>' in html
    assert "Held-out site / setting" in html and "Fitted − truth" in html
    # the lowest risk groups' outcomes are merged at every site: no pooled rate per group, one for them together
    assert re.search(r'<td class="num merged"[^>]*>merged</td>', html) and "groups 1–2 together" in html
    assert "This report contains" in html and "http://" not in html and "https://" not in html


def test_survival_example_has_km_and_cox(examples):
    html = examples["survival_example.html"]
    assert _h2(html) == [s for s in SURVIVAL_SECTIONS if s != "Ground truth comparison"]
    assert html.count('src="data:image/png;base64,') == 3  # KM by group, KM by site, hazard ratios
    assert "Hazard ratio (95% CI)" in html and "Log-rank test: χ²" in html
