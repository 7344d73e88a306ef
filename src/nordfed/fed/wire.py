"""JSON wire format for partial results and task inputs.

Both transports encode with this module, so an algorithm sees exactly the same values (float64 arrays,
ints, strings) in process and over the network.

>>> decode(encode({"xtx": np.eye(2)}))["xtx"].shape
(2, 2)
"""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np

_ND = "__ndarray__"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return obj.tolist()
        arr = np.ascontiguousarray(obj)
        return {_ND: base64.b64encode(arr.tobytes()).decode("ascii"), "dtype": arr.dtype.str, "shape": arr.shape}
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"cannot send {type(obj).__name__} over the wire")


def _hook(d: dict[str, Any]) -> Any:
    if _ND in d:
        buf = base64.b64decode(d[_ND])
        return np.frombuffer(buf, dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()
    return d


def encode(obj: Any) -> bytes:
    """Serialise a result (dicts, lists, numbers, strings, numpy arrays) to UTF-8 JSON bytes."""
    return json.dumps(obj, default=_default, separators=(",", ":"), allow_nan=True).encode("utf-8")


def decode(data: bytes | str) -> Any:
    """Inverse of :func:`encode`."""
    return json.loads(data, object_hook=_hook)
