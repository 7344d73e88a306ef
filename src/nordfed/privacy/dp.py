"""Differential privacy: counts released with OpenDP's discrete Laplace noise, and what a release costs.

A researcher asks for it per task, ``params["dp"] = {"epsilon": ε}``; an algorithm registered with ``dp=True``
then releases its counts through :func:`noisy_counts`, and the node charges ε to the researcher's budget at that
node before the run (``policy.privacy_budget``, :mod:`nordfed.node.budget`). An algorithm without ``dp=True``
refuses such a task rather than answer without noise.

The noise is discrete Laplace (the two-sided geometric distribution) sampled exactly from integers by OpenDP,
not from floating point, whose rounding can betray the true value (Mironov 2012). Small-cell suppression still
applies to the noisy counts: post-processing costs no privacy.

>>> noisy_counts([120, 64, 56], epsilon=1.0, sensitivity=2)   # doctest: +SKIP
[121, 61, 58]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

#: the largest ε one task may ask for (a larger one protects next to nothing)
MAX_EPSILON = 10.0


class DPRequestError(ValueError):
    """A task's ``dp`` parameter is malformed."""


def requested_epsilon(params: Mapping[str, Any]) -> float | None:
    """The ε a task asks to spend (None: no differential privacy asked for)."""
    spec = params.get("dp")
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or set(spec) != {"epsilon"}:
        raise DPRequestError('dp must be {"epsilon": a number above 0}')
    eps = spec["epsilon"]
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or not \
            0 < eps <= MAX_EPSILON:
        raise DPRequestError(f"dp.epsilon must be a number above 0 and at most {MAX_EPSILON:g}, got {eps!r}")
    return float(eps)


@lru_cache(maxsize=64)
def _mechanism(scale: float) -> Any:
    import opendp.prelude as dp  # 1.3 s to import: only where a task asks for it

    dp.enable_features("contrib")
    return dp.m.make_laplace(dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int), scale=scale)


def label(epsilon: float) -> str:
    """What a private result says of itself (text, so a secure sum over sites keeps it rather than adding it up)."""
    return f"epsilon {epsilon:g}, discrete Laplace noise"


def noisy_counts(counts: Sequence[int], epsilon: float, sensitivity: int) -> list[int]:
    """``counts`` plus discrete Laplace noise of scale ``sensitivity / epsilon``: ε-differentially private when
    one person changes the counts by at most ``sensitivity`` in sum (L1). Negative results become 0."""
    if sensitivity < 1:
        raise ValueError("sensitivity must be at least 1")
    m = _mechanism(sensitivity / epsilon)
    # OpenDP's own accounting of this mechanism, not only ours: a scale that costs more than asked is a bug
    if m.map(sensitivity) > epsilon * (1 + 1e-9):
        raise RuntimeError(f"the mechanism costs {m.map(sensitivity)} > ε = {epsilon}")
    return [max(0, int(v)) for v in m([int(c) for c in counts])]
