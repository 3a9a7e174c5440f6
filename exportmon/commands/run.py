"""`exportmon run`: Fetch, unpack, rewrite, deliver and archive: once, or watching."""

from __future__ import annotations

import typer

from exportmon.commands.common import PLACEHOLDER_SETTINGS, not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "run", context_settings=PLACEHOLDER_SETTINGS, epilog="Example: exportmon run --once"
    )
    def run_command(ctx: typer.Context) -> None:
        """Fetch, unpack, rewrite, deliver and archive: once, or watching."""
        not_built("run", 6)
