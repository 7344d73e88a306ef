"""The fast text pipeline gives the same annotations as before its throughput rewrite, and its shortcuts equal the
reference computations they replace (scikit-learn's HashingVectorizer, the per-sentence scans)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from nordfed.text.classifier import N_HASH, ContextClassifier, K, _hasher, hash_texts, mention_window, n_dims
from nordfed.text.langid import identify
from nordfed.text.lexicon import TOKEN_RE
from nordfed.text.pipeline import annotate, note_nlp_rows, pipeline, tokenise
from nordfed.text.sentences import split_sentences

#: notes of the five languages, mutated copies (odd case, ``_``, "İ", stray stops, line breaks) and edge cases,
#: with what the pipeline answered before the rewrite (see the file's "about")
GOLDEN = Path(__file__).parent / "data" / "text_annotations_golden.json.gz"


@pytest.fixture(scope="module")
def golden() -> dict:
    with gzip.open(GOLDEN, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def _canon(text: str) -> dict:
    r = annotate(text)
    ids = {id(m): i for i, m in enumerate(r.mentions)}
    rows = note_nlp_rows(1, text, r, dt.date(2024, 1, 1))
    for row in rows:
        row.pop("nlp_date")
    return {
        "lang": r.lang, "sentences": [list(s) for s in r.sentences],
        "mentions": [[m.kind, m.concept_id, m.start, m.end, m.text, m.sentence, m.tok_start, m.tok_end, m.context,
                      m.triggers, m.dose, m.implant_type_concept_id, m.mr_class] for m in r.mentions],
        "adr_pairs": [[ids[id(p.drug)], ids[id(p.reaction)]] for p in r.adr_pairs],
        "rows_sha256": hashlib.sha256(json.dumps(rows, ensure_ascii=False, sort_keys=True).encode()).hexdigest(),
    }


def test_rules_annotations_unchanged(golden: dict) -> None:
    assert len(golden["texts"]) > 100
    assert sum(len(g["mentions"]) for g in golden["rules"]) > 1000
    for i, (text, want) in enumerate(zip(golden["texts"], golden["rules"], strict=True)):
        got = _canon(text)
        for key in want:  # the first differing part names what changed
            assert got[key] == want[key], (i, key, text[:80])


def test_classifier_decisions_unchanged(golden: dict) -> None:
    rng = np.random.default_rng(2024)
    clf = ContextClassifier(rng.normal(size=(K, n_dims(N_HASH))), rng.normal(size=K))
    texts = golden["texts"]
    results = clf.apply_many(texts, [annotate(t) for t in texts])
    got = [[m.context for m in r.mentions] for r in results]
    assert sum(c != "present" for cs in got for c in cs) > 100  # the weights decide, not the rules' default
    assert got == golden["classifier_contexts"]


@pytest.mark.parametrize("n_features", [2**9, N_HASH])
def test_hash_texts_equals_sklearn_hashing_vectorizer(golden: dict, n_features: int) -> None:
    docs: list[str] = ["", " ", "ΣΑΣ ΟΣ", "İstanbul İ", "a\u2028b\x1cc  d\te"]
    for text in golden["texts"][:60]:
        res = annotate(text)
        for m in res.mentions:
            docs.extend(mention_window(text, res.sentences[m.sentence], m))
    assert len(docs) > 500
    hash_texts(docs[::2], n_features)  # half the words cached, half new
    got, want = hash_texts(docs, n_features), _hasher(n_features).transform(docs)
    assert got.shape == want.shape
    assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.data, want.data)  # bit for bit: same sums, same order


def test_tokens_and_triggers_equal_per_sentence_scans(golden: dict) -> None:
    n_trig = 0
    for text in golden["texts"]:
        low = text.lower()
        if len(low) != len(text):
            continue
        sents = split_sentences(text) or [(0, len(text))]
        lower, first_tok = tokenise(low, sents)
        assert lower == [t for s0, s1 in sents for t in TOKEN_RE.findall(low, s0, s1)]
        rules = pipeline(identify(text)).rules
        fast = rules.note_triggers(lower, first_tok)
        for s in range(len(sents)):
            hi = first_tok[s + 1] if s + 1 < len(sents) else len(lower)
            assert fast.get(s, []) == rules.triggers(lower, first_tok[s], hi)
            n_trig += len(fast.get(s, []))
    assert n_trig > 50
