"""`exportmon fetch`: Find new export mails and download each export."""

from __future__ import annotations

import typer

from exportmon.commands.common import PLACEHOLDER_SETTINGS, not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "fetch",
        context_settings=PLACEHOLDER_SETTINGS,
        epilog="Example: exportmon fetch | exportmon unzip",
    )
    def fetch_command(ctx: typer.Context) -> None:
        """Find new export mails and download each export."""
        not_built("fetch", 4)
