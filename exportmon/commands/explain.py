"""``exportmon explain``: why a mail (or a dropped file) is or is not picked up, check by
check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from exportmon.commands.common import select_monitors
from exportmon.errors import UsageError

HELP = """Say whether each mail is an export mail for the monitor, and why not.

Goes through every check a run makes, with the same code: the mail's size,
screening (exportmon's own alerts, automatic replies, bounces,
allowed_senders), each recognizer (headers, subject pattern, export id and ids),
forwarded mails (accept_forwarded), the links and attachments found, and for each
link the download rules (scheme, host, allow_hosts, private addresses, expiry).
Nothing is recorded or downloaded. --headers prints the mail's headers, to write
a [[recognizers]] rule for a system that mails differently (ITRP is now 4me and
then Xurrent: check what a newer export mail's headers look like).

For a folder source (kind = "folder") it says the same for files: for each file
in the folder (or each FILE given), whether it is complete (settling, waiting
for its trigger), matches source.patterns, which [[types]] rule gives its type,
whether it waits for a file of an earlier type, and whether it was processed.

Examples:

  exportmon -c 777.toml explain saved.eml

  exportmon -c 777.toml explain          # the mailbox: new mails, and those left alone

  exportmon -c 777.toml explain --json ~/Maildir/cur/*

  exportmon -c 777.toml explain --headers newer-export.eml

  exportmon -c sis.toml explain /srv/sis/outbox/users.txt
"""


def explain(
    ctx: typer.Context,
    mails: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[MAIL...]",
            help="Saved mails (.eml), or files for a folder source; none: the monitor's "
            "mailbox or folder, changing nothing.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per mail.")] = False,
    headers: Annotated[
        bool, typer.Option("--headers", help="Also print each mail's headers.")
    ] = False,
) -> None:
    from exportmon.actions.explain import explain_mail, explain_mailbox, printable, render
    from exportmon.mail.message import parse

    monitors = select_monitors(ctx)
    if len(monitors) > 1:
        names = ", ".join(m.name for m in monitors)
        raise UsageError(
            f"explain works for one monitor, and {len(monitors)} are selected ({names})",
            hint="choose one with -c FILE",
        )
    monitor = monitors[0]
    if monitor.source.kind == "folder":
        from exportmon.actions.explain import explain_folder, render_file

        for verdict in explain_folder(monitor, mails):
            print(json.dumps(verdict.as_dict()) if as_json else render_file(verdict))
        return
    if not mails:
        for verdict in explain_mailbox(monitor):
            print(json.dumps(verdict.as_dict()) if as_json else render(verdict))
        return
    for path in mails:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        verdict = explain_mail(raw, monitor, str(path))
        if as_json:
            print(json.dumps(verdict.as_dict()))
            continue
        print(render(verdict))
        if headers:
            try:
                for name, value in parse(raw).items():
                    shown = printable(str(value).replace("\n", " ").replace("\r", " ")[:200])
                    print(f"      {printable(name)}: {shown}")
            except Exception:
                print("      (the headers cannot be read)")


def register(app: typer.Typer) -> None:
    app.command("explain", help=HELP)(explain)
