"""`exportmon generate`: write a ready-to-edit monitor config, or list the configured ones."""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from exportmon.commands.common import options
from exportmon.commands.console import print_error, print_json, print_note, print_table
from exportmon.config.generate import (
    PASSWORD_ENVS,
    NewMonitor,
    signs_in_with_oauth,
    split_destination_url,
    split_ftp_url,
    write,
)
from exportmon.config.load import discover, load_monitor
from exportmon.config.providers import guess_provider
from exportmon.errors import ConfigError, ExitCode, UsageError
from exportmon.mail.source import source_url
from exportmon.redact import register as register_secret

log = logging.getLogger(__name__)

EPILOG = """\
Examples:

  exportmon generate 777 exports@example.com -            # password from stdin

  exportmon generate 777 exports@contoso.onmicrosoft.com  # OAuth2 sign-in, no password

  exportmon generate 777 exports@gmail.com --password-command "pass show mail/exports"

  exportmon generate 777 exports@example.com --password-env IMAP_PASSWORD --to /srv/in

  exportmon generate 777 exports@example.com - \\
      --url sftp://exports@sftp.example.com/in --ssh-key ~/.ssh/exportmon_ed25519

  exportmon generate --list --json
"""


def register(app: typer.Typer) -> None:
    app.command("generate", epilog=EPILOG)(generate_command)


def generate_command(
    ctx: typer.Context,
    export_id: Annotated[
        int | None,
        typer.Argument(help="Id of the Scheduled Export to monitor.", show_default=False),
    ] = None,
    email: Annotated[
        str | None,
        typer.Argument(
            help="Address the export mails are sent to (the IMAP login).", show_default=False
        ),
    ] = None,
    password_arg: Annotated[
        str | None,
        typer.Argument(
            metavar="[PASSWORD]",
            help="IMAP password; '-' reads it from stdin (safer: not visible in ps or history).",
            show_default=False,
        ),
    ] = None,
    password: Annotated[
        str | None, typer.Option("--password", help="IMAP password, or '-' to read it from stdin.")
    ] = None,
    password_command: Annotated[
        str | None,
        typer.Option("--password-command", help="Store this command, which prints the password."),
    ] = None,
    password_env: Annotated[
        str | None,
        typer.Option("--password-env", help="Store the name of a variable holding the password."),
    ] = None,
    to: Annotated[
        str | None, typer.Option("--to", metavar="DIR", help="Local folder to deliver files to.")
    ] = None,
    ftp: Annotated[
        str | None,
        typer.Option(
            "--ftp",
            metavar="URL",
            help="Deliver to ftp:// or ftps:// too.",
        ),
    ] = None,
    urls: Annotated[
        list[str] | None,
        typer.Option(
            "--url",
            metavar="URL",
            help="Deliver to this ftp://, ftps://, sftp:// or https:// destination too; "
            "repeatable.",
        ),
    ] = None,
    ssh_key: Annotated[
        str | None,
        typer.Option("--ssh-key", metavar="FILE", help="The SSH key of the sftp:// --url."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="Monitor name (default: the export id).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing config.")] = False,
    list_: Annotated[
        bool, typer.Option("--list", help="List the configured monitors instead.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --list: JSON output.")] = False,
) -> None:
    """Write a monitor config for one export and mailbox, with the provider's settings.

    The file goes to the config directory as <name>.toml with mode 0600, and
    names every other option as a commented example.
    """
    if list_:
        _list_monitors(ctx, as_json)
        return
    if export_id is None or email is None:
        raise UsageError(
            "give an export id and an email address",
            hint="e.g. exportmon generate 777 exports@example.com -",
        )
    if export_id <= 0:
        raise UsageError(f"export id must be a positive number, got {export_id}")
    if "@" not in email:
        raise UsageError(f"{email!r} is not an email address")
    if name is not None and (not name or "/" in name or name.startswith(".")):
        raise UsageError(f"{name!r} cannot be a monitor name", hint="use letters, digits, - and _")
    given = [p for p in (password_arg, password, password_command, password_env) if p is not None]
    if len(given) > 1:
        raise UsageError(
            "give the password one way only (argument, --password, "
            "--password-command or --password-env)"
        )
    secret = password_arg if password_arg is not None else password
    provider = guess_provider(email)
    if secret == "-":
        secret = _read_password_from_stdin()
    elif secret is not None:
        register_secret(secret)
    targets = [split_ftp_url(ftp)] if ftp is not None else []
    targets += [split_destination_url(url) for url in urls or []]
    for target in targets:
        if target.kind == "sftp" and not target.user:
            raise UsageError(
                f"--url {target.url}: no user to log in as", hint="write sftp://USER@host/..."
            )
    if ssh_key is not None and not any(target.kind == "sftp" for target in targets):
        raise UsageError("--ssh-key needs an sftp:// --url")
    given_password = secret is not None or password_command is not None or password_env is not None
    if not given_password and not provider.oauth:
        raise UsageError(
            "no password given",
            hint="'-' as third argument reads it from stdin (or type it); or use "
            "--password-command / --password-env",
        )
    if given_password and not provider.takes_password:
        secret = password_command = password_env = None
        print_note(
            f"{provider.name} has turned off password logins: the password was not "
            "written; the config signs in with OAuth2."
        )
    new = NewMonitor(
        export_id=export_id,
        address=email,
        password=secret,
        password_command=password_command,
        password_env=password_env,
        name=name,
        to=to,
        ftp_url=ftp,
        urls=tuple(urls or ()),
        ssh_key=ssh_key,
    )
    # write() loads the text back before writing: a config that does not load is
    # never left behind.
    path = write(new, force=force)
    typer.echo(str(path))
    for target in targets:
        if target.dropped_password is not None:
            log.warning(
                "the password in %s was not written to %s: its [[deliver]] entry has "
                "password_env = %s (export it, or use password_command)",
                "--ftp" if ftp is not None and target is targets[0] else target.url,
                path,
                PASSWORD_ENVS[target.kind],
            )
    if options(ctx).quiet:
        return
    print_note(
        f"Wrote monitor {new.monitor_name!r} for export {export_id} ({provider.name}) to "
        f"{path} (mode 0600)."
    )
    if provider.guessed:
        print_note(f"Check the IMAP settings: {provider.host} is a guess.")
    if password_arg not in (None, "-") or password not in (None, "-"):
        print_note(
            "Note: a password given on the command line can be seen in `ps` and your "
            "shell history; next time pass '-' to type or pipe it in."
        )
    print_note("Next steps:")
    print_note(f"  1. Review the file (delivery folder, archive folder): $EDITOR {path}")
    step = 2
    if signs_in_with_oauth(new, provider):
        print_note(
            f"  2. Register an app ({provider.signin_doc}), put its client id in oauth_client_id"
        )
        print_note(f"  3. Sign in once: exportmon -c {path} login")
        step = 4
    print_note(
        f"  {step}. Check the mailbox without changing anything: "
        f"exportmon -c {path} fetch --dry-run"
    )
    print_note(f"  {step + 1}. Run it once, or from cron: exportmon -c {path} run --once")


