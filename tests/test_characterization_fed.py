"""Federated characterization and DQ through InProcessFederation: exact against the pooled rows when nothing
is suppressed; with the default policy every released count is 0 or >= 10 and pooled sums never reconstruct."""

from __future__ import annotations

import pandas as pd
import pytest

from nordfed.fed import wire
from nordfed.fed.characterization import characterize, data_quality
from nordfed.fed.protocol import InProcessFederation, get_algorithm
from nordfed.omop import characterization as ch
from nordfed.omop.store import open_cdm
from nordfed.privacy.disclosure import DisclosurePolicy
from test_omop_support import CREATININE, build_cdm

SIZES = {"DK": 150, "NO": 90, "SE": 40}


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("fedchar")
    cdms, frames = {}, {}
    for i, (site, n) in enumerate(SIZES.items()):
        cdm = open_cdm(f"duckdb:///{root / site}.duckdb", create=True)
        frames[site] = build_cdm(cdm, n=n, seed=40 + i, id_offset=100_000 * i, defects=site == "SE")
        cdms[site] = cdm
    return cdms, frames


def _site_age_sex(cdm) -> pd.Series:
    return ch.persons_by_age_sex(cdm).set_index(["age_group", "sex"])["persons"]


def test_algorithms_are_registered():
    assert get_algorithm("nordfed.characterization").version == "2"
    assert get_algorithm("nordfed.characterization").dp and not get_algorithm("nordfed.dq").dp
    assert get_algorithm("nordfed.dq").version == "1"


def test_pooled_equals_per_site_sums_without_suppression(sites):
    cdms, frames = sites
    res = characterize(InProcessFederation.from_cdms(cdms, DisclosurePolicy(min_cell_count=1)), top_n=50)
    # reference: pandas on all sites' rows pooled in one place
    person = pd.concat([f["person"] for f in frames.values()]).set_index("person_id")
    op = pd.concat([f["observation_period"] for f in frames.values()])
    first = pd.to_datetime(op.groupby("person_id")["observation_period_start_date"].min())
    age = (first.dt.year - person["year_of_birth"]).clip(0, 90) // 5 * 5
    sex = person["gender_concept_id"].map({8507: "male", 8532: "female"})
    ref = pd.DataFrame({"age_low": age, "sex": sex}).groupby(["age_low", "sex"]).size()
    pooled = res.pooled["age_sex"].set_index(["age_low", "sex"])["persons"]
    pd.testing.assert_series_equal(pooled.sort_index(), ref.sort_index(), check_names=False, check_dtype=False)
    assert res.pooled["persons"]["persons"].iat[0] == sum(SIZES.values())
    assert (res.pooled["age_sex"]["sites_suppressed"] == 0).all()
    # top conditions: persons are distinct across sites, so pooled persons = persons in the union of rows
    cond = pd.concat([f["condition_occurrence"].assign(site=s) for s, f in frames.items()])
    ref_persons = cond.groupby("condition_concept_id")["person_id"].nunique()
    got = res.pooled["condition"].set_index("concept_id")["persons"]
    assert got.sort_index().to_dict() == ref_persons.sort_index().to_dict()


def test_default_policy_suppresses_small_cells_and_pools_only_released(sites):
    cdms, _ = sites
    res = characterize(InProcessFederation.from_cdms(cdms))  # min cell count 10
    per = res.per_site["age_sex"]
    for site, cdm in cdms.items():
        exact = _site_age_sex(cdm)
        released = per[per["site"] == site].set_index(["age_group", "sex"])["persons"]
        assert released.index.equals(exact.index)
        small = (exact > 0) & (exact < 10)
        assert released[small].isna().all() and small.any()
        shown = released.notna()
        assert (released[shown] == exact[shown]).all()
        # secondary suppression: with one small cell the released total would give it away, so the smallest
        # other cell is withheld too; otherwise only the small cells are
        extra = released.isna() & ~small
        assert extra.sum() == (small.sum() == 1)
        if extra.any():
            assert exact[extra].iloc[0] == exact[~small & (exact > 0)].min()
    pooled = res.pooled["age_sex"].set_index(["age_group", "sex"])
    ref = per.groupby(["age_group", "sex"])["persons"].sum(min_count=1)  # NA skipped: never reconstructed
    assert pooled["persons"].equals(ref.reindex(pooled.index).astype("Int64"))
    # a cell withheld at every site is missing in the pooled table, not 0
    withheld = per.groupby(["age_group", "sex"])["persons"].agg(lambda s: s.isna().all()).reindex(pooled.index)
    assert withheld.any() and pooled["persons"].isna().to_numpy().tolist() == withheld.to_numpy(bool).tolist()
    n_na = per.assign(na=per["persons"].isna()).groupby(["age_group", "sex"])["na"].sum()
    assert (pooled["sites_suppressed"] == n_na.reindex(pooled.index)).all()
    for name in ("age_sex", "observation_years", "condition", "drug"):
        counts = res.per_site[name]["persons"].dropna()
        assert ((counts == 0) | (counts >= 10)).all(), name


