"""A trainable mention-level context classifier: hashed character n-grams + multinomial logistic regression.

Features are the text left and right of a mention inside its sentence, hashed separately (sklearn
HashingVectorizer: every site computes the same feature space without sharing a vocabulary), plus a one-hot of
the ConText rules' decision, so the model learns where the rules go wrong. The objective is the one
scikit-learn's ``LogisticRegression(C=C)`` minimises (summed cross-entropy + ||W||²/(2C), intercepts free);
:func:`loss_grad` evaluates it on one site's rows so a federation can sum the pieces exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from nordfed.text.context import CLASSES
from nordfed.text.pipeline import Mention, NoteResult, annotate

N_HASH = 2**12
WINDOW = 60
K = len(CLASSES)


def _hasher(n_features: int, norm: str | None = "l2") -> HashingVectorizer:
    return HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=n_features, alternate_sign=False,
                             norm=norm, lowercase=True)


#: a long-running job sees ever new words; past this many a word cache starts afresh
_WORD_CACHE_MAX = 200_000
_WORD_COLUMNS: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}


def hash_texts(texts: list[str], n_features: int = N_HASH) -> sp.csr_matrix:
    """Exactly ``_hasher(n_features).transform(texts)``, with each word hashed once per process.

    ``char_wb`` n-grams never cross white space, so a text's counts are the sum of its words' counts: words seen
    before cost a dict lookup instead of a Python loop over their n-grams. Counts are whole numbers (sums exact in
    any order), and duplicates are summed and rows L2-normalised as scikit-learn does, so the matrix is identical
    to the bit."""
    cache = _WORD_COLUMNS.setdefault(n_features, {})
    if len(cache) > _WORD_CACHE_MAX:
        cache.clear()
    words = [t.lower().split() for t in texts]
    flat = list(chain.from_iterable(words))
    vocab = {w: k for k, w in enumerate(dict.fromkeys(flat))}  # this batch's distinct words, in order
    new = [w for w in vocab if w not in cache]
    if new:
        x = _hasher(n_features, norm=None).transform(new)
        for k, w in enumerate(new):
            a, b = x.indptr[k], x.indptr[k + 1]
            cache[w] = (x.indices[a:b], x.data[a:b])
    cols = [cache[w] for w in vocab]
    # (texts x words) @ (words x n-gram counts): the sums of whole numbers happen in C
    per_word = sp.csr_matrix(
        (np.concatenate([c[1] for c in cols]) if cols else np.zeros(0),
         np.concatenate([c[0] for c in cols]) if cols else np.zeros(0, dtype=np.int32),
         np.cumsum([0, *(len(c[0]) for c in cols)])), shape=(len(vocab), n_features), dtype=np.float64)
    word_ids = np.fromiter(map(vocab.__getitem__, flat), dtype=np.int64, count=len(flat))
    per_text = sp.csr_matrix((np.ones(len(flat)), word_ids, np.cumsum([0, *map(len, words)])),
                             shape=(len(texts), len(vocab)))
    out = (per_text @ per_word).tocsr()
    out.sum_duplicates()
    return normalize(out, norm="l2", copy=False)


def n_dims(n_features: int = N_HASH) -> int:
    return 2 * n_features + K


def design(left: list[str], right: list[str], rule: list[str], n_features: int = N_HASH) -> sp.csr_matrix:
    """Hashed left and right windows plus a one-hot of the rules' class (same columns at every site)."""
    n = len(rule)
    codes = np.array([CLASSES.index(r) for r in rule], dtype=np.int64)
    onehot = sp.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, K))
    return sp.hstack([hash_texts(left, n_features), hash_texts(right, n_features), onehot]).tocsr()


def featurize(frame: pd.DataFrame, n_features: int = N_HASH) -> sp.csr_matrix:
    """Rows ``left``, ``right``, ``rule`` → sparse design matrix (same columns at every site)."""
    return design(frame["left"].tolist(), frame["right"].tolist(), frame["rule"].tolist(), n_features)


def labels(frame: pd.DataFrame) -> np.ndarray:
    return np.array([CLASSES.index(c) for c in frame["label"]], dtype=np.int64)


def mention_window(text: str, sentence: tuple[int, int], m: Mention) -> tuple[str, str]:
    s0, s1 = sentence
    return text[max(s0, m.start - WINDOW):m.start], text[m.end:min(s1, m.end + WINDOW)]


