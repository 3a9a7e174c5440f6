"""`exportmon rewrite-csv`: Rewrite CSV files into another dialect."""

from __future__ import annotations

import typer

from exportmon.commands.common import PLACEHOLDER_SETTINGS, not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "rewrite-csv",
        context_settings=PLACEHOLDER_SETTINGS,
        epilog="Example: exportmon rewrite-csv --col-sep '|' --quoting gem export.csv",
    )
    def rewrite_csv_command(ctx: typer.Context) -> None:
        """Rewrite CSV files into another dialect."""
        not_built("rewrite-csv", 5)
