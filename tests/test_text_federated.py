"""Federated training of the context classifier: equals a pooled scikit-learn fit, beats site-only models."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from threadpoolctl import threadpool_limits

from nordfed.fed.protocol import AlgorithmError, InProcessFederation
from nordfed.synth.notes import make_notes
from nordfed.text.classifier import ContextClassifier, featurize, labels, mention_frame
from nordfed.text.fedtrain import fit_federated
from nordfed.text.lexicon import SITE_LANG

SITES = sorted(SITE_LANG)


def _frames(seed: int, n: int) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    p = pd.DataFrame({"person_id": np.arange(1, n + 1), "gender_concept_id": 8507, "year_of_birth": 1955,
                      "observation_period_start_date": dt.date(2015, 1, 1),
                      "observation_period_end_date": dt.date(2023, 12, 31)})
    return {s: mention_frame(*make_notes(s, p, rng)) for s in SITES}


@pytest.fixture(scope="module")
def data() -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    return _frames(4242, 220), _frames(90_211, 120)  # test seed never used in development


def _f1(frame: pd.DataFrame, pred: np.ndarray) -> float:
    return float(f1_score(frame["label"], pred, average="macro"))


def test_federated_equals_pooled_sklearn(data) -> None:
    train, test = data
    small = {s: f.iloc[:120] for s, f in train.items()}
    nf = 2**9
    fed = fit_federated(InProcessFederation.from_frames(small), c=5.0, n_features=nf)
    pooled = pd.concat(small.values())
    with threadpool_limits(1):
        ref = LogisticRegression(C=5.0, tol=1e-10, max_iter=5000).fit(featurize(pooled, nf), labels(pooled))
    x_test = pd.concat(test.values())
    diff = np.abs(ref.predict_proba(featurize(x_test, nf)) - fed.predict_proba(x_test)).max()
    assert diff < 1e-4  # both solvers stop at their own tolerance on the same convex objective
    assert fed.rounds > 5


def test_federated_close_to_central_and_better_than_each_site(data) -> None:
    train, test = data
    nf = 2**11
    fed = fit_federated(InProcessFederation.from_frames(train), n_features=nf)
    central = ContextClassifier.fit(pd.concat(train.values()), n_features=nf)
    everything = pd.concat(test.values())
    f_fed, f_central = _f1(everything, fed.predict(everything)), _f1(everything, central.predict(everything))
    assert abs(f_fed - f_central) <= 0.01
    assert f_fed >= _f1(everything, everything["rule"].to_numpy())  # the model does not undo the rules
    hard = everything[everything["hard"]]
    assert (fed.predict(hard) == hard["label"]).mean() > (hard["rule"] == hard["label"]).mean() + 0.3
    for site in SITES:
        others = pd.concat([f for s, f in test.items() if s != site])
        alone = ContextClassifier.fit(train[site], n_features=nf)
        assert _f1(others, fed.predict(others)) > _f1(others, alone.predict(others)), site


def test_small_sites_are_refused(data) -> None:
    train, _ = data
    fed = InProcessFederation.from_frames({"NO": train["NO"].iloc[:5], "SE": train["SE"]})
    with pytest.raises(AlgorithmError, match="NO: refused: fewer labelled mentions than"):
        fit_federated(fed)


def test_classifier_round_trip_and_apply(tmp_path, data) -> None:
    from nordfed.text.pipeline import annotate

    train, _ = data
    model = ContextClassifier.fit(train["NO"], n_features=2**10)
    model.save(tmp_path / "ctx.npz")
    back = ContextClassifier.load(tmp_path / "ctx.npz")
    assert np.allclose(back.predict_proba(train["NO"]), model.predict_proba(train["NO"]))
    text = "Ingen pacemaker. Har ICD."
    res = back.apply(text, annotate(text, "nb"))
    assert [m.context for m in res.mentions] == ["negated", "present"]