def test_partial_result_is_wire_encodable(sites):
    cdms, _ = sites
    fed = InProcessFederation.from_cdms(cdms)
    for name in ("nordfed.characterization", "nordfed.dq"):
        for site, result in fed.run(name, {}).items():
            assert wire.decode(wire.encode(result)) == result, (name, site)


def test_federated_dq_flags_the_defective_site(sites):
    cdms, _ = sites
    out = data_quality(InProcessFederation.from_cdms(cdms))
    key = f"measurement.value_as_number: plausible value [{CREATININE}]"
    row = out.table[out.table["key"] == key].iloc[0]
    assert row["DK"] == "0.0% pass" and row["NO"] == "0.0% pass" and row["SE"].endswith("fail")
    pooled = out.pooled.set_index("key").loc[key]
    assert pooled["sites_failing"] == 1
    se = out.per_site["SE"]
    sex = se[(se["check"] == "sex plausible") & (se["concept_id"] == 200962)].iloc[0]
    # one implausible record: status decided at the node, the count of 1 withheld
    assert sex["status"] == "fail" and pd.isna(sex["n_fail"]) and pd.isna(sex["pct_fail"])
    for df in out.per_site.values():
        fails = df["n_fail"].dropna()
        assert ((fails == 0) | (fails >= 10)).all()
        # % failing is withheld exactly where the failing count is
        assert (df["pct_fail"].isna() >= df["n_fail"].isna()).all()


def test_private_characterization_has_fixed_cells_unbiased_noise_and_no_top_concepts(sites):
    """With dp: every age group × sex and every year bin is released, empty or not (which cells exist would
    tell too), with discrete Laplace noise of scale 3/ε; top concepts are not released."""
    import math

    import numpy as np

    from nordfed.fed.characterization import MAX_PRIVATE_YEARS

    cdms, _ = sites
    fed = InProcessFederation.from_cdms({"DK": cdms["DK"]}, DisclosurePolicy(min_cell_count=1))
    exact = _site_age_sex(cdms["DK"])
    draws = [fed.run("nordfed.characterization", {"dp": {"epsilon": 1.5}})["DK"] for _ in range(300)]
    for r in draws:
        assert len(r["age_sex"]) == 19 * 3 and [y for y, _ in r["observation_years"]] == \
            list(range(MAX_PRIVATE_YEARS + 1))
        assert r["top"] == {} and r["dp"] == "epsilon 1.5, discrete Laplace noise"
    totals = np.array([r["persons"] for r in draws], dtype=float)
    a = math.exp(-1.5 / 3)
    sd = math.sqrt(2 * a / (1 - a) ** 2)
    assert abs(totals.mean() - SIZES["DK"]) < 5 * sd / math.sqrt(len(totals))
    assert totals.std() == pytest.approx(sd, rel=0.15) and (totals != SIZES["DK"]).mean() > 0.5
    # the fullest age-sex cell, on average over the draws (noise clamped at 0 only matters near 0)
    (age, sex), n = max(exact.items(), key=lambda kv: kv[1])
    cell = [next(c["persons"] for c in r["age_sex"] if c["age_group"] == age and c["sex"] == sex) for r in draws]
    assert abs(np.mean(cell) - n) < 5 * sd / math.sqrt(len(cell))
    pooled = characterize(InProcessFederation.from_cdms(cdms), epsilon=1.0)
    assert len(pooled.pooled["age_sex"]) == 19 * 3 and pooled.pooled["condition"].empty
