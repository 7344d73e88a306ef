"""Secure aggregation: each site masks its partial result so that the researcher learns only the sum over sites.

Pairwise masking as in Bonawitz et al. (CCS 2017) without its dropout recovery: every pair of sites shares a key
(X25519, PyNaCl's ``Box``), stretches it into a mask (ChaCha20 keyed by a BLAKE2b digest of the shared key and the
task's nonce: libsodium's ``randombytes_buf_deterministic``), and the site named first adds the mask while the
other subtracts it. The numbers are fixed point with :data:`FRACTION_BITS` bits after the point, modulo 2**128, so
the masks cancel exactly in the sum and any one site's masked numbers are uniformly random to whoever lacks that
site's pairwise keys. A site that drops out leaves the sum unreadable: the round fails and is run again (a
federation of a few hospitals, not a million phones).

What is summed is every number in the result (ints, floats, arrays of them); the rest of the result (dict keys,
list lengths, array shapes, strings, booleans, None) is its *skeleton* and must be the same at every site.

>>> keys = {s: PrivateKey.generate() for s in ("DK", "NO")}
>>> peers = {s: b64(bytes(k.public_key)) for s, k in keys.items()}
>>> parts = [mask({"n": n}, s, keys[s], peers, b"task-nonce") for s, n in (("DK", 3), ("NO", 4))]
>>> unmask_sum(parts)
{'n': 7}
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from nacl.encoding import RawEncoder
from nacl.hash import blake2b
from nacl.public import Box, PrivateKey, PublicKey
from nacl.utils import randombytes_deterministic

from nordfed.privacy.crypto import VerificationError, b64, unb64

#: binary digits after the point: sums are exact to 2**-64 (about 5e-20) in each number, so small sums (a risk
#: set's weights far out in the tail) keep their digits too
FRACTION_BITS = 64
#: the largest magnitude a site may mask (the sum of up to 2**6 sites then still fits in 127 bits)
LIMIT = 2.0**56
#: marks a masked result on the wire, and a summed leaf inside a skeleton
MARK = "__secure_sum__"
_LEAF = "__summed__"
_PERSON = b"nordfed-secsum"  # BLAKE2b personalisation: these seeds serve no other purpose

__all__ = ["FRACTION_BITS", "SecureSumError", "is_masked", "mask", "round_id", "unmask_sum"]


class SecureSumError(ValueError):
    """A result that cannot be masked (a non-finite or huge number), or masked results that do not add up."""


def is_masked(result: Any) -> bool:
    return isinstance(result, dict) and result.get(MARK) == 1


def _split(result: Any, values: list[np.ndarray]) -> Any:
    """The skeleton of ``result``; its numbers are appended to ``values`` (flattened, as float64)."""
    if isinstance(result, dict):
        if _LEAF in result or MARK in result:
            raise SecureSumError(f"a result may not use the key {_LEAF!r} or {MARK!r}")
        return {str(k): _split(v, values) for k, v in result.items()}
    if isinstance(result, list | tuple):
        return [_split(v, values) for v in result]
    if isinstance(result, bool | np.bool_ | str) or result is None:
        return result
    arr = np.asarray(result)
    if arr.dtype.kind not in "iuf":
        raise SecureSumError(f"cannot sum a value of type {arr.dtype} securely")
    values.append(arr.astype(np.float64).ravel())
    return {_LEAF: "i" if arr.dtype.kind in "iu" else "f", "shape": list(arr.shape) if arr.ndim else None}


def _join(skeleton: Any, values: np.ndarray, at: list[int]) -> Any:
    if isinstance(skeleton, dict) and _LEAF in skeleton:
        shape = skeleton["shape"]
        size = int(np.prod(shape)) if shape is not None else 1
        part = values[at[0]:at[0] + size]
        at[0] += size
        if skeleton[_LEAF] == "i":
            part = np.rint(part).astype(np.int64)
        if shape is None:
            return part[0].item()
        return part.reshape(shape)
    if isinstance(skeleton, dict):
        return {k: _join(v, values, at) for k, v in skeleton.items()}
    if isinstance(skeleton, list):
        return [_join(v, values, at) for v in skeleton]
    return skeleton


def _fixed(v: np.ndarray) -> np.ndarray:
    """``v`` as 128-bit two's complement fixed point: an ``(n, 2)`` uint64 array of (high, low) words."""
    if not np.isfinite(v).all():
        raise SecureSumError("cannot mask a number that is not finite (NaN or infinity)")
    if len(v) and np.abs(v).max() >= LIMIT:
        raise SecureSumError(f"cannot mask a number of magnitude {np.abs(v).max():.3g} (at most {LIMIT:.3g})")
    w = np.rint(np.ldexp(v, FRACTION_BITS))
    out = np.empty((len(v), 2), dtype=np.uint64)
    # below 2**63 the number is an int64: its two's complement is the low word, its sign fills the high word
    small = np.abs(w) < 2.0**63
    iw = np.where(small, w, 0.0).astype(np.int64)
    out[:, 0] = (iw >> np.int64(63)).view(np.uint64)
    out[:, 1] = iw.view(np.uint64)
    big = np.flatnonzero(~small)
    if len(big):
        # w is a multiple of 2**11 here, so its remainder modulo 2**64 has at most 53 digits: exact
        high = np.floor(np.ldexp(w[big], -64))
        out[big, 0] = high.astype(np.int64).view(np.uint64)
        out[big, 1] = (w[big] - np.ldexp(high, 64)).astype(np.uint64)
    return out


