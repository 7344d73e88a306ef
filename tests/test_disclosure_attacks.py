"""Red-team attacks on the node-side partials: each test replays a request that got one patient's data (or a
count below the minimum cell count) out of a site, and checks that the site now refuses it or releases nothing
row-specific. Requests go through InProcessFederation, which applies the network's disclosure control."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from nordfed import synth
from nordfed.fed import wire
from nordfed.fed.evaluation import evaluate
from nordfed.fed.lasso_solver import unpack_symmetric
from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from nordfed.node.worker import WarmWorker, WorkerSpec
from nordfed.omop.store import open_cdm
from nordfed.privacy.crypto import SITE_SECRET, site_secret
from nordfed.privacy.disclosure import DisclosurePolicy, suppress_cells_of_total, suppress_counts


def _frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Rows with an outcome, a few numeric columns with distinct values and identifying text columns."""
    rng = np.random.default_rng(seed)
    age = rng.integers(35, 95, n).astype(float)
    lab = np.round(rng.normal(100, 15, n), 1) + np.arange(n) * 1e-4  # distinct: a steep model can single one out
    y = rng.binomial(1, 1 / (1 + np.exp(-(age - 65) / 10)))
    return pd.DataFrame({
        "age": age, "lab": lab, "y": y.astype(float), "sex": rng.choice(["F", "M"], n),
        "name": [f"Patient{i:04d}" for i in range(n)],
        "birth_date": [f"19{30 + i % 60:02d}-{1 + i % 12:02d}-{1 + i % 28:02d}" for i in range(n)],
        "time": np.round(rng.exponential(500, n)) + 1, "event": rng.binomial(1, 0.6, n).astype(float),
    })


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return _frame()


@pytest.fixture(scope="module")
def fed(frame: pd.DataFrame) -> InProcessFederation:
    return InProcessFederation.from_frames({"A": frame})


def _message(fed: InProcessFederation, name: str, params: dict) -> str:
    with pytest.raises((ValueError, AlgorithmError)) as info:
        fed.run(name, params)
    return str(info.value)


@pytest.mark.parametrize(("name", "params"), [
    ("nordfed.glm.irls", {"outcome": "y", "covariates": ["name"], "family": "binomial"}),
    ("nordfed.km.counts", {"duration": "birth_date", "event": "event"}),
    ("nordfed.eval.scores", {"model": {"covariates": ["name"], "coef": [1.0], "intercept": 0.0}, "outcome": "y"}),
    ("nordfed.eval.groups", {"model": {"covariates": ["age"], "coef": [0.0], "intercept": 0.0}, "outcome": "y",
                             "cutoffs": [0.5], "by": {"age_group": "name"}}),
])
def test_error_messages_quote_no_row_values(fed: InProcessFederation, frame: pd.DataFrame, name: str,
                                            params: dict) -> None:
    # the node forwards a failed partial's message to the researcher: it used to quote the first row's value
    msg = _message(fed, name, params)
    assert frame["name"].iloc[0] not in msg and frame["birth_date"].iloc[0] not in msg


def test_km_refusal_does_not_name_a_rare_group(fed: InProcessFederation, frame: pd.DataFrame) -> None:
    # grouping by a near-unique column: the refusal named the first group, i.e. one person's birth date
    msg = _message(fed, "nordfed.km.counts", {"duration": "time", "event": "event", "group": "name",
                                              "time_grid": 1e9})
    assert "refused" in msg and frame["name"].min() not in msg


def test_groups_by_withholds_labels_held_by_few_rows(fed: InProcessFederation, frame: pd.DataFrame) -> None:
    # 'by' on any column released every distinct value as a label (all birth dates of the patients with the
    # outcome in one request); now a label needs at least min_cell_count rows
    model = {"covariates": ["age"], "coef": [0.0], "intercept": 0.0}
    out = fed.run("nordfed.eval.groups", {"model": model, "outcome": "y", "cutoffs": [0.5],
                                          "where": {"column": "y", "op": "==", "value": 1},
                                          "by": {"sex": "birth_date", "who": "name", "age": "sex"}})["A"]
    assert out["sex"]["labels"] == [] and out["who"]["labels"] == [] and out["sex"]["withheld"]
    assert out["age"]["labels"] == ["F", "M"] and not out["age"]["withheld"]  # categories keep their labels


