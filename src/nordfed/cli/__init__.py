"""The ``nordfed`` command. Each domain registers its own commands from a module of this package."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from typer.core import TyperGroup


class _NordfedGroup(TyperGroup):
    """The top-level group: says so when Ctrl-C stops a command (Typer exits 130 without a word)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr, flush=True)
            raise


app = typer.Typer(
    name="nordfed",
    help="nordfed: federated analytics and clinical AI on OMOP CDM sites.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=_NordfedGroup,
)

# Each module defines register(app). Order decides the order in --help.
for _name in ("omop", "synth", "simulate", "hub", "network", "task", "study", "text", "ledger", "demo"):
    importlib.import_module(f"nordfed.cli.{_name}").register(app)


def main() -> None:  # pragma: no cover - console entry point
    app()