def unpack(theta: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    return theta[:K * d].reshape(K, d), theta[K * d:]


def loss_grad(theta: np.ndarray, x: sp.csr_matrix, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Summed multinomial cross-entropy of rows ``x, y`` at ``theta`` and its gradient (no penalty)."""
    w, b = unpack(theta, x.shape[1])
    z = np.asarray(x @ w.T) + b
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -float(logp[np.arange(len(y)), y].sum())
    r = np.exp(logp)
    r[np.arange(len(y)), y] -= 1.0
    gw = np.asarray((x.T @ r).T)
    return loss, np.concatenate([gw.ravel(), r.sum(axis=0)])


def penalised(theta: np.ndarray, loss: float, grad: np.ndarray, d: int, c: float) -> tuple[float, np.ndarray]:
    w = theta[:K * d]
    g = grad.copy()
    g[:K * d] += w / c
    return loss + float(w @ w) / (2 * c), g


def minimise(fun, d: int, c: float, max_iter: int = 500, tol: float = 1e-7) -> tuple[np.ndarray, int]:
    """L-BFGS on ``fun(theta) -> (summed loss, summed grad)`` plus the ridge penalty; returns (theta, iterations)."""

    def obj(theta: np.ndarray) -> tuple[float, np.ndarray]:
        loss, grad = fun(theta)
        return penalised(theta, loss, grad, d, c)

    # L-BFGS-B's BLAS calls on a long vector oversubscribe a busy machine's cores ten-fold; one thread is faster
    with threadpool_limits(1):
        res = scipy.optimize.minimize(obj, np.zeros(K * d + K), jac=True, method="L-BFGS-B",
                                      options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-12})
    return res.x, int(res.nit)


@dataclass
class ContextClassifier:
    """Fitted weights with scikit-learn style predict/predict_proba on mention frames."""

    coef_: np.ndarray
    intercept_: np.ndarray
    n_features: int = N_HASH
    n_iter_: int = 0
    rounds: int = 0  # federated rounds (objective evaluations) used to fit

    @classmethod
    def fit(cls, frame: pd.DataFrame, c: float = 10.0, n_features: int = N_HASH) -> ContextClassifier:
        """Centralised fit on one frame (what a single site, or pooled data, would train)."""
        x, y = featurize(frame, n_features), labels(frame)
        theta, nit = minimise(lambda t: loss_grad(t, x, y), x.shape[1], c)
        w, b = unpack(theta, x.shape[1])
        return cls(w, b, n_features, nit)

    @classmethod
    def from_theta(cls, theta: np.ndarray, n_features: int = N_HASH, n_iter: int = 0) -> ContextClassifier:
        w, b = unpack(np.asarray(theta, dtype=float), n_dims(n_features))
        return cls(w, b, n_features, n_iter)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self._proba(featurize(frame, self.n_features))

    def _proba(self, x: sp.csr_matrix) -> np.ndarray:
        z = np.asarray(x @ self.coef_.T) + self.intercept_
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.array(CLASSES, dtype=object)[self.predict_proba(frame).argmax(axis=1)]

    def apply(self, text: str, res: NoteResult) -> NoteResult:
        """Replace the rules' context of every implant/model mention by the classifier's decision."""
        return self.apply_many([text], [res])[0]

    def apply_many(self, texts: list[str], results: list[NoteResult]) -> list[NoteResult]:
        """:meth:`apply` for a batch of notes: one hashing pass and one sparse product for all their mentions."""
        ms, left, right, rule = [], [], [], []
        for text, res in zip(texts, results, strict=True):
            for m in res.mentions:
                if m.kind in ("implant", "model"):
                    a, b = mention_window(text, res.sentences[m.sentence], m)
                    ms.append(m)
                    left.append(a)
                    right.append(b)
                    rule.append(m.context)
        if ms:
            best = self._proba(design(left, right, rule, self.n_features)).argmax(axis=1)
            for m, k in zip(ms, best.tolist(), strict=True):
                m.context = CLASSES[k]
        return results

    def save(self, path: str | Path) -> None:
        np.savez(path, coef=self.coef_, intercept=self.intercept_, n_features=self.n_features)

    @classmethod
    def load(cls, path: str | Path) -> ContextClassifier:
        with np.load(path) as z:
            return cls(z["coef"], z["intercept"], int(z["n_features"]))


def mention_frame(notes: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """Training rows: every implant/model mention the pipeline finds that matches a gold mention."""
    g = gold[gold["kind"].isin(("implant", "model"))]
    by_note: dict[int, list[dict]] = {}
    for rec in g.to_dict("records"):
        by_note.setdefault(int(rec["note_id"]), []).append(rec)
    rows = []
    for nid, text in zip(notes["note_id"], notes["note_text"], strict=True):
        golds = by_note.get(int(nid), [])
        if not golds:
            continue
        res = annotate(text)
        for m in res.mentions:
            if m.kind not in ("implant", "model"):
                continue
            hit = next((r for r in golds if r["note_nlp_concept_id"] == m.concept_id
                        and int(r["offset"]) < m.end and m.start < int(r["end"])), None)
            if hit is None:
                continue
            left, right = mention_window(text, res.sentences[m.sentence], m)
            rows.append({"note_id": int(nid), "lang": res.lang, "left": left, "right": right, "rule": m.context,
                         "label": hit["context"], "hard": bool(hit["hard"])})
    return pd.DataFrame(rows, columns=["note_id", "lang", "left", "right", "rule", "label", "hard"])
