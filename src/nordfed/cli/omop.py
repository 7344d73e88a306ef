"""`nordfed omop …`: load, validate and summarise OMOP CDM databases."""

from __future__ import annotations

import typer

omop_app = typer.Typer(help="Load, validate and summarise OMOP CDM v5.4 databases.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(omop_app, name="omop")
