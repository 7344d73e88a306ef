"""The examples in nordfed's docstrings run as written (``# doctest: +SKIP`` marks those that need a site or a hub):
an example that no longer works misleads more than none."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import nordfed

#: modules that only run inside a tool (Alembic's migration environment)
NOT_IMPORTABLE = {"nordfed.hub.migrations.env"}
MODULES = sorted(m.name for m in pkgutil.walk_packages(nordfed.__path__, "nordfed.") if m.name not in NOT_IMPORTABLE)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} fail (python -m doctest)"
