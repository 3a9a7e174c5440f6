"""The Microsoft Graph source against a local Graph mail API and OAuth2 server:
the gem's export delivered once and its mail archived, delta rounds, expired delta
links, throttling, and kills during a round and at every crash point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fetchkit import config_data, export_mail, plain_mail, write_config
from watching import wait_for

from cli import run_cli
from exportmon.config.load import load_monitor
from exportmon.crashpoints import ENVIRONMENT
from exportmon.ledger import Ledger
from exportmon.mail.graph import GraphSource
from servers.fixtures import OAUTH_APP, OAUTH_APP_SECRET

MAILBOX = "exports@contoso.example"
GEM_CSV_PATH = "/exports/20130911/wdc/20130911-195545-affected_slas.csv"


def gem_mail(gem_fixtures: Path, base_url: str) -> bytes:
    """The gem's export mail with its link pointing at the local HTTPS server, not expired."""
    mail = (gem_fixtures / "export_finished_1.eml").read_bytes()
    mail = mail.replace(b"https://itrp.amazonaws.com", base_url.encode())
    return mail.replace(b"Expires=1379102146", b"Expires=4102444800")


@pytest.fixture
def graph_monitor(tmp_path, oauth_server, graph_server, tls_ca):
    oauth_server.app_user = MAILBOX
    source = {
        "kind": "graph",
        "user": MAILBOX,
        "mailbox": "Inbox",
        "archive": "Archive",
        "auth": "oauth2",
        "oauth_provider": "custom",
        "oauth_flow": "client-credentials",
        "oauth_client_id": OAUTH_APP,
        "oauth_client_secret_env": "APP_SECRET",
        "oauth_token_url": oauth_server.url("/token"),
        "oauth_scopes": ["https://graph.microsoft.com/.default"],
        "graph_url": graph_server.base_url,
        "ca_file": str(tls_ca.ca_file),
    }
    data = config_data(tmp_path / "state", source, ids=(2, 777), ca_file=tls_ca.ca_file)
    data["deliver"] = {"to": str(tmp_path / "out")}
    return write_config(tmp_path / "monitors", data)


@pytest.fixture
def env(tls_ca):
    return {"SSL_CERT_FILE": str(tls_ca.ca_file), "APP_SECRET": OAUTH_APP_SECRET}


def test_the_gem_export_is_delivered_once_and_its_mail_archived(
    tmp_path, graph_monitor, graph_server, https_server, gem_fixtures, env
):
    https_server.add(GEM_CSV_PATH, (gem_fixtures / "dummy.csv").read_bytes())
    graph_server.add_message(MAILBOX, gem_mail(gem_fixtures, https_server.base_url))
    graph_server.add_message(MAILBOX, (gem_fixtures / "non_export.eml").read_bytes())
    result = run_cli("-c", graph_monitor, "run", "--once", env=env)
    assert result.code == 0, result.stderr
    delivered = tmp_path / "out" / "20130911-195545-affected_slas.csv"
    assert delivered.read_bytes() == (gem_fixtures / "dummy.csv").read_bytes()
    assert len(graph_server.in_folder(MAILBOX, "Archive")) == 1
    assert len(graph_server.in_folder(MAILBOX, "Inbox")) == 1  # the newsletter stays
    mime_reads = graph_server.requests["get-mime"]
    again = run_cli("-c", graph_monitor, "run", "--once", env=env)
    assert again.code == 0, again.stderr
    assert len(https_server.requests_for(GEM_CSV_PATH)) == 1
    assert graph_server.requests["get-mime"] == mime_reads  # nothing read twice


def test_a_poll_without_new_mail_is_one_delta_request(tmp_path, graph_monitor, graph_server, env):
    graph_server.add_messages(MAILBOX, [plain_mail() for _ in range(250)])
    monitor = load_monitor(graph_monitor)
    with Ledger.open(monitor.dirs.ledger) as ledger, GraphSource(monitor) as source:
        os.environ.update(env)
        try:
            first = source.poll(ledger)
            assert len(first) == 250 and {p.outcome for p in first} == {"ignored"}
            before = graph_server.requests.copy()
            assert source.poll(ledger) == []
            used = graph_server.requests - before
        finally:
            for key in env:
                os.environ.pop(key, None)
    assert used == {"delta": 1}


