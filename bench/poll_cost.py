"""What a no-new-mail IMAP poll costs with 100 and with 50,000 old mails in the mailbox.

Runs as root (Dovecot drops to nobody). It starts the test suite's real Dovecot (IMAPS)
on 127.0.0.1, fills two accounts with old mails (``--small``, default 100, and
``--big``, default 50,000; half of them ITRP export mails for an export id that is not
monitored, so the server-side search matches them, half ordinary mails), runs a first
fetch on each (which reads them all once and records them), and then measures:

* ``poll``: the library call ``fetch(monitor, ledger)`` with nothing new (connect, log
  in, EXAMINE, archive check, due-export check, logout), ``--polls`` times;
* ``one new``: the same with one new (unmonitored) export mail each time (appended
  before the clock starts), which adds one ``UID SEARCH`` limited to UIDs above the last
  one seen and the reading of that mail;
* ``exportmon fetch``: ``exportmon -c <config> fetch`` as a child process (mostly Python
  start-up and imports), with its peak RSS;
* ``first fetch``: reading the whole mailbox once (expected to grow with it).

The ratio of each big-mailbox row is taken against the same row for the small one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from bench.harness import PYTHON, REPO, Row, Run, Table, Tool, compare

sys.path.insert(0, str(REPO / "tests"))

from exportmon.actions.fetch import fetch
from exportmon.config.load import load_monitor
from exportmon.ledger import Ledger
from servers.dovecot import DovecotServer, MailUser
from servers.tlsca import LocalCA

NAME = "poll"


def old_mail(number: int) -> bytes:
    message = EmailMessage()
    message["Message-ID"] = make_msgid(domain="bench.example")
    message["To"] = "exports@example.com"
    if number % 2:
        message["From"] = "ITRP <noreply@itrp.com>"
        message["Subject"] = f"Export finished - old export {number}"
        message["X-ITRP-ExportID"] = "5"
        message["X-ITRP-Export"] = f"old-token-{number}"
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(f"The export is ready: https://files.example/old/{number}.zip\n")
    else:
        message["From"] = "Colleague <bob@example.com>"
        message["Subject"] = f"Note {number}"
        message.set_content("An ordinary mail. " * 40 + "\n")
    return message.as_bytes()


def write_config(directory: Path, user: MailUser, name: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        f"ids = [777]\nroot = {str(directory / name)!r}\n\n[source]\nkind = 'imap'\n"
        f"host = '{user.host}'\nport = {user.ports.imaps}\nsecurity = 'ssl'\n"
        f"user = '{user.name}'\npassword = '{user.password}'\nca_file = '{user.ca_file}'\n"
        "archive = 'Archive'\n"
    )
    path.chmod(0o600)
    return path


def timed(
    action: Callable[[], object], runs: int, prepare: Callable[[], object] = list
) -> list[Run]:
    """``action`` timed ``runs`` times, each after an untimed ``prepare``."""
    times = []
    for _ in range(runs):
        prepare()
        started = time.perf_counter()
        action()
        times.append(Run(time.perf_counter() - started, 0, 0.0))
    return times


def measure(user: MailUser, config_path: Path, options: argparse.Namespace) -> dict[str, list[Run]]:
    monitor = load_monitor(config_path)
    monitor.dirs.create()
    with Ledger.open(monitor.dirs.ledger) as ledger:
        started = time.perf_counter()
        first = fetch(monitor, ledger)
        first_seconds = time.perf_counter() - started
        assert not first.failed, first.failures

        def poll() -> None:
            result = fetch(monitor, ledger)
            assert not result.mails and not result.failed

        def poll_one_new() -> None:
            result = fetch(monitor, ledger)
            assert len(result.mails) == 1 and not result.failed

        figures = {
            "first fetch (reads all)": [Run(first_seconds, 0, 0.0)],
            "no-new-mail poll (library)": timed(poll, options.polls),
            "poll with one new mail": timed(
                poll_one_new, options.polls, lambda: user.append(old_mail(1))
            ),
        }
    command: list[str | os.PathLike[str]] = [
        PYTHON, "-m", "exportmon", "-q", "-c", config_path, "fetch"
    ]  # fmt: skip
    cli = Tool(command, env={"PYTHONPATH": str(REPO)})
    figures["exportmon fetch (process)"] = compare(
        {"cli": cli}, max(3, options.polls // 4), progress=False
    )["cli"]
    return figures


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--small", type=int, default=100, help="mails in the small mailbox")
    parser.add_argument("--big", type=int, default=50_000, help="mails in the big mailbox")
    parser.add_argument("--polls", type=int, default=20, help="polls measured per mailbox")


def run(options: argparse.Namespace) -> list[Table]:
    workdir = Path(tempfile.mkdtemp(prefix="exportmon-bench-"))
    workdir.chmod(0o755)
    (workdir / "tls").mkdir(mode=0o755)
    (workdir / "dovecot").mkdir(mode=0o755)
    server = DovecotServer(workdir / "dovecot", (ca := LocalCA(workdir / "tls")).server, ca.ca_file)
    server.start()
    try:
        results = {}
        for label, count in (("small", options.small), ("big", options.big)):
            user = server.add_user()
            started = time.perf_counter()
            user.bulk_append(old_mail(n) for n in range(count))
            print(
                f"  {count} mails appended in {time.perf_counter() - started:.1f} s",
                file=sys.stderr,
            )
            config = write_config(workdir, user, label)
            results[label] = measure(user, config, options)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    table = Table(
        f"IMAPS poll cost, {options.small:,} vs {options.big:,} mails in the mailbox "
        f"(median of {options.polls} polls; process rows best/median of several)",
        [],
        ratio="cost",
    )
    add_size_rows(table, results, options.small, options.big)
    for key in ("no-new-mail poll (library)", "exportmon fetch (process)"):
        big = f"{key}, {options.big:,} mails"
        ratio = median_ratio(table, big)
        table.goal(f"{big} costs <= 1.5x the small mailbox (median {ratio:.2f}x)", ratio <= 1.5)
    return [table]


def add_size_rows(
    table: Table, results: dict[str, dict[str, list[Run]]], small_n: int, big_n: int
) -> None:
    """A row per measurement and mailbox size, each big one against its small one."""
    for key in results["small"]:
        small = f"{key}, {small_n:,} mails"
        table.rows.append(Row(small, results["small"][key]))
        table.rows.append(Row(f"{key}, {big_n:,} mails", results["big"][key], versus=small))
        table.rows[-1].note = f"vs {small_n:,} mails"


def median_ratio(table: Table, tool: str) -> float:
    row = table.row(tool)
    assert row.versus is not None
    return row.median / table.row(row.versus).median
