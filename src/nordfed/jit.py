"""The one way nordfed compiles a hot loop: numba, in nopython mode, releasing the GIL (callers split work between
threads), cached on disk next to the module or in the user's cache.

>>> add_one = compiled(lambda x: x + 1)
>>> add_one(1)
2
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba as nb

F = TypeVar("F", bound=Callable)


def compiled(fn: F) -> F:
    """``fn`` compiled on first call (and cached, where a cache can be written)."""
    try:
        return nb.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location (read-only install and home): compile in each process
        return nb.njit(nogil=True)(fn)
