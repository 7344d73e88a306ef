"""The five synthetic sites validate clean, and the DQ table finds exactly each site's planted defects at the
rate the generator's truth reports (Denmark, the clean site, fails nothing)."""

from __future__ import annotations

import pandas as pd
import pytest

from nordfed.omop import dq
from nordfed.omop.store import open_cdm
from nordfed.omop.validate import validate
from nordfed.synth import SITES, generate, write

PERSONS = 800
SEED = 7

# truth check → the DQ check that should catch it (concept_conformance depends on how it was planted)
CATCHES = {
    "missing_unit": {"unit present"},
    "implausible_value": {"plausible value", "no unit slip"},
    "sex_plausibility": {"sex plausible"},
}


@pytest.fixture(scope="module")
def synth_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    out = {}
    for site in SITES:
        result = generate(site, PERSONS, SEED, notes=False)
        url = f"duckdb:///{root / site}.duckdb"
        write(result, url)
        cdm = open_cdm(url)
        out[site] = (result.truth, validate(cdm), dq.run_checks(cdm))
    return out


def test_five_sites(synth_sites):
    assert set(synth_sites) == {"DK", "NO", "SE", "FI", "EE"}


@pytest.mark.parametrize("site", SITES)
def test_synthetic_site_validates_clean(synth_sites, site):
    _truth, report, _dq = synth_sites[site]
    assert report.findings == [], [(f.check, f.table, f.rows, f.examples) for f in report.findings]
    assert report.checked_tables["person"] == PERSONS


def _expected_check(defect: dict) -> set[str]:
    if defect["check"] == "concept_conformance":
        return {"concept mapped (not 0)"} if defect.get("concept_id") == 0 else {"concept is standard",
                                                                                 "concept in vocabulary"}
    return CATCHES[defect["check"]]


@pytest.mark.parametrize("site", SITES)
def test_dq_finds_exactly_the_planted_defects(synth_sites, site):
    truth, _report, res = synth_sites[site]
    failing = res[res["status"] == "fail"]
    planted = truth["dq_defects"]
    if site == "DK":
        assert planted == [] and failing.empty, failing
        return
    assert planted, f"{site} should have planted defects"
    explained = pd.Series(False, index=failing.index)
    for d in planted:
        assert d["rows_affected"] > 0, d  # otherwise this seed plants nothing to find
        hit = failing["check"].isin(_expected_check(d)) & (failing["table"] == d["table"])
        if d["check"] != "concept_conformance":
            hit &= failing["concept_id"] == d["concept_id"]
        assert hit.any(), f"{site}: planted {d} not flagged"
        # same rows, same denominator: the failing share equals the planted rate
        # (within 1%: the generator counts some bases before adding the sex-implausible rows)
        assert failing.loc[hit, "pct_fail"].iloc[0] == pytest.approx(100 * d["rate"], rel=0.01), d
        explained |= hit
    assert explained.all(), f"{site}: unexpected failures\n{failing[~explained]}"


@pytest.mark.parametrize("site", SITES)
def test_synthetic_site_validates_clean_on_postgres(pg_url, tmp_path, site):
    """The same synth → validate path on the real PostgreSQL server, notes included."""
    result = generate(site, 300, SEED)
    write(result, pg_url, truth_path=tmp_path / "truth.json")
    with open_cdm(pg_url) as cdm:
        report = validate(cdm)
        assert report.findings == [], [(f.check, f.table, f.rows, f.examples) for f in report.findings]
        assert report.checked_tables["person"] == 300
        assert cdm.scalar("SELECT count(*) FROM note") == len(result.tables["note"]) > 0
