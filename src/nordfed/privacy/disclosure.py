"""Statistical disclosure control applied by every node before a partial result leaves it.

The rules follow DataSHIELD's defaults: no count below the minimum cell count (``nfilter.tab``), no
model with too many parameters for the rows (``nfilter.glm``), no subset smaller than the minimum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


class DisclosureError(Exception):
    """A partial result would reveal too little aggregated data; the message is shown to the researcher."""


@dataclass(frozen=True)
class DisclosurePolicy:
    """A node's disclosure rules. Nodes may raise the thresholds, never lower them below the defaults."""

    min_cell_count: int = 10
    #: maximum ratio of model parameters to rows (DataSHIELD nfilter.glm = 0.33)
    max_params_per_row: float = 0.33
    #: release exact per-time survival aggregates (event times, per-time counts, risk-set sums) whose
    #: counts may lie below the minimum cell count; off by default (see nordfed.fed.survival_data)
    exact_event_times: bool = False
    #: standard deviation (in the data's time unit) of Gaussian noise the site adds to every event and
    #: censoring time before releasing Kaplan-Meier counts (vantage6's practice); 0 = no noise
    event_time_noise: float = 0.0

    def __post_init__(self) -> None:
        if self.min_cell_count < 1:
            raise ValueError("min_cell_count must be at least 1")
        if not self.event_time_noise >= 0:
            raise ValueError("event_time_noise must be zero or positive")
        if not 0 < self.max_params_per_row <= 1:
            raise ValueError("max_params_per_row must be in (0, 1]")


def require_min_rows(n: int, policy: DisclosurePolicy, what: str = "rows") -> None:
    """Refuse an aggregate computed over fewer than ``min_cell_count`` rows (but allow zero rows)."""
    if 0 < n < policy.min_cell_count:
        # the message reaches the researcher, so it must not carry the small count itself
        raise DisclosureError(f"refused: fewer {what} than this node's minimum cell count ({policy.min_cell_count})")


def require_params_ok(n_params: int, n_rows: int, policy: DisclosurePolicy) -> None:
    """DataSHIELD's nfilter.glm: refuse models whose parameter count is too large for the rows."""
    if n_rows and n_params > policy.max_params_per_row * n_rows:
        raise DisclosureError(
            f"refused: model with {n_params} parameters on {n_rows} rows exceeds this node's limit "
            f"({policy.max_params_per_row:g} parameters per row)"
        )


def suppress_counts(counts: Mapping[Any, int], policy: DisclosurePolicy) -> dict[Any, int | None]:
    """Replace every count in ``1 .. min_cell_count-1`` by ``None`` (suppressed); zeros stay zeros."""
    return {k: (None if 0 < int(v) < policy.min_cell_count else int(v)) for k, v in counts.items()}


def check_counts(counts: np.ndarray | list[int], policy: DisclosurePolicy, what: str) -> None:
    """Refuse when any released count lies strictly between zero and the minimum cell count."""
    arr = np.asarray(counts)
    small = (arr > 0) & (arr < policy.min_cell_count)
    if small.any():
        raise DisclosureError(
            f"refused: {int(small.sum())} {what} below this node's minimum cell count ({policy.min_cell_count})"
        )
