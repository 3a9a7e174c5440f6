"""What a no-new-mail Microsoft Graph poll costs with 100 and with 20,000 mails in the folder.

Starts the test suite's local Graph mail API and OAuth2 server (tests/servers/graph.py,
oauth.py) on 127.0.0.1 over HTTPS, fills two mailboxes (``--graph-small``, default 100,
and ``--graph-big``, default 20,000 ordinary mails), lets the Graph source read each
once (the first delta round, which records every mail), and then measures:

* ``poll``: the library call ``GraphSource.poll(ledger)`` with nothing new — one delta
  request with the saved delta link — ``--polls`` times;
* ``one new``: the same with one new mail added before the clock starts (its headers are
  read and it is recorded as not an export);
* ``first poll``: reading the whole folder once (expected to grow with it).

The ratio of each big-mailbox row is taken against the same row for the small one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from bench.harness import REPO, Run, Table
from bench.poll_cost import add_size_rows, median_ratio, timed

sys.path.insert(0, str(REPO / "tests"))

from exportmon.config.load import load_monitor
from exportmon.ledger import Ledger
from exportmon.mail.graph import GraphSource
from exportmon.mail.source import MailSource
from servers.graph import GraphServer
from servers.oauth import OAuthServer
from servers.tlsca import LocalCA

NAME = "graph"
APP, SECRET = "bench-app", "bench-secret"


def ordinary_mail(number: int) -> bytes:
    message = EmailMessage()
    message["Message-ID"] = make_msgid(domain="bench.example")
    message["From"] = "Colleague <bob@example.com>"
    message["To"] = "exports@example.com"
    message["Subject"] = f"Note {number}"
    message.set_content("An ordinary mail. " * 40 + "\n")
    return message.as_bytes()


def write_config(
    directory: Path, name: str, user: str, oauth: OAuthServer, graph: GraphServer, ca_file: Path
) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        f"ids = [777]\nroot = {str(directory / name)!r}\n\n[source]\nkind = 'graph'\n"
        f"user = '{user}'\nauth = 'oauth2'\noauth_provider = 'custom'\n"
        "oauth_flow = 'client-credentials'\n"
        f"oauth_client_id = '{APP}'\noauth_client_secret_env = 'BENCH_APP_SECRET'\n"
        f"oauth_token_url = '{oauth.url('/token')}'\noauth_scopes = ['mail']\n"
        f"graph_url = '{graph.base_url}'\nca_file = '{ca_file}'\n"
    )
    path.chmod(0o600)
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--graph-small", type=int, default=100, help="mails in the small folder")
    parser.add_argument("--graph-big", type=int, default=20_000, help="mails in the big folder")


def run(options: argparse.Namespace) -> list[Table]:
    workdir = Path(tempfile.mkdtemp(prefix="exportmon-bench-graph-"))
    (workdir / "tls").mkdir()
    ca = LocalCA(workdir / "tls")
    oauth = OAuthServer(ca.server, clients={APP: SECRET})
    oauth.start()
    graph = GraphServer(ca.server, oauth)
    graph.start()
    os.environ["BENCH_APP_SECRET"] = SECRET
    os.environ["SSL_CERT_FILE"] = str(ca.ca_file)
    polls = getattr(options, "polls", 20)
    results: dict[str, dict[str, list[Run]]] = {}
    try:
        for label, count in (("small", options.graph_small), ("big", options.graph_big)):
            user = f"{label}@bench.example"
            oauth.app_user = user
            graph.add_messages(user, [ordinary_mail(n) for n in range(count)])
            monitor = load_monitor(write_config(workdir, label, user, oauth, graph, ca.ca_file))
            monitor.dirs.create()
            with Ledger.open(monitor.dirs.ledger) as ledger, GraphSource(monitor) as source:
                started = time.perf_counter()
                assert len(source.poll(ledger)) == count
                first = time.perf_counter() - started

                def poll(source: MailSource = source, ledger: Ledger = ledger) -> None:
                    assert source.poll(ledger) == []

                def poll_one_new(source: MailSource = source, ledger: Ledger = ledger) -> None:
                    assert len(source.poll(ledger)) == 1

                def add_one(user: str = user) -> None:
                    graph.add_message(user, ordinary_mail(0))

                results[label] = {
                    "first poll (reads all)": [Run(first, 0, 0.0)],
                    "no-new-mail poll (library)": timed(poll, polls),
                    "poll with one new mail": timed(poll_one_new, polls, add_one),
                }
    finally:
        graph.stop()
        oauth.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    small_n, big_n = options.graph_small, options.graph_big
    table = Table(
        f"Microsoft Graph poll cost, {small_n:,} vs {big_n:,} mails in the folder "
        f"(median of {polls} polls)",
        [],
        ratio="cost",
    )
    add_size_rows(table, results, small_n, big_n)
    big = f"no-new-mail poll (library), {big_n:,} mails"
    ratio = median_ratio(table, big)
    table.goal(f"{big} costs <= 1.5x the small folder (median {ratio:.2f}x)", ratio <= 1.5)
    return [table]
