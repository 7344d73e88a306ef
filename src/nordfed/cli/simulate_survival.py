"""`nordfed simulate` commands (simulate_survival)."""

from __future__ import annotations

import typer


def add_commands(simulate_app: typer.Typer) -> None:
    """Attach this module's commands to the `simulate` group."""