def test_an_expired_delta_link_reads_the_folder_again_without_taking_anything_twice(
    tmp_path, graph_monitor, graph_server, https_server, env
):
    graph_server.add_message(
        MAILBOX, export_mail(https_server.add("/e/d1.csv", b"id\n1\n"), token="tok-d1")
    )
    assert run_cli("-c", graph_monitor, "run", "--once", "--no-archive", env=env).code == 0
    graph_server.expire_delta_tokens()
    graph_server.add_message(
        MAILBOX, export_mail(https_server.add("/e/d2.csv", b"id\n2\n"), token="tok-d2")
    )
    result = run_cli("-c", graph_monitor, "run", "--once", env=env)
    assert result.code == 0, result.stderr
    assert "delta link has expired" in result.stderr
    assert len(https_server.requests_for("/e/d1.csv")) == 1
    assert (tmp_path / "out" / "d2.csv").exists()
    assert len(graph_server.in_folder(MAILBOX, "Archive")) == 2


def test_throttling_is_waited_out(tmp_path, graph_monitor, graph_server, https_server, env):
    graph_server.add_message(
        MAILBOX, export_mail(https_server.add("/e/t.csv", b"id\n3\n"), token="tok-t")
    )
    graph_server.throttle(3, retry_after=1)
    result = run_cli("-c", graph_monitor, "run", "--once", env=env)
    assert result.code == 0, result.stderr
    assert graph_server.requests["throttled"] == 3
    assert (tmp_path / "out" / "t.csv").exists()


def test_a_kill_during_a_round_takes_nothing_twice(
    tmp_path, graph_monitor, graph_server, https_server, env
):
    for n in range(30):
        link = https_server.add(f"/e/k{n}.csv", f"id\n{n}\n".encode())
        graph_server.add_message(MAILBOX, export_mail(link, token=f"tok-k{n}"))
    argv = [sys.executable, "-m", "exportmon", "-c", str(graph_monitor), "run", "--once"]
    for _ in range(3):  # killed part-way, three times
        process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        reads = graph_server.requests["get-mime"]
        wait_for(lambda reads=reads: graph_server.requests["get-mime"] >= reads + 3, timeout=60)
        process.send_signal(signal.SIGKILL)
        process.wait()
    result = run_cli("-c", graph_monitor, "run", "--once", env=env)
    assert result.code == 0, result.stderr
    for n in range(30):
        assert len(https_server.requests_for(f"/e/k{n}.csv")) <= 2  # a download may resume
        assert (tmp_path / "out" / f"k{n}.csv").read_bytes() == f"id\n{n}\n".encode()
    assert len(graph_server.in_folder(MAILBOX, "Archive")) == 30
    assert graph_server.in_folder(MAILBOX, "Inbox") == []


@pytest.mark.parametrize(
    "point",
    [
        "download.saved",
        "atomic.rename",
        "deliver.started",
        "deliver.placed",
        "export.delivered",
        "archive.moved",
        "ledger.commit:4",
    ],
)
def test_a_kill_at_each_crash_point_loses_nothing_and_repeats_nothing(
    tmp_path, graph_monitor, graph_server, https_server, env, point
):
    for n in range(2):
        link = https_server.add(f"/e/c{n}.csv", f"id\n{n}\n".encode())
        graph_server.add_message(MAILBOX, export_mail(link, token=f"tok-c{n}"))
    killed = run_cli("-c", graph_monitor, "run", "--once", env={**env, ENVIRONMENT: point})
    assert killed.code == -signal.SIGKILL, killed.stderr
    out = tmp_path / "out"
    seen = {p.name: p.stat().st_ino for p in out.iterdir()} if out.exists() else {}
    result = run_cli("-c", graph_monitor, "run", "--once", env=env)
    assert result.code == 0, result.stderr
    for n in range(2):
        delivered = out / f"c{n}.csv"
        assert delivered.read_bytes() == f"id\n{n}\n".encode()
        if delivered.name in seen:  # delivered before the kill: not delivered again
            assert delivered.stat().st_ino == seen[delivered.name]
    assert sorted(p.name for p in out.iterdir()) == ["c0.csv", "c1.csv"]
    assert len(graph_server.in_folder(MAILBOX, "Archive")) == 2
    assert graph_server.in_folder(MAILBOX, "Inbox") == []
    again = run_cli("-c", graph_monitor, "run", "--once", env=env)
    assert again.code == 0 and len(https_server.requests_for("/e/c0.csv")) <= 2


def test_a_missing_folder_is_one_line(tmp_path, graph_monitor, env):
    text = graph_monitor.read_text().replace('mailbox = "Inbox"', 'mailbox = "Exports"')
    graph_monitor.write_text(text)
    result = run_cli("-c", graph_monitor, "run", "--once", env=env)
    assert result.code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR")]
    assert errors and "has no folder 'Exports'" in errors[0], result.stderr
    assert json.dumps(OAUTH_APP_SECRET)[1:-1] not in result.stderr