def _read_password_from_stdin() -> str:
    if sys.stdin.isatty():
        import getpass

        secret = getpass.getpass("IMAP password: ")
    else:
        secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        raise UsageError("no password on stdin")
    register_secret(secret)
    return secret


def _list_monitors(ctx: typer.Context, as_json: bool) -> None:
    opts = options(ctx)
    if opts.configs:
        paths = discover(opts.configs)
    else:
        try:
            paths = discover(None)
        except ConfigError:
            paths = []
    entries: list[dict[str, Any]] = []
    broken = False
    for path in paths:
        try:
            config = load_monitor(path, strict=opts.strict)
        except ConfigError as exc:
            broken = True
            print_error(exc.one_line())
            entries.append({"name": path.stem, "config": str(path), "error": exc.one_line()})
            continue
        source = config.source
        where = source_url(source)
        destinations = [d.url for d in config.destinations]
        entries.append(
            {
                "name": config.name,
                "config": str(path),
                "ids": config.ids,
                "source": where,
                "deliver": destinations,
                "root": config.root,
                "error": None,
            }
        )
    if as_json:
        print_json(entries)
    elif not entries:
        print_note("No monitors configured yet: exportmon generate <export-id> <email> -")
    else:
        print_table(
            ["name", "ids", "source", "deliver to", "config"],
            [
                [
                    e["name"],
                    ", ".join(map(str, e.get("ids", []))) or "-",
                    e.get("source") or f"error: {e['error']}",
                    ", ".join(e.get("deliver", [])),
                    e["config"],
                ]
                for e in entries
            ],
        )
    if broken:
        raise typer.Exit(ExitCode.USAGE)