def test_evaluate_counts_a_withheld_level_as_suppressed() -> None:
    rng = np.random.default_rng(3)
    a, b = _frame(300, seed=1), _frame(300, seed=2)
    a.loc[:2, "sex"] = "U"  # three rows: site A withholds the label
    b.loc[:29, "sex"] = "U"  # thirty rows: site B releases it
    fed = InProcessFederation.from_frames({"A": a.sample(frac=1, random_state=rng.integers(1 << 31)), "B": b})
    model = {"covariates": ["age"], "coef": [0.1], "intercept": -6.5}
    raw = fed.run("nordfed.eval.groups", {"model": model, "outcome": "y", "cutoffs": [0.5], "by": {"sex": "sex"}})
    assert "U" not in raw["A"]["sex"]["labels"] and "U" in raw["B"]["sex"]["labels"]
    # the pooled table still reads: B's 30 rows, and A counted as a site that suppressed its cell
    ev = evaluate(fed, model, "y")
    row = next(r for r in ev.demographics["sex"] if r["group"] == "U")
    assert row["n"] == 30 and row["sites_suppressed"] == 1


def test_leave_one_out_folds_are_refused(fed: InProcessFederation, frame: pd.DataFrame) -> None:
    # lasso.newton with n_folds = n: all-rows sums minus fold 0's training sums were one row's z z^T / 4
    n, cols = len(frame), ["age", "lab", "y"]
    pt = {"beta": np.zeros(4), "center": np.zeros(3), "scale": np.ones(3)}
    with pytest.raises(AlgorithmError, match="refused: fewer rows in a fold"):
        fed.run("nordfed.lasso.newton", {"covariates": cols, "outcome": "y", "n_folds": n, "seed": 0,
                                         "points": [{**pt, "fold": -1}, {**pt, "fold": 0}]})
    with pytest.raises(AlgorithmError, match="refused: fewer rows in a fold"):  # the same through hessian=False
        fed.run("nordfed.lasso.newton", {"covariates": cols, "outcome": "y", "n_folds": n // 2, "seed": 0,
                                         "points": [{**pt, "fold": 0, "hessian": False}]})


def test_steep_coefficients_cannot_isolate_one_row(fed: InProcessFederation, frame: pd.DataFrame) -> None:
    # eta = M (lab - t): the weights p(1-p) vanish for all rows but the one nearest t, and X'WX[0] / X'WX[0, 0]
    # was that row's covariates (with the outcome as a covariate, its outcome too)
    cols = ["age", "lab", "y"]
    t, m = float(frame["lab"].iloc[7]), 200.0
    beta = np.array([-m * t, 0.0, m, 0.0])
    point = {"fold": -1, "beta": beta, "center": np.zeros(3), "scale": np.ones(3)}
    with pytest.raises(AlgorithmError, match="weights concentrate"):
        fed.run("nordfed.lasso.newton", {"covariates": cols, "outcome": "y", "points": [point]})
    with pytest.raises(AlgorithmError, match="weights concentrate"):
        fed.run("nordfed.glm.irls", {"outcome": "y", "covariates": cols, "family": "binomial", "beta": beta})
    # Poisson: mu = exp(eta) lets the row with the highest lab dominate
    with pytest.raises(AlgorithmError, match="weights concentrate"):
        fed.run("nordfed.glm.irls", {"outcome": "event", "covariates": cols, "family": "poisson",
                                     "beta": np.array([-3.0 * 150, 0.0, 3.0, 0.0])})
    # moderate coefficients (a real fit's) still pass
    h = fed.run("nordfed.lasso.newton", {"covariates": cols, "outcome": "y", "points": [
        {**point, "beta": np.array([0.0, 0.1, 0.0, 0.0]), "center": np.array([65.0, 100.0, 0.5])}]})
    assert unpack_symmetric(h["A"]["results"][0]["hess"])[0, 0] > 10


def test_glm_family_checks_cannot_be_bypassed() -> None:
    frame = _frame()
    frame["rare"] = (np.arange(len(frame)) < 4).astype(float)  # a 0/1 outcome with 4 cases
    fed = InProcessFederation.from_frames({"A": frame})
    # family 'gaussian' (or an unknown one, which fitted as gaussian) released Σy = 4 cases
    with pytest.raises(AlgorithmError, match="two-valued column 'rare'"):
        fed.run("nordfed.glm.irls", {"outcome": "rare", "covariates": ["age"], "family": "gaussian"})
    with pytest.raises(ValueError, match="family must be one of"):
        fed.run("nordfed.glm.irls", {"outcome": "rare", "covariates": ["age"], "family": "nonsense"})


SECRET = bytes(range(32))


def _moments(frame: pd.DataFrame, policy: DisclosurePolicy, seed: int) -> np.ndarray:
    """Per fold: n, events and the covariate means, one row each."""
    fed = InProcessFederation.from_frames({"A": frame}, policy)
    parts = fed.run("nordfed.lasso.moments", {"covariates": ["age", "lab"], "outcome": "y", "n_folds": 5,
                                              "seed": seed})["A"]["parts"]
    return _rows_of(parts)


