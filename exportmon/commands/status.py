"""`exportmon status`: Show every monitor's state, as a table, JSON, Nagios or Prometheus."""

from __future__ import annotations

import typer

from exportmon.commands.common import PLACEHOLDER_SETTINGS, not_built


def register(app: typer.Typer) -> None:
    @app.command(
        "status", context_settings=PLACEHOLDER_SETTINGS, epilog="Example: exportmon status --nagios"
    )
    def status_command(ctx: typer.Context) -> None:
        """Show every monitor's state, as a table, JSON, Nagios or Prometheus."""
        not_built("status", 6)
