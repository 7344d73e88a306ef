"""What goes wrong when loading CDM files: one :class:`LoadIssue` per problem (file, row, column), raised
together as a :class:`LoadError` so a user sees every problem at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: rows shown per problem; the rest are counted
MAX_EXAMPLES = 5


@dataclass(frozen=True)
class LoadIssue:
    """One problem in one input file; ``row`` is the 1-based data row (the header is not counted)."""

    file: str
    message: str
    row: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file + (f", row {self.row}" if self.row is not None else "")
        where += f", column {self.column}" if self.column else ""
        return f"{where}: {self.message}"


class LoadError(Exception):
    """The input cannot be loaded; ``issues`` lists every problem found (nothing was written)."""

    def __init__(self, issues: list[LoadIssue]):
        self.issues = issues
        lines = [str(i) for i in issues[:50]]
        if len(issues) > 50:
            lines.append(f"… and {len(issues) - 50} more problems")
        super().__init__(f"{len(issues)} problem(s), nothing was loaded:\n" + "\n".join(lines))


def examples(file: str, column: str | None, mask: np.ndarray, describe: Callable[[int], str],
              rows: np.ndarray) -> list[LoadIssue]:
    """Issues for the first rows in ``mask``; ``rows`` maps positions to 1-based row numbers."""
    idx = np.flatnonzero(mask)
    out = [LoadIssue(file, describe(int(i)), row=int(rows[i]), column=column) for i in idx[:MAX_EXAMPLES]]
    if len(idx) > MAX_EXAMPLES:
        out.append(LoadIssue(file, f"… and {len(idx) - MAX_EXAMPLES} more rows with this problem", column=column))
    return out
