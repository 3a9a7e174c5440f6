"""``exportmon login``: sign a monitor's mailbox in with OAuth2, once."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated

import typer

from exportmon.commands.common import options, select_monitors
from exportmon.errors import ExitCode, UsageError


class Flow(str, Enum):
    device = "device"
    browser = "browser"
    client_credentials = "client-credentials"


HELP = """Sign in to a monitor's mailbox with OAuth2 and save the tokens (mode 0600).

Needed once for auth = "oauth2" (Microsoft 365, Outlook.com, Gmail and other
OAuth2 providers): every later run refreshes the access token by itself and
saves a rotated refresh token before using it. The device flow shows a code to
enter at the provider's sign-in page on any device; the browser flow opens a
browser on this machine and takes the answer on a loopback address.

Examples:

  exportmon -c ~/.config/exportmon/monitors/777.toml login

  exportmon login -c 777.toml --flow browser --no-browser

  exportmon login -c 777.toml --check
"""


def login(
    ctx: typer.Context,
    flow: Annotated[
        Flow | None,
        typer.Option("--flow", help="Override source.oauth_flow for this sign-in."),
    ] = None,
    no_browser: Annotated[
        bool,
        typer.Option("--no-browser", help="Print the sign-in address instead of opening it."),
    ] = False,
    check: Annotated[
        bool,
        typer.Option("--check", help="Do not sign in: renew the access token now and say so."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    from exportmon import oauth

    monitors = [m for m in select_monitors(ctx) if m.source.auth == "oauth2"]
    if not monitors:
        raise UsageError(
            'no selected monitor has auth = "oauth2"',
            hint="choose one with -c, or set auth and the oauth_* options in its [source]",
        )
    if len(monitors) > 1 and not check:
        names = ", ".join(m.name for m in monitors)
        raise UsageError(
            f"{len(monitors)} monitors sign in with OAuth2 ({names})",
            hint="choose one with -c FILE",
        )
    results = []
    for monitor in monitors:
        if check:
            oauth.access_token(monitor)
            state = oauth.sign_in_state(monitor) or {}
            results.append({"monitor": monitor.name, **state})
            if not as_json:
                print(
                    f"{monitor.name}: signed in with {state.get('provider', 'OAuth2')}; "
                    f"renewed {state.get('renewed_at', 'now')}",
                    file=sys.stderr,
                )
            continue
        tokens = oauth.sign_in(
            monitor,
            flow=flow.value if flow else None,
            show=lambda text: print(text, file=sys.stderr, flush=True),
            open_browser=not no_browser,
        )
        path = oauth.store.token_path(monitor.dirs.root)
        results.append(
            {
                "monitor": monitor.name,
                "provider": tokens.provider,
                "flow": tokens.flow,
                "saved": str(path),
            }
        )
        if not as_json:
            print(
                f"{monitor.name}: signed in with {tokens.provider}; tokens saved in {path} "
                "(mode 0600). `exportmon run` renews them by itself.",
                file=sys.stderr,
            )
    if as_json:
        print(json.dumps(results, indent=1))
    raise typer.Exit(
        options(ctx).exit_code(False) if not options(ctx).config_failed else ExitCode.USAGE
    )


def register(app: typer.Typer) -> None:
    app.command("login", help=HELP)(login)
