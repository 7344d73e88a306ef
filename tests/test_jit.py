"""nordfed.jit.compiled: compiled and cached; without a writable cache location it still compiles (per process)."""

from __future__ import annotations

import numba.core.caching as caching
import numpy as np

from nordfed.jit import compiled, trailing_zeros


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


def _lowest(x: np.ndarray) -> np.ndarray:
    out = np.empty(len(x), dtype=np.int64)
    for i in range(len(x)):
        out[i] = trailing_zeros(x[i])
    return out


def test_trailing_zeros_is_the_lowest_set_bit():
    x = np.array([1, 40, 2**63, 2**63 + 2**5, 3 << 20], dtype=np.uint64)
    assert compiled(_lowest)(x).tolist() == [0, 3, 63, 5, 20]
