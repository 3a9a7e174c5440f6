"""`exportmon serve`: the live status page, JSON, Prometheus metrics and a health check."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from exportmon import redact
from exportmon.commands.common import options
from exportmon.commands.console import print_note
from exportmon.errors import UsageError
from exportmon.hooks import credentials
from exportmon.hooks.credentials import SecretSource
from exportmon.signals import Shutdown, handle_signals
from exportmon.units import parse_duration

if TYPE_CHECKING:
    from exportmon.web.server import Access, StatusServer

EPILOG = """\
Examples:

  exportmon serve                                  # http://127.0.0.1:8580/ on this machine

  exportmon serve --listen 127.0.0.1:9000 --refresh 10

  EXPORTMON_SERVE_TOKEN=$(cat /etc/exportmon/token) exportmon serve --listen 0.0.0.0:8580

  exportmon serve --listen [::]:8580 --auth-user ops --auth-password-env SERVE_PASSWORD

  curl -fsS http://127.0.0.1:8580/healthz          # 200 ok when every monitor is ok, else 503
"""

TOKEN_ENV = "EXPORTMON_SERVE_TOKEN"


def register(app: typer.Typer) -> None:
    app.command("serve", epilog=EPILOG)(serve_command)


def serve_command(
    ctx: typer.Context,
    listen: Annotated[
        str,
        typer.Option(
            "--listen", metavar="HOST:PORT", help="Where to listen (loopback by default)."
        ),
    ] = "127.0.0.1:8580",
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            metavar="TOKEN",
            envvar=TOKEN_ENV,
            show_envvar=True,
            help="Require this token (Bearer header or ?token=); prefer the variable.",
        ),
    ] = None,
    auth_user: Annotated[
        str | None,
        typer.Option("--auth-user", metavar="USER", help="Require basic auth as USER."),
    ] = None,
    auth_password_env: Annotated[
        str | None,
        typer.Option(
            "--auth-password-env", metavar="VAR", help="The basic-auth password's variable."
        ),
    ] = None,
    auth_password_command: Annotated[
        str | None,
        typer.Option(
            "--auth-password-command", metavar="CMD", help="A command printing the password."
        ),
    ] = None,
    refresh: Annotated[
        float,
        typer.Option("--refresh", metavar="SECONDS", min=1, help="Seconds between page refreshes."),
    ] = 5.0,
    since: Annotated[
        str,
        typer.Option("--since", metavar="DURATION", help="How far back the page lists exports."),
    ] = "7d",
) -> None:
    """Serve a live status page, /metrics, /healthz, /api/status and /api/report.

    The page shows every monitor's state (as `status`) and the recent exports
    with their deliveries and failures (as `report`), and refreshes itself.
    Read-only. It listens on 127.0.0.1 unless a token (--token or
    EXPORTMON_SERVE_TOKEN) or basic auth (--auth-user with a password from a
    variable or a command) is required. /healthz answers 200 when every monitor
    is ok and 503 otherwise, without asking who is there. Stop it with Ctrl-C.
    """
    opts = options(ctx)
    access = build_access(token, auth_user, auth_password_env, auth_password_command)
    server = start_server(
        opts.configs, listen, access, refresh=refresh, since=since, strict=opts.strict
    )
    shutdown = Shutdown()
    if not opts.quiet:
        print_note(f"Status page: {server.url}  (Ctrl-C stops)")
    with handle_signals(shutdown):
        try:
            while not shutdown.requested:
                shutdown.sleep(1.0)
        finally:
            server.stop()


def build_access(
    token: str | None,
    user: str | None,
    password_env: str | None,
    password_command: str | None,
) -> Access:
    """Who may read the page: a token, basic auth, or (on loopback) anyone."""
    from exportmon.web.server import Access

    if (password_env or password_command) and not user:
        raise UsageError("--auth-password-env/--auth-password-command go with --auth-user")
    password = None
    if user:
        if not (password_env or password_command):
            raise UsageError(
                "--auth-user needs a password",
                hint="give --auth-password-env VAR or --auth-password-command CMD",
            )
        source = SecretSource("--auth-password", None, password_env, password_command)
        password = credentials.resolve(source)
    if token is not None:
        if len(token) < 16:
            raise UsageError(
                "--token: use at least 16 characters", hint="e.g. openssl rand -hex 16"
            )
        redact.register(token)
    return Access(token=token, user=user, password=password)


def start_server(
    configs: list[Path],
    listen: str,
    access: Access,
    *,
    refresh: float = 5.0,
    since: str = "7d",
    strict: bool = False,
) -> StatusServer:
    """Start the status server on its own thread (for `serve` and `run --serve`)."""
    from exportmon.web.data import Source
    from exportmon.web.server import StatusApp, StatusServer

    try:
        period = timedelta(seconds=parse_duration(since))
    except ValueError as exc:
        raise UsageError(f"--since: {exc}") from None
    source = Source(configs, strict=strict, since=period)
    app = StatusApp(source, access, refresh=refresh)
    return StatusServer(app, listen).start()
