"""`exportmon demo`: the whole pipeline on an embedded mailbox and export server."""

from __future__ import annotations

import typer

from exportmon.commands.common import PLACEHOLDER_SETTINGS, not_built


def register(app: typer.Typer) -> None:
    @app.command("demo", context_settings=PLACEHOLDER_SETTINGS, epilog="Example: exportmon demo")
    def demo_command(ctx: typer.Context) -> None:
        """Run fetch → unzip → rewrite → deliver on a built-in demo mailbox, with no account."""
        not_built("demo", 6)
