"""Covariates from SQL checked against a direct pandas computation on the same raw CDM rows; federated tidying."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from nordfed.features import analyses as A
from nordfed.features import assemble, records
from nordfed.features.covariates import CovariateSettings, covariate_ref, extract_covariates, population_rows
from nordfed.features.preprocessing import plan_preprocessing
from nordfed.fed.protocol import InProcessFederation, SiteData
from nordfed.omop.store import CDMError, CDMUrl, open_cdm
from nordfed.privacy.disclosure import DisclosurePolicy, round_up_significant
from test_cohorts_support import add, concept, new_cdm

CONDS = [501, 502, 503, 201820, 443767, 443392, 432851, 4329847]  # 503 is a child of diabetes 201820
CHARLSON_W = {201820: (10, 1), 503: (10, 1), 443767: (11, 2), 443392: (14, 2), 432851: (16, 6), 4329847: (1, 1)}
PROCS, MEAS = [601, 602], [(701, 8840), (702, 8713)]
INGREDIENT, ATC4, ATC7, DRUG = 1001, 1100, 1101, 1002
DRUG_GROUPS = {DRUG: [INGREDIENT, ATC4], INGREDIENT: [INGREDIENT, ATC4]}


def build(url: str, n: int, seed: int):
    rng = np.random.default_rng(seed)
    cdm = new_cdm(url)
    concept(cdm, {c: f"condition {c}" for c in CONDS}, [(201820, 503)])
    concept(cdm, {p: f"procedure {p}" for p in PROCS}, domain="Procedure")
    concept(cdm, {m: f"lab {m}" for m, _ in MEAS}, domain="Measurement")
    concept(cdm, {8840: "milligram per deciliter"}, domain="Unit", vocabulary="UCUM")  # 8713 is not in the vocabulary
    concept(cdm, {INGREDIENT: "metformin"}, domain="Drug", vocabulary="RxNorm", concept_class="Ingredient")
    concept(cdm, {DRUG: "metformin 500 MG"}, [(INGREDIENT, DRUG)], domain="Drug", vocabulary="RxNorm",
            concept_class="Clinical Drug")
    concept(cdm, {ATC4: "Biguanides", ATC7: "metformin (ATC)"}, [(ATC4, DRUG), (ATC4, INGREDIENT), (ATC7, DRUG)],
            domain="Drug", vocabulary="ATC", concept_class="ATC", codes={ATC4: "A10B", ATC7: "A10BA02"})
    index = pd.Timestamp("2015-01-01") + pd.to_timedelta(rng.integers(0, 1500, n), unit="D")
    pop = pd.DataFrame({"row_id": np.arange(1, n + 1) * 10, "subject_id": np.arange(1, n + 1),
                        "cohort_start_date": index})
    add(cdm, "person", [{"person_id": int(s), "gender_concept_id": int(rng.choice([8507, 8532])),
                         "year_of_birth": int(rng.integers(1930, 1990))} for s in pop["subject_id"]])

    def day(i: int) -> dt.date:
        return (index[i] + pd.Timedelta(days=int(rng.integers(-500, 40)))).date()

    rows: dict[str, list] = {"condition_occurrence": [], "procedure_occurrence": [], "drug_exposure": [],
                             "measurement": []}
    for i, s in enumerate(pop["subject_id"].tolist()):
        for _ in range(rng.integers(0, 6)):
            rows["condition_occurrence"].append({"person_id": s, "condition_concept_id": int(rng.choice(CONDS)),
                                                 "condition_start_date": day(i)})
        for _ in range(rng.integers(0, 3)):
            rows["procedure_occurrence"].append({"person_id": s, "procedure_concept_id": int(rng.choice(PROCS)),
                                                 "procedure_date": day(i)})
        for _ in range(rng.integers(0, 3)):
            start = day(i)
            rows["drug_exposure"].append({"person_id": s, "drug_concept_id": int(rng.choice([DRUG, INGREDIENT])),
                                          "drug_exposure_start_date": start,
                                          "drug_exposure_end_date": start + dt.timedelta(int(rng.integers(0, 90)))})
        for _ in range(rng.integers(0, 5)):
            m, unit = MEAS[int(rng.integers(0, 2))]
            value = None if rng.random() < 0.1 else round(float(rng.normal(5, 2)), 2)
            rows["measurement"].append({"person_id": s, "measurement_concept_id": m, "measurement_date": day(i),
                                        "value_as_number": value, "unit_concept_id": unit})
    for table, r in rows.items():
        add(cdm, table, r)
    add(cdm, "observation_period", [{"person_id": int(s), "observation_period_start_date": dt.date(2000, 1, 1),
                                     "observation_period_end_date": dt.date(2025, 1, 1)} for s in pop["subject_id"]])
    add(cdm, "cohort", [{"cohort_definition_id": 1, "subject_id": int(s), "cohort_start_date": i.date(),
                         "cohort_end_date": i.date()} for s, i in zip(pop["subject_id"], index, strict=True)])
    return cdm, pop


def expected_long(cdm, pop: pd.DataFrame, end: int = 0) -> pd.DataFrame:
    """FeatureExtraction's definitions computed directly in pandas from the raw tables (windows end ``end`` days
    after index)."""
    p = pop.merge(cdm.query("SELECT * FROM person").astype({"gender_concept_id": np.int64}), left_on="subject_id",
                  right_on="person_id")
    idx = pd.to_datetime(p["cohort_start_date"])
    out = [pd.DataFrame({"row_id": p["row_id"], "covariate_id": p["gender_concept_id"] * 1000 + 1, "v": 1.0}),
           pd.DataFrame({"row_id": p["row_id"], "covariate_id": ((idx.dt.year - p["year_of_birth"]) // 5) * 1000 + 3,
                         "v": 1.0}),
           pd.DataFrame({"row_id": p["row_id"], "covariate_id": idx.dt.year * 1000 + 6, "v": 1.0}),
           pd.DataFrame({"row_id": p["row_id"], "covariate_id": idx.dt.month * 1000 + 7, "v": 1.0})]

    def joined(table: str, date_col: str) -> pd.DataFrame:
        raw = cdm.query(f"SELECT * FROM {table}")
        raw = raw.astype({c: "Int64" for c in raw.columns if c.endswith("concept_id")})  # ids * 1000 need 64 bits
        t = pop.merge(raw, left_on="subject_id", right_on="person_id")
        t["days"] = (pd.to_datetime(t[date_col]) - pd.to_datetime(t["cohort_start_date"])).dt.days
        return t

    for table, col, date_col, base in (("condition_occurrence", "condition_concept_id", "condition_start_date", 100),
                                       ("procedure_occurrence", "procedure_concept_id", "procedure_date", 500),
                                       ("measurement", "measurement_concept_id", "measurement_date", 700)):
        t = joined(table, date_col)
        for lo, aid in ((-365, base + 2), (-30, base + 4)):  # FeatureExtraction: 2 = long term, 4 = short term
            w = t[(t["days"] >= lo) & (t["days"] <= end)]
            out.append(pd.DataFrame({"row_id": w["row_id"], "covariate_id": w[col] * 1000 + aid, "v": 1.0}))
    m = joined("measurement", "measurement_date")
    m = m[(m["days"] >= -365) & (m["days"] <= end) & m["value_as_number"].notna()]
    last = m.sort_values(["days", "measurement_id"]).groupby(["row_id", "measurement_concept_id", "unit_concept_id"])
    last = last.tail(1)
    out.append(pd.DataFrame({"row_id": last["row_id"], "v": last["value_as_number"],
                             "covariate_id": last["measurement_concept_id"] * 1_000_000
                             + (last["unit_concept_id"] % 1000) * 1000 + 706}))
    d = joined("drug_exposure", "drug_exposure_start_date")
    d["end_days"] = (pd.to_datetime(d["drug_exposure_end_date"]) - pd.to_datetime(d["cohort_start_date"])).dt.days
    for lo, aid in ((-365, 410), (-30, 412)):
        w = d[(d["days"] <= end) & (d["end_days"] >= lo)]
        groups = [(r, g * 1000 + aid) for r, c in zip(w["row_id"], w["drug_concept_id"], strict=True)
                  for g in DRUG_GROUPS[c]]
        out.append(pd.DataFrame(groups, columns=["row_id", "covariate_id"]).assign(v=1.0))
    c = joined("condition_occurrence", "condition_start_date")
    c = c[(c["days"] <= 0) & c["condition_concept_id"].isin(list(CHARLSON_W))]
    c = c.assign(cat=c["condition_concept_id"].map(lambda k: CHARLSON_W[k][0]),
                 w=c["condition_concept_id"].map(lambda k: CHARLSON_W[k][1]))
    score = {}
    for r, g in c.drop_duplicates(["row_id", "cat"]).groupby("row_id"):
        cats = set(g["cat"])
        score[r] = g["w"].sum() - (10 in cats and 11 in cats) * 1 - (14 in cats and 16 in cats) * 2
    out.append(pd.DataFrame({"row_id": list(score), "covariate_id": 1901, "v": [float(v) for v in score.values()]}))
    long = pd.concat(out, ignore_index=True).drop_duplicates(["row_id", "covariate_id"])
    return long.sort_values(["row_id", "covariate_id"]).reset_index(drop=True)


def test_covariates_match_direct_pandas_computation(cdm_url):
    cdm, pop = build(cdm_url, n=120, seed=7)
    data = extract_covariates(cdm, pop, CovariateSettings())
    coo = data.matrix.tocoo()
    got = pd.DataFrame({"row_id": data.row_ids[coo.row], "covariate_id": data.covariate_ids[coo.col], "v": coo.data})
    got = got.sort_values(["row_id", "covariate_id"]).reset_index(drop=True)
    want = expected_long(cdm, pop)
    assert len(want) > 1000 and set(want["covariate_id"] % 1000) >= {1, 3, 6, 7, 102, 104, 410, 412, 502, 504, 702,
                                                                       704, 706, 901}
    pd.testing.assert_frame_equal(got.astype({"covariate_id": np.int64, "row_id": np.int64}),
                                  want.astype({"covariate_id": np.int64, "row_id": np.int64}), check_dtype=False)
    ref = data.covariate_ref.set_index("covariate_id")
    assert ref.loc[INGREDIENT * 1000 + 410, "covariate_name"].endswith("metformin")
    assert ATC7 * 1000 + 410 not in ref.index  # a 7-character ATC code is not a drug group
    # a value's id keeps its unit mod 1000 only; the name has the whole unit, as FeatureExtraction names it
    assert ref.loc[701_840_706, "covariate_name"] == ("measurement value (last), long term: lab 701 "
                                                      "(milligram per deciliter)")
    assert ref.loc[702_713_706, "covariate_name"].endswith("lab 702 (unit 8713)")
    # a site naming ids alone (the federated study's covariate_names) finds the units in its measurements
    assert covariate_ref(cdm, data.covariate_ids)["covariate_name"].tolist() == ref["covariate_name"].tolist()
    frame = data.to_frame()
    assert frame.shape == (120, len(data.covariate_ids)) and frame.index.tolist() == pop["row_id"].tolist()


def test_postgres_scratch_schema_gives_the_same_covariates_and_leaves_no_table(pg_url):
    # with ?scratch= the population is an unlogged table there (parallel plans); without, a temporary one
    cdm, pop = build(pg_url, n=120, seed=7)
    scratch = CDMUrl.parse(pg_url).schema + "_work"
    with open_cdm(f"{pg_url}&scratch={scratch}") as work:
        assert work.location.scratch == scratch
        tables = f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{scratch}'"
        try:
            p = records.Population(pop, population_rows(pop)[1])
            records.register(work, p)
            assert p.table.startswith(f'"{scratch}".nf_population_') and len(work.query(tables)) == 1
            records.unregister(work, p)
            data = extract_covariates(work, pop, CovariateSettings())
            left = work.query(tables)
        finally:
            work.execute(f'DROP SCHEMA IF EXISTS "{scratch}" CASCADE')
    assert left.empty
    pd.testing.assert_frame_equal(long_of(data), long_of(extract_covariates(cdm, pop, CovariateSettings())))
    with pytest.raises(CDMError, match="scratch= is for PostgreSQL"):
        CDMUrl.parse("duckdb:///x.duckdb?scratch=work")


def long_of(data) -> pd.DataFrame:
    coo = data.matrix.tocoo()
    got = pd.DataFrame({"row_id": data.row_ids[coo.row], "covariate_id": data.covariate_ids[coo.col], "v": coo.data})
    return got.sort_values(["row_id", "covariate_id"]).reset_index(drop=True).astype(
        {"covariate_id": np.int64, "row_id": np.int64})


def test_join_path_serves_persons_with_several_index_dates(duckdb_url):
    # a person twice in the population takes the engine-join path on DuckDB too (the scan path needs each once)
    cdm, pop = build(duckdb_url, n=80, seed=11)
    again = pop.iloc[::3].assign(row_id=lambda d: d["row_id"] + 1,
                                 cohort_start_date=lambda d: d["cohort_start_date"] - pd.Timedelta(days=200))
    both = pd.concat([pop, again]).sample(frac=1, random_state=0)  # row ids unsorted
    data = extract_covariates(cdm, both)
    want = expected_long(cdm, both).astype({"covariate_id": np.int64, "row_id": np.int64})
    assert set(want["row_id"] % 10) == {0, 1}
    pd.testing.assert_frame_equal(long_of(data), want, check_dtype=False)
    assert data.row_ids.tolist() == sorted(both["row_id"])


@pytest.mark.parametrize("dense", [True, False])  # person lookup by array or by hash
@pytest.mark.parametrize("rows", [slice(None, None, 2), slice(70, None)])  # every other person / ids from 71
def test_scan_path_returns_the_join_paths_records(duckdb_url, dense, rows):
    cdm, pop = build(duckdb_url, n=120, seed=5)
    pop = pop.iloc[rows]  # the other persons' records must be skipped
    _, k = population_rows(pop)
    p = records.Population(pop, k, dense=dense)
    assert p.unique_persons
    records.register(cdm, p)
    for domain, (start, end) in ((A.DOMAINS["condition"], (-365, 0)), (A.DOMAINS["drug"], (-60, 10)),
                                 (A.MEASUREMENT_VALUES, (-400, -5))):
        scanned = pd.DataFrame(records.records(cdm, p, domain, start, end))
        joined = pd.DataFrame(records.fetch(cdm, domain.records_sql(start, end)))
        assert len(scanned) > 5
        key = sorted(joined.columns)
        pd.testing.assert_frame_equal(scanned[key].sort_values(key, ignore_index=True),
                                      joined[key].sort_values(key, ignore_index=True), check_dtype=False)
    scanned = pd.DataFrame(records.demographics(cdm, p)).sort_values("k", ignore_index=True)
    joined = pd.DataFrame(records.fetch(cdm, A.demographics_sql())).sort_values("k", ignore_index=True)
    assert len(scanned) == len(pop)
    pd.testing.assert_frame_equal(scanned, joined[scanned.columns], check_dtype=False)


@pytest.mark.parametrize(("settings", "end"), [({"end_days": -10}, -10), ({"end_days": 20}, 20),
                                               ({"condition_long_term": False, "condition_short_term": False}, 0)])
def test_windows_ending_off_index_and_charlson_without_condition_covariates(duckdb_url, settings, end):
    # Charlson counts conditions up to index whatever the windows (the scan path takes it from their records)
    cdm, pop = build(duckdb_url, n=120, seed=13)
    data = extract_covariates(cdm, pop, CovariateSettings(**settings))
    want = expected_long(cdm, pop, end).astype({"covariate_id": np.int64, "row_id": np.int64})
    if "condition_long_term" in settings:
        want = want[~(want["covariate_id"] % 1000).isin([102, 104])].reset_index(drop=True)
    assert (want["covariate_id"] == 1901).sum() > 10
    pd.testing.assert_frame_equal(long_of(data), want, check_dtype=False)


def test_population_without_records_in_any_window(cdm_url):
    cdm, pop = build(cdm_url, n=20, seed=3)
    later = pop.assign(cohort_start_date=pop["cohort_start_date"] - pd.Timedelta(days=3000))
    data = extract_covariates(cdm, later)
    want = expected_long(cdm, later).astype({"covariate_id": np.int64, "row_id": np.int64})
    assert set(want["covariate_id"] % 1000) == {1, 3, 6, 7}  # demographics only
    pd.testing.assert_frame_equal(long_of(data), want, check_dtype=False)


def test_population_errors_name_the_field(duckdb_url):
    cdm, pop = build(duckdb_url, n=5, seed=1)
    with pytest.raises(ValueError, match="row_id 10 occurs more than once"):
        extract_covariates(cdm, pd.concat([pop, pop.iloc[:1]]))
    with pytest.raises(ValueError, match=r"missing column.*cohort_start_date"):
        extract_covariates(cdm, pop.drop(columns="cohort_start_date"))


def test_roll_up_and_last_values_pure():
    # drugs 7 and 9 in one group each, 8 in two; records of 8, 7, 8, 9
    code, drugs = assemble.encode(np.array([8, 7, 8, 9]))
    record, group_code, groups = assemble.roll_up(code, drugs, np.array([70, 70, 80, 90]), np.array([7, 8, 8, 9]))
    pairs = sorted(zip(record.tolist(), groups[group_code].tolist(), strict=True))
    assert pairs == [(0, 70), (0, 80), (1, 70), (2, 70), (2, 80), (3, 90)]
    record, group_code, groups = assemble.roll_up(code, drugs, np.array([70, 70, 90]), np.array([7, 8, 9]))
    assert record is None and groups[group_code].tolist() == [70, 70, 70, 90]
    # a drug in no group (9 here) loses its records, with one group per drug or several
    for anc, desc, want in (([70, 70], [7, 8], [(0, 70), (1, 70), (2, 70)]),
                            ([70, 70, 80], [7, 8, 8], [(0, 70), (0, 80), (1, 70), (2, 70), (2, 80)])):
        record, group_code, groups = assemble.roll_up(code, drugs, np.array(anc), np.array(desc))
        assert sorted(zip(record.tolist(), groups[group_code].tolist(), strict=True)) == want
    # the latest day wins, then the highest measurement_id; missing values and days before the window never do
    for big, oldest in ((9, -9), (2**50, -2**23)):  # ids fit beside the day in one int64 / ranked by a sort
        e = assemble.Entries(3)
        assemble.last_values(e, np.array([0, 0, 0, 0, 1, 2, 2]), *assemble.encode(np.full(7, 5)), np.full(7, 8713),
                             np.array([-3, -1, -1, 0, oldest, oldest + 5, -2]), np.array([1, big, 4, 2, 3, 7, 8]),
                             np.array([1.0, 2.0, 3.0, np.nan, 4.0, 6.0, 5.0]), oldest + 1, 706)
        m, ids = assemble.to_csr(e)
        assert ids.tolist() == [5_713_706] and m.toarray()[:, 0].tolist() == [2.0, 0.0, 5.0]
    # units equal mod 1000 share FeatureExtraction's covariate id: the last value of either is kept
    e = assemble.Entries(1)
    assemble.last_values(e, np.zeros(3, np.int32), *assemble.encode(np.full(3, 5)), np.array([8713, 9713, 8713]),
                         np.array([-3, -1, -2]), np.array([1, 2, 3]), np.array([1.0, 2.0, 3.0]), -10, 706)
    m, ids = assemble.to_csr(e)
    assert ids.tolist() == [5_713_706] and m.toarray().tolist() == [[2.0]]


def test_sparse_matrix_from_entries_matches_scipy_sums():
    # enough entries for the two-thread build; repeated binary entries count once, values land on their cells
    rng = np.random.default_rng(3)
    n_rows = 50_000
    e = assemble.Entries(n_rows)
    added = []

    def add(k, code, ids, value=None):
        e.add(k, code, ids, value)
        added.append((k, ids[code], value))

    for ids in (np.array([7001, 5102, 9104]), np.arange(1000, 3000) * 1000 + 102):
        n = 600_000
        add(rng.integers(0, n_rows, n).astype(np.int32), rng.integers(0, len(ids), n).astype(np.int32), ids)
    # one row far longer than the rest (sorted another way), its 2000 binary covariates drawn with repeats
    add(np.full(5000, 7, np.int32), rng.integers(0, 2000, 5000).astype(np.int32), np.arange(1000, 3000) * 1000 + 104)
    e.add(np.zeros(0, np.int32), np.zeros(0, np.int32), np.array([1]))  # an empty block is ignored
    cells = rng.choice(n_rows * 40, 300_000, replace=False)  # unique (row, covariate) per continuous entry
    for part, analysis in ((cells[:200_000], 706), (cells[200_000:], 901)):
        ids = np.arange(40) * 1_000_000 + analysis
        add((part // 40).astype(np.int32), (part % 40).astype(np.int32), ids, rng.normal(size=len(part)))
    got, cov_ids = assemble.to_csr(e)
    assert cov_ids.tolist() == sorted({c for _, cid, _ in added for c in cid.tolist()})
    column = {c: j for j, c in enumerate(cov_ids.tolist())}
    want = sum(sp.coo_matrix((np.ones(len(k)) if v is None else v, (k, [column[c] for c in cid.tolist()])),
                             shape=got.shape).tocsr() for k, cid, v in added)
    binary = ~np.isin(cov_ids % 1000, [706, 901])
    want = want.tocsc()
    for j in np.flatnonzero(binary):
        want.data[want.indptr[j]:want.indptr[j + 1]] = 1.0
    want = want.tocsr()
    want.sort_indices()
    assert got.has_sorted_indices and got.nnz == want.nnz
    assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.data, want.data)
    for bad in ({"code": np.array([0, 5], np.int32)}, {"k": np.array([0, n_rows], np.int32)},
                {"value": np.array([1.0])}, {"code": np.array([0], np.int32)}):
        args = {"k": np.array([0, 1], np.int32), "code": np.array([0, 0], np.int32), "value": np.array([1.0, 2.0]),
                **bad}
        with pytest.raises(ValueError, match=r"outside|one element per entry"):
            e.add(args["k"], args["code"], np.array([3706]), args["value"])
    with pytest.raises(ValueError, match="repeat a row"):
        e.add(np.array([0, 0], np.int32), np.array([0, 0], np.int32), np.array([3706]), np.array([1.0, 2.0]))
        assemble.to_csr(e)


def test_federated_covariate_tidying_matches_pooled_counts(tmp_path):
    policy = DisclosurePolicy(min_cell_count=5)
    cdms, pooled, charlson_max = {}, [], []
    settings = {"index_year": False}
    for k, seed in enumerate((1, 2)):
        cdm, pop = build(f"duckdb:///{tmp_path / f's{k}.duckdb'}", n=60, seed=seed)
        cdms[f"S{k}"] = cdm
        data = extract_covariates(cdm, pop, CovariateSettings(**settings))
        counts = np.diff(data.matrix.tocsc().indptr)
        pooled.append(pd.Series(np.where(counts < 5, 0, counts), index=data.covariate_ids))
        ch = data.select([1901]).matrix.toarray()
        charlson_max.append(ch.max() if (ch > 0).sum() >= 5 else 0.0)
    spec = {"builder": "plp", "target": 1, "outcome": "death", "covariates": settings,
            "population": {"requireTimeAtRisk": False, "removeSubjectsWithPriorOutcome": False}}
    plan = plan_preprocessing(InProcessFederation.from_cdms(cdms, policy), spec, min_fraction=0.1)
    total = pd.concat(pooled, axis=1).fillna(0).sum(axis=1)
    assert plan.n == 120
    kept_expected = sorted(int(c) for c, k in total.items() if k / 120 >= 0.1 and k < 120)
    gender = [c for c in kept_expected if c % 1000 == 1]
    assert len(gender) == 2  # one-hot: the more prevalent sex is dropped as redundant
    top = max(gender, key=lambda c: (total[c], c))
    assert plan.removed["redundant"] == [top]
    assert plan.covariate_ids == [c for c in kept_expected if c != top]
    # the released maximum is the pooled maximum rounded up to two significant digits (no person's exact value)
    assert plan.max_values[1901] == round_up_significant(max(charlson_max)) > 0
    frame = SiteData(site="S0", cdm=cdms["S0"]).frame(plan.dataset_params(spec))
    assert list(frame.columns[6:]) == [str(c) for c in plan.covariate_ids]
    assert frame["1901"].max() <= 1.0 and frame["1901"].max() > 0


@pytest.mark.parametrize("given, message", [({"gender": "false"}, "gender must be true or false, got 'false'"),
                                            ({"end_days": "0"}, "end_days must be a whole number of days"),
                                            ({"end_days": True}, "end_days must be a whole number of days"),
                                            ({"gendre": True}, "unknown covariate setting")])
def test_covariate_settings_refuse_values_of_another_type(given, message):
    # a site gets the settings from a task's input too, not only through a checked YAML: a quoted "false" is a
    # non-empty string, which switched the analysis on
    with pytest.raises(ValueError, match=message):
        CovariateSettings.from_dict(given)
