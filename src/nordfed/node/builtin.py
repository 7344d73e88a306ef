"""Deprecated location of the diagnostic algorithms; they moved to :mod:`nordfed.fed.diagnostics`.

Kept as a re-export so existing ``import nordfed.node.builtin`` lines keep working; remove once no caller is left.
"""

from nordfed.fed.diagnostics import GENDER, MAX_PING_SLEEP_S, count_by_sex, ping

__all__ = ["GENDER", "MAX_PING_SLEEP_S", "count_by_sex", "ping"]
