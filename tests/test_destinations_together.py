"""One export delivered in one run to a folder, an SFTP server, an FTPS server and an
HTTPS receiving system (the Blackboard protocol): the same bytes everywhere, each
file sent to the HTTPS system exactly once, and the mail archived only then."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fetchkit import export_mail, write_config

from cli import run_cli
from exportmon.config.load import load_monitor
from exportmon.ledger import Ledger
from servers.blackboard import BlackboardServer
from servers.sshd import USER

FILES = {
    "5-1-person.csv": b"EXTERNAL_PERSON_KEY|USER_ID|EMAIL\r\np1|jdoe|jane@example.edu\r\n"
    + b"p2|rroe|"
    + "r\u00f6e@example.edu".encode()
    + b"\r\n" * 1,
    "5-1-course.csv": b"EXTERNAL_COURSE_KEY|COURSE_ID|COURSE_NAME\r\nc1|C1|Chemistry\r\n",
}


@pytest.fixture
def blackboard(start_server, tls_ca) -> BlackboardServer:
    return start_server(BlackboardServer(tls_ca.server))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_one_export_reaches_a_folder_sftp_ftps_and_https_byte_identical(
    tmp_path: Path, sshd, ftps_server, blackboard, tls_ca
) -> None:
    mails = tmp_path / "mails"
    mails.mkdir()
    (mails / "a.eml").write_bytes(export_mail(attachments=list(FILES.items()), export_id=5))
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.keyscan(hashed=True))
    data = {
        "ids": [5],
        "root": str(tmp_path / "state"),
        "source": {"kind": "dir", "path": str(mails), "archive": str(tmp_path / "done")},
        "deliver": [
            {"url": str(tmp_path / "folder")},
            {
                "url": sshd.url("/~/in"),
                "ssh_key": str(sshd.keys.ed25519),
                "known_hosts": str(known_hosts),
            },
            {
                "url": f"ftps://127.0.0.1:{ftps_server.port}/in/exports",
                "user": ftps_server.user,
                "password_env": "FTP_PASSWORD",
                "ca_file": str(tls_ca.ca_file),
            },
            {
                "url": f"{blackboard.endpoint}/{{type}}/store",
                "user": blackboard.user,
                "password_env": "LEARN_PASSWORD",
                "ca_file": str(tls_ca.ca_file),
                "reference": "reference code (?P<ref>[0-9a-f]{32})",
                "status_url": f"{blackboard.endpoint}/dataSetStatus/{{reference}}",
                "status_done": "queuedCount == 0",
                "status_fail": "errorCount > 0",
                "status_interval": "0s",
            },
        ],
    }
    config = write_config(tmp_path / "monitors", data, name="learn")
    env = {"FTP_PASSWORD": ftps_server.password, "LEARN_PASSWORD": blackboard.password}
    blackboard.queued = 3
    first = run_cli("-c", config, "run", "--once", env=env)
    assert first.code == 0, first.output
    # Every file is at every destination, byte for byte, under its final name only.
    places = {
        "folder": tmp_path / "folder",
        "sftp": sshd.user_folder("in", user=USER),
        "ftps": ftps_server.home / "in" / "exports",
    }
    for where, folder in places.items():
        found = {p.name: p.read_bytes() for p in folder.iterdir()}
        assert found == FILES, where
    assert sorted(u.body for u in blackboard.uploads) == sorted(FILES.values())
    assert blackboard.requests["store"] == 2
    # The HTTPS system is still processing: the mail waits for it.
    assert not (tmp_path / "done").exists() or not list((tmp_path / "done").iterdir())
    for _ in range(2):
        second = run_cli("-c", config, "run", "--once", env=env)
        assert second.code == 0, second.output
    assert blackboard.requests["store"] == 2  # polled, never sent again
    assert len(list((tmp_path / "done").iterdir())) == 1
    with Ledger.open(load_monitor(config).dirs.ledger) as ledger:
        deliveries = ledger.deliveries()
        assert len(deliveries) == 2 * 4 and {d.state for d in deliveries} == {"done"}
        assert {d.sha256 for d in deliveries} == {digest(b) for b in FILES.values()}
        assert {e.state for e in ledger.exports()} == {"delivered"}
    for secret in (ftps_server.password, blackboard.password):
        assert secret not in first.output + second.output
