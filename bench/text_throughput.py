"""Throughput of the whole text pipeline (language id → sentences → terms → ConText → ADR pairs → NOTE_NLP rows)
on ~1,200-character notes, on one core. Target: >= 1,000 notes/s.

Prints a JSON document and a one-line summary. Synthetic notes of one site are joined until they reach about
1,200 characters; the first pass over a separate warm-up set fills the per-token caches, as a long-running
annotation job would.

    .venv/bin/python bench/text_throughput.py [--notes 3000] [--seed 1]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import time

import numpy as np
import pandas as pd

from nordfed.synth.notes import make_notes
from nordfed.text.classifier import ContextClassifier, mention_frame
from nordfed.text.lexicon import SITE_LANG
from nordfed.text.pipeline import annotate, note_nlp_rows

TARGET_CHARS = 1200
TARGET_RATE = 1000.0


def long_notes(site: str, n: int, seed: int) -> tuple[list[str], pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    persons = pd.DataFrame({"person_id": np.arange(1, 4 * n + 1), "gender_concept_id": 8507, "year_of_birth": 1950,
                            "observation_period_start_date": dt.date(2015, 1, 1),
                            "observation_period_end_date": dt.date(2023, 1, 1)})
    notes, gold = make_notes(site, persons, rng)
    out, buf = [], ""
    for t in notes["note_text"]:
        buf = f"{buf}\n{t}" if buf else t
        if len(buf) >= TARGET_CHARS:
            out.append(buf[:TARGET_CHARS])
            buf = ""
    return out, notes, gold


def run(texts: list[str], clf: ContextClassifier | None, batch: int = 256) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) to annotate ``texts``."""
    day = dt.date.today()
    t0, c0 = time.perf_counter(), time.process_time()
    for b in range(0, len(texts), batch):
        part = texts[b:b + batch]
        results = [annotate(t) for t in part]
        if clf is not None:
            results = clf.apply_many(part, results)
        for i, (text, res) in enumerate(zip(part, results, strict=True)):
            note_nlp_rows(b + i, text, res, day)
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--notes", type=int, default=3000, help="notes per measurement, spread over the five languages")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    per_site = max(1, args.notes // len(SITE_LANG))
    texts, warm, frames = [], [], []
    for k, site in enumerate(SITE_LANG):
        t, notes, gold = long_notes(site, per_site, args.seed + k)
        w, _, _ = long_notes(site, 50, args.seed + 100 + k)
        texts += t[:per_site]
        warm += w
        frames.append(mention_frame(notes.head(150), gold))
    clf = ContextClassifier.fit(pd.concat(frames))
    run(warm, None)
    run(warm[:200], clf)
    rules = min((run(texts, None) for _ in range(2)), key=lambda r: r[1])
    with_clf = run(texts, clf)
    n = len(texts)
    result = {
        "notes": n, "mean_chars": round(float(np.mean([len(t) for t in texts])), 1),
        # CPU seconds measure one core's throughput even when other work shares the machine
        "rules_cpu_seconds": round(rules[1], 3), "rules_notes_per_cpu_s": round(n / rules[1], 1),
        "rules_wall_seconds": round(rules[0], 3), "rules_notes_per_wall_s": round(n / rules[0], 1),
        "with_classifier_cpu_seconds": round(with_clf[1], 3),
        "with_classifier_notes_per_cpu_s": round(n / with_clf[1], 1),
        "classifier_overhead_ratio": round(with_clf[1] / rules[1], 2), "target_notes_per_s": TARGET_RATE,
        "load_average": os.getloadavg()[0], "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    ok = result["rules_notes_per_cpu_s"] >= TARGET_RATE
    print(f"text_throughput: {result['rules_notes_per_cpu_s']:.0f} notes per CPU-second (rules; "
          f"{result['rules_notes_per_wall_s']:.0f}/s wall at load {result['load_average']:.1f}), "
          f"{result['with_classifier_notes_per_cpu_s']:.0f} with classifier, "
          f"{result['mean_chars']:.0f} chars/note, one core -> {'MEETS' if ok else 'BELOW'} target {TARGET_RATE:.0f}")


if __name__ == "__main__":
    main()
