"""`exportmon unzip`: Unpack downloaded .zip exports (a .csv passes through)."""

from __future__ import annotations

import typer

from exportmon.commands.common import PLACEHOLDER_SETTINGS, not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "unzip",
        context_settings=PLACEHOLDER_SETTINGS,
        epilog="Example: exportmon fetch | exportmon unzip",
    )
    def unzip_command(ctx: typer.Context) -> None:
        """Unpack downloaded .zip exports (a .csv passes through)."""
        not_built("unzip", 5)
