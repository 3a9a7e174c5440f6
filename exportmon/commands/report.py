"""`exportmon report`: Report deliveries and failures over a period."""

from __future__ import annotations

import typer

from exportmon.commands.common import PLACEHOLDER_SETTINGS, not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "report",
        context_settings=PLACEHOLDER_SETTINGS,
        epilog="Example: exportmon report --since 7d --html > week.html",
    )
    def report_command(ctx: typer.Context) -> None:
        """Report deliveries and failures over a period."""
        not_built("report", 6)
