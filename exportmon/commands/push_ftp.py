"""`exportmon push-ftp`: Upload files to an FTP or FTPS server, atomically."""

from __future__ import annotations

import typer

from exportmon.commands.common import PLACEHOLDER_SETTINGS, not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "push-ftp",
        context_settings=PLACEHOLDER_SETTINGS,
        epilog="Example: exportmon push-ftp --url ftps://ftp.example.com --dir in FILES...",
    )
    def push_ftp_command(ctx: typer.Context) -> None:
        """Upload files to an FTP or FTPS server, atomically."""
        not_built("push-ftp", 5)
