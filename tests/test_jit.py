"""nordfed.jit.compiled: compiled and cached; without a writable cache location it still compiles (per process)."""

from __future__ import annotations

import numba.core.caching as caching
import numpy as np

from nordfed.jit import compiled


def _total(x: np.ndarray) -> float:
    s = 0.0
    for v in x:
        s += v
    return s


def test_compiled_matches_python_and_caches():
    f = compiled(_total)
    assert f(np.arange(5.0)) == 10.0
    assert f._cache is not None and f._cache._impl.locator is not None  # cached on disk


def test_no_writable_cache_location_still_compiles(monkeypatch):
    # every locator refuses (a read-only install and a read-only home): numba raises at decoration time
    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])
    f = compiled(_total)
    assert f(np.arange(4.0)) == 6.0
