"""Diagnostic algorithms every node ships: a person count by sex and a ping (network round trips, tests).

They live in ``nordfed.fed`` so the standard algorithm discovery (``nordfed.fed.protocol``) finds them at the
node, the client and in process alike.
"""

from __future__ import annotations

import time
from typing import Any

from nordfed.fed.protocol import SiteData, algorithm
from nordfed.privacy.disclosure import require_min_rows, suppress_cells_of_total
from nordfed.privacy.dp import label, noisy_counts, requested_epsilon

#: OMOP standard gender concepts
GENDER = {8507: "male", 8532: "female"}
MAX_PING_SLEEP_S = 30.0


@algorithm("nordfed.count", version="2", dp=True)
def count_by_sex(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Persons in the site's CDM (or a ``sex`` column of its table) by sex; small cells suppressed, with a
    complementary cell where the total would give them away. With ``dp: {epsilon}`` the total and the cells
    are noisy (ε-DP: one person moves the total and one cell by 1, an L1 sensitivity of 2)."""
    if data.cdm is not None and params.get("dataset") is None:
        df = data.cdm.query("SELECT gender_concept_id AS g, count(*) AS n FROM person GROUP BY gender_concept_id")
        by_sex: dict[str, int] = {}
        for g, n in zip(df["g"], df["n"], strict=True):
            key = GENDER.get(int(g), "other") if g is not None else "other"
            by_sex[key] = by_sex.get(key, 0) + int(n)
    else:
        frame = data.frame(params.get("dataset"))
        by_sex = {str(k): int(v) for k, v in frame["sex"].value_counts().items()}
    total = sum(by_sex.values())
    require_min_rows(total, data.policy, "persons")
    epsilon = requested_epsilon(params)
    if epsilon is not None:
        keys = sorted(by_sex)
        total, *cells = noisy_counts([total, *(by_sex[k] for k in keys)], epsilon, sensitivity=2)
        by_sex = dict(zip(keys, cells, strict=True))
    # the total is released, so a small cell needs a complementary one (25 persons, 17 male gave 8 female)
    out = {"persons": total, "by_sex": suppress_cells_of_total(dict(sorted(by_sex.items())), data.policy)}
    return out if epsilon is None else {**out, "dp": label(epsilon)}


@algorithm("nordfed.ping", version="1")
def ping(data: SiteData, params: dict[str, Any]) -> dict[str, Any]:
    """Echo a parameter back after an optional short sleep (round-trip benchmarks, crash tests); no data."""
    delay = float(params.get("sleep", 0.0))
    if not 0.0 <= delay <= MAX_PING_SLEEP_S:
        raise ValueError(f"sleep must be within 0..{MAX_PING_SLEEP_S} s")
    if delay:
        time.sleep(delay)
    return {"site": data.site, "echo": params.get("echo")}
