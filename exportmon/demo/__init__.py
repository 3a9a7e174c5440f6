"""``exportmon demo``: the whole pipeline on an embedded mailbox and export server.

Nothing is needed but exportmon itself: the demo writes a Maildir with four mails
(a zip export, a CSV export, an export whose link is broken, and an ordinary
newsletter), serves the exports from a web server on 127.0.0.1, starts an FTP
server on 127.0.0.1, writes a monitor config for all of it, and runs one cycle of
``run``: fetch, unzip, rewrite (to semicolons), deliver to a local folder and over
FTP, archive the mails, and alert about the broken link (through a command
writing ``alerts.jsonl`` and, with the ``notify`` extra, an Apprise ``json://``
webhook on a local receiver that also takes the run's heartbeat pings). Success
notices and a summary are sent too. The servers stop when the demo ends; the
files stay for inspection, and ``exportmon serve`` shows them on a page.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from exportmon.actions.run import CycleResult, RunOptions, run_once
from exportmon.actions.status import MonitorStatus, status_of
from exportmon.config.generate import toml_string
from exportmon.config.load import load_monitor
from exportmon.demo.data import demo_files, export_mail, newsletter_mail
from exportmon.demo.servers import ftp_server, receiver, web_server
from exportmon.ledger import Ledger
from exportmon.notify import apprise as apprise_channels

FTP_PASSWORD_ENV = "EXPORTMON_DEMO_FTP_PASSWORD"


@dataclass
class DemoResult:
    directory: Path
    config: Path
    cycle: CycleResult
    status: MonitorStatus
    delivered: list[Path]
    uploaded: list[Path]
    alerts_file: Path
    #: What the local webhook received (Apprise ``json://`` payloads), and the pings.
    notifications: list[dict[str, object]]
    pings: list[str]
    #: Whether Apprise is installed (else no webhook channel was configured).
    webhooks: bool


def run_demo(directory: Path, options: RunOptions | None = None) -> DemoResult:
    """Set up the demo in ``directory`` (empty or new), run one cycle, and report."""
    directory.mkdir(parents=True, exist_ok=True)
    web, mailbox = directory / "web", directory / "mailbox"
    delivered, ftp_home = directory / "delivered", directory / "ftp"
    for file in demo_files():
        if file.content is not None:
            target = web / file.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.content)
    webhooks = apprise_channels.installed()
    with web_server(web) as base_url, ftp_server(ftp_home) as ftp, receiver() as got:
        mails = [export_mail(file, base_url) for file in demo_files()]
        _write_maildir(mailbox, [*mails, newsletter_mail()])
        config = _write_config(directory, mailbox, delivered, ftp.url, got.url, webhooks)
        with _environment(FTP_PASSWORD_ENV, ftp.password):
            monitor = load_monitor(config)
            cycle = run_once(monitor, options or RunOptions())
        with Ledger.open(monitor.dirs.ledger) as ledger:
            status = status_of(monitor, ledger)
    return DemoResult(
        directory=directory,
        config=config,
        cycle=cycle,
        status=status,
        delivered=sorted(p for p in delivered.rglob("*") if p.is_file()),
        uploaded=sorted(p for p in ftp_home.rglob("*") if p.is_file()),
        alerts_file=directory / "alerts.jsonl",
        notifications=list(got.notifications),
        pings=list(got.pings),
        webhooks=webhooks,
    )


def _write_maildir(path: Path, messages: list[bytes]) -> None:
    for part in ("cur", "new", "tmp"):
        (path / part).mkdir(parents=True, exist_ok=True)
    for number, message in enumerate(messages, start=1):
        name = f"1700000000.demo{number}.exportmon"
        (path / "tmp" / name).write_bytes(message)
        os.replace(path / "tmp" / name, path / "new" / name)


def _write_config(
    directory: Path,
    mailbox: Path,
    delivered: Path,
    ftp_url: str,
    receiver_address: str,
    webhooks: bool,
) -> Path:
    q = toml_string
    alerts = directory / "alerts.jsonl"
    notify = f"notify = [{q(f'json://{receiver_address}/notify')}]\n" if webhooks else ""
    text = f"""\
# The exportmon demo monitor: a Maildir, exports on a local web server, delivery
# to a folder and to a local FTP server. Try: exportmon -c {directory / "demo.toml"} status
ids = [777, 778]
root = {q(str(directory / "state"))}
unzip = true
sub_dirs = true

[source]
kind = "maildir"
path = {q(str(mailbox))}
archive = "Archive"

[download]
allow_hosts = ["127.0.0.1"]
retries = 0

[csv]
col_sep = ";"
replace_newlines = " "

[deliver]
to = {q(str(delivered))}
ftp_url = {q(ftp_url)}
ftp_dir = "in/exports"
ftp_user = "demo"
ftp_password_env = "{FTP_PASSWORD_ENV}"
order = ["organizations", "sites"]

[alerts]
command = {q(f"cat >> '{alerts}'")}
{notify}on = ["failure", "recovery", "missing", "success", "summary"]

[heartbeat]
url = {q(f"http://{receiver_address}/ping/demo")}

[exports.777]
expect_every = "1w"

[exports.778]
expect_every = "1d"
"""
    path = directory / "demo.toml"
    path.write_text(text)
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