def _rows_of(parts: list[dict]) -> np.ndarray:
    return np.array([[p["n"], p["events"], *p["mean"]] for p in parts])


def test_a_nodes_folds_cannot_be_replayed_by_the_researcher(frame: pd.DataFrame) -> None:
    # folds were a public permutation of the seed: 120 requests with different seeds gave per-fold means over
    # known row sets, enough linear equations for every row. At a node the seed is keyed by its secret.
    public = _moments(frame, DisclosurePolicy(), 3)
    fold = np.random.default_rng(3).permutation(len(frame)) % 5  # the researcher's replay
    replay = np.array([[frame["age"][fold == f].mean(), frame["lab"][fold == f].mean()] for f in range(5)])
    assert np.allclose(public[:, 2:], replay)
    keyed = _moments(frame, DisclosurePolicy(secret=SECRET), 3)
    assert np.array_equal(keyed, _moments(frame, DisclosurePolicy(secret=SECRET), 3))  # a fit's rounds agree
    assert not np.isclose(keyed[:, 3], replay[:, 1]).any()  # lab: distinct values, no chance ties
    assert not np.array_equal(keyed, _moments(frame, DisclosurePolicy(secret=bytes(32)), 3))  # another node


def test_repeating_a_request_does_not_average_the_time_noise_away(frame: pd.DataFrame) -> None:
    # fresh noise per request let 200 repeats give one patient's time to within 0.3; the node's noise is now
    # a function of its secret and the time, the same in every answer
    params = {"duration": "time", "event": "event"}
    keyed = InProcessFederation.from_frames({"A": frame}, DisclosurePolicy(event_time_noise=5.0, secret=SECRET))
    first, again = (keyed.run("nordfed.km.counts", params)["A"]["groups"]["all"] for _ in range(2))
    assert np.array_equal(first["times"], again["times"]) and not np.allclose(first["times"][:20],
                                                                              np.unique(frame["time"])[:20])
    fresh = InProcessFederation.from_frames({"A": frame}, DisclosurePolicy(event_time_noise=5.0))
    assert not np.array_equal(*(fresh.run("nordfed.km.counts", params)["A"]["groups"]["all"]["times"]
                                for _ in range(2)))


def test_site_secret_is_private_and_kept(tmp_path) -> None:
    secret = site_secret(tmp_path / "keys")
    assert len(secret) == 32 and site_secret(tmp_path / "keys") == secret
    path = tmp_path / "keys" / SITE_SECRET
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        site_secret(tmp_path / "keys")


def test_the_worker_gets_the_secret_by_pipe_not_on_its_command_line(frame: pd.DataFrame, tmp_path) -> None:
    frame[["age", "lab", "y"]].to_csv(tmp_path / "rows.csv", index=False)
    spec = WorkerSpec("A", None, 10, 2048, tables={"default": str(tmp_path / "rows.csv")}, secret=SECRET.hex())
    worker = WarmWorker(spec)
    try:
        worker.wait_ready()
        cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes()
        assert SECRET.hex().encode() not in cmdline
        out = worker.run("nordfed.lasso.moments", wire.encode({"covariates": ["age", "lab"], "outcome": "y",
                                                                "n_folds": 5, "seed": 3}), 60)
        assert out.status == "completed", out.message
        assert np.array_equal(_rows_of(wire.decode(out.result)["parts"]),
                              _moments(frame[["age", "lab", "y"]], DisclosurePolicy(secret=SECRET), 3))
    finally:
        worker.stop()


def test_one_suppressed_cell_is_not_the_total_minus_the_others() -> None:
    # characterization released the person total and every age-sex cell but one: the difference was that cell
    policy = DisclosurePolicy()
    out = suppress_cells_of_total({"a": 50, "b": 7, "c": 12, "d": 30, "e": 0}, policy)
    assert out == {"a": 50, "b": None, "c": None, "d": 30, "e": 0}
    assert suppress_cells_of_total({"a": 50, "b": 7, "c": 3}, policy) == suppress_counts({"a": 50, "b": 7, "c": 3},
                                                                                           policy)


def test_age_groups_of_another_width_are_refused(tmp_path) -> None:
    # 20- against 21-year groups gave "1 male aged exactly 20"; the node releases 5-year groups only
    url = f"duckdb:///{tmp_path / 'a.duckdb'}"
    synth.write(synth.generate("DK", 200, 1), url)
    fed = InProcessFederation.from_cdms({"A": open_cdm(url)})
    with pytest.raises(AlgorithmError, match="age groups are 5 years wide"):
        fed.run("nordfed.characterization", {"age_width": 21})
    assert fed.run("nordfed.characterization", {"age_width": 5})["A"]["age_sex"]