def _float(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_fixed` (for the sum, to float64)."""
    # the low word in two halves: a float64 holds 53 bits, and a small negative number's low word has 64
    low = x[:, 1]
    return (np.ldexp(x[:, 0].view(np.int64).astype(np.float64), 64 - FRACTION_BITS)
            + np.ldexp((low >> np.uint64(32)).astype(np.float64), 32 - FRACTION_BITS)) \
        + np.ldexp((low & np.uint64(0xFFFFFFFF)).astype(np.float64), -FRACTION_BITS)


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a + b`` modulo 2**128 (numpy's uint64 arithmetic wraps; the low word's carry goes to the high word)."""
    out = a + b
    out[:, 0] += out[:, 1] < a[:, 1]
    return out


def _negate(a: np.ndarray) -> np.ndarray:
    out = ~a
    out[:, 1] += np.uint64(1)
    out[:, 0] += out[:, 1] == 0
    return out


def round_id(nonce: str, algorithm: str, params: str, peers: Mapping[str, str]) -> bytes:
    """What the masks of one round are derived from: the task's nonce, algorithm, (encoded) parameters and peers.
    A site handed other parameters or peers than the rest (a researcher signs each site's input) masks with pads
    that do not cancel, so the sum comes out as noise instead of revealing the others' numbers by difference."""
    text = json.dumps([nonce, algorithm, params, sorted(peers.items())], separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).digest()


def _pair_mask(me: PrivateKey, peer: PublicKey, session: bytes, pair: str, n: int) -> np.ndarray:
    shared = Box(me, peer).shared_key()  # the same for both sites of the pair
    seed = blake2b(session + b"\x00" + pair.encode("utf-8"), key=shared, digest_size=32, person=_PERSON,
                   encoder=RawEncoder)
    return np.frombuffer(randombytes_deterministic(16 * n, seed), dtype=np.uint64).reshape(n, 2).copy()


def mask(result: Any, me: str, key: PrivateKey, peers: Mapping[str, str], session: bytes) -> dict[str, Any]:
    """``result`` masked for a sum over the sites in ``peers`` (name → base64 X25519 public key, ``me``
    included, the same mapping at every site); ``session`` is unique to the round (:func:`round_id`)."""
    if peers.get(me) != b64(bytes(key.public_key)):
        raise VerificationError(f"secure aggregation: the peer list does not give {me!r} this site's key")
    values: list[np.ndarray] = []
    skeleton = _split(result, values)
    flat = np.concatenate(values) if values else np.zeros(0)
    out = _fixed(flat)
    for name in sorted(peers):
        if name == me:
            continue
        first, second = sorted((me, name))
        m = _pair_mask(key, PublicKey(unb64(peers[name], f"public key of {name}")), session,
                       f"{first}\x00{second}", len(flat))
        out = _add(out, m if me == first else _negate(m))
    return {MARK: 1, "skeleton": skeleton, "sites": sorted(peers), "words": out}


def unmask_sum(parts: Sequence[Any]) -> Any:
    """The sum of the masked results of every site in their peer list (each site's result exactly once)."""
    if not parts:
        raise SecureSumError("no results to sum")
    if not all(is_masked(p) for p in parts):
        raise SecureSumError("a site answered without masking its result (secure aggregation was asked for)")
    first = parts[0]
    if any(p["sites"] != first["sites"] for p in parts) or len(parts) != len(first["sites"]):
        raise SecureSumError(f"secure aggregation needs one result from each of {', '.join(first['sites'])}; "
                             f"got {len(parts)}")
    if any(p["skeleton"] != first["skeleton"] for p in parts):
        raise SecureSumError("sites returned results of different shapes (keys, lengths or non-numeric parts), "
                             "which cannot be summed")
    words = [np.asarray(p["words"], dtype=np.uint64).reshape(-1, 2) for p in parts]
    if any(len(w) != len(words[0]) for w in words):
        raise SecureSumError("sites returned different numbers of values")
    total = words[0].copy()
    for w in words[1:]:
        total = _add(total, w)
    return _join(first["skeleton"], _float(total), [0])
