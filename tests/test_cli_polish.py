"""Output polish, checked the way users met it: login errors without Python bytes, hints
for TLS spoken to a plain-text port and for FTPS against a server without TLS, sources
shown with the user escaped, ISO 8601 log times on a terminal, plurals."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from fetchkit import config_data, imap_table, write_config

from cli import run_cli
from exportmon.mail.source import MailLocation, display_source


def _imap_config(tmp_path, user, **source):
    data = config_data(tmp_path / "state", imap_table(user, **source), deliver={"to": "out"})
    return write_config(tmp_path / "monitors", data)


def test_a_refused_login_shows_the_server_text_not_python_bytes(tmp_path, mail_user):
    config = _imap_config(tmp_path, mail_user, password="wrong-password")
    result = run_cli("-c", config, "fetch")
    assert result.code != 0
    assert "AUTHENTICATIONFAILED" in result.stderr or "refused the login" in result.stderr
    assert "b'" not in result.stderr and 'b"' not in result.stderr, result.stderr


def test_tls_to_a_plain_text_port_says_so_and_what_to_set(tmp_path, mail_user):
    config = _imap_config(tmp_path, mail_user, port=mail_user.ports.imap)  # TLS to port 143
    result = run_cli("-c", config, "fetch")
    assert result.code != 0
    assert "answered in plain text, not TLS" in result.stderr, result.stderr
    assert 'source.security = "starttls"' in result.stderr
    assert "WRONG_VERSION_NUMBER" not in result.stderr


def test_ftps_against_a_server_without_tls_says_so(ftp_server, tmp_path):
    data = tmp_path / "x.csv"
    data.write_text("a\n1\n")
    result = run_cli(
        "push-ftp",
        "--url",
        f"ftps://127.0.0.1:{ftp_server.port}",
        "--user",
        ftp_server.user,
        "--password-env",
        "P",
        data,
        env={"P": ftp_server.password},
    )
    assert result.code == 1
    assert "does not offer TLS" in result.stderr and "ftp://" in result.stderr, result.stderr


def test_sources_are_shown_with_the_user_escaped():
    key = "imaps://someone@gmail.com@imap.gmail.com:993"
    assert display_source(key) == "imaps://someone%40gmail.com@imap.gmail.com:993"
    where = MailLocation(key, "INBOX", 1, "7").describe()
    assert where == "imaps://someone%40gmail.com@imap.gmail.com:993/INBOX#7"


def test_generate_list_shows_the_source_with_the_user_escaped(tmp_path, exportmon_home):
    result = run_cli(
        "generate", "777", "someone@gmail.com", "--password-env", "IMAP_PASSWORD", "--to", "out"
    )
    assert result.code == 0, result.output
    listed = run_cli("generate", "--list", "--json")
    assert "imap://someone%40gmail.com@imap.gmail.com/INBOX" in listed.stdout, listed.stdout


def test_log_times_on_a_terminal_are_iso_8601(tmp_path):
    from monitoring import write_monitor

    config = write_monitor(tmp_path)
    (tmp_path / "mails" / "broken.eml").write_bytes(b"not a mail at all")
    controller, terminal = pty.openpty()
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "exportmon", "-v", "-c", str(config), "run", "--once"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=env,
    )
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=60)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", text), text
    assert not re.search(r"\[\d\d/\d\d/\d\d", text), text


def test_plural_words_in_prune_and_run(tmp_path):
    from monitoring import write_monitor

    config = write_monitor(tmp_path)
    assert run_cli("-c", config, "run", "--once").code == 0
    result = run_cli("-c", config, "prune", "--older-than", "1d")
    assert "0 files and 0 folders" in result.stderr, result.stderr
    assert "(s)" not in result.stderr
