"""The one way nordfed compiles a hot loop: numba, in nopython mode, releasing the GIL (callers split work between
threads), cached on disk next to the module or in the user's cache.

>>> add_one = compiled(lambda x: x + 1)
>>> add_one(1)
2
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import llvmlite.ir as ir
import numba as nb
from numba import types
from numba.extending import intrinsic

F = TypeVar("F", bound=Callable)


def compiled(fn: F) -> F:
    """``fn`` compiled on first call (and cached, where a cache can be written)."""
    try:
        return nb.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location (read-only install and home): compile in each process
        return nb.njit(nogil=True)(fn)


@intrinsic
def trailing_zeros(typingctx, x):  # type: ignore[no-untyped-def]
    """Index of the lowest set bit of a non-zero ``uint64`` (one instruction: LLVM's ``cttz``); inside
    :func:`compiled` functions only.

    >>> compiled(lambda x: trailing_zeros(x))(np.uint64(40))  # doctest: +SKIP
    3
    """
    if x != types.uint64:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))  # zero input: undefined (never passed)

    return types.int64(types.uint64), codegen
