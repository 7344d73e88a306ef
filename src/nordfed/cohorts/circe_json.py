"""Reading a Circe cohort JSON document: typed values whose errors name their JSON path (``$.PrimaryCriteria...``),
and keys nordfed does not understand refused rather than ignored."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any


class CirceError(ValueError):
    """A cohort definition is malformed or uses a Circe feature nordfed does not support."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


class JsonObject(dict[str, Any]):
    """A JSON object as parsed, remembering keys that appeared more than once (JSON keeps only the last)."""

    duplicates: tuple[str, ...] = ()


def object_pairs(pairs: list[tuple[str, Any]]) -> JsonObject:
    obj = JsonObject(pairs)
    obj.duplicates = tuple(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
    return obj


def no_duplicates(value: Any, path: str) -> None:
    """A key given twice in one object would silently lose its first value (e.g. one of two InclusionRules
    lists), so it is an error naming the key's JSON path."""
    if isinstance(value, dict):
        for key in getattr(value, "duplicates", ()):
            raise CirceError(f"{path}.{key}", "appears twice in the same object (JSON would keep only the last)")
        for key, child in value.items():
            no_duplicates(child, f"{path}.{key}")
    elif isinstance(value, list):
        for i, child in enumerate(value):
            no_duplicates(child, f"{path}[{i}]")


def json_kind(value: Any) -> str:
    """A value's JSON type, for messages (``null`` rather than Python's NoneType)."""
    names = {type(None): "null (or nothing)", bool: "true/false", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def json_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CirceError(path, f"expected an object, got {json_kind(value)}")
    return value


def json_list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise CirceError(path, f"expected a list, got {json_kind(value)}")
    return value


def json_int(value: Any, path: str, default: int | None = None, minimum: int | None = None) -> int:
    if value is None and default is not None:
        return default
    # NaN and Infinity parse as JSON numbers in Python but are no count of days
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or int(value) != value):
        raise CirceError(path, f"expected an integer, got {json_kind(value) if value is None else repr(value)}")
    if minimum is not None and value < minimum:
        raise CirceError(path, f"must be at least {minimum}, got {int(value)}")
    return int(value)


def json_bool(value: Any, path: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise CirceError(path, f"expected true or false, got {value!r}")
    return value


def is_unset(value: Any) -> bool:
    return value is None or value is False or value == [] or value == {}


def check_keys(obj: dict[str, Any], path: str, known: set[str], ignored: set[str] = frozenset()) -> None:
    for key, value in obj.items():
        if key in known or key in ignored:
            continue
        if is_unset(value):
            continue  # ATLAS exports unset attributes as null / empty
        raise CirceError(f"{path}.{key}", "is not supported by nordfed's Circe subset")
