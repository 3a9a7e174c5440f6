"""Secrets never leak: everything runs with distinctive passwords and tokens, then every
output, log, ledger, report, alert mail and file of the monitors is searched for them.

Also: no secret is ever on the command line of a process (``ps`` is taken from inside
the password command, while exportmon waits for it).
"""

from __future__ import annotations

import sqlite3

from fetchkit import export_mail, write_config

from cli import run_cli
from servers.ftp import FtpServer
from servers.smtp import SmtpServer

IMAP_SECRET = "Imap-Canary-7Qz91"
POP3_SECRET = "Pop3-Canary-4Kx28"
FTP_SECRET = "Ftp-Canary-2Wy55"
SMTP_SECRET = "Smtp-Canary-8Lm03"
TOKEN_SECRET = "ya29.Token-Canary-6Pq47"
SECRETS = (IMAP_SECRET, POP3_SECRET, FTP_SECRET, SMTP_SECRET, TOKEN_SECRET)


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [s for s in SECRETS if s.encode() in data]


def test_no_secret_in_any_output_log_ledger_report_alert_or_command_line(
    tmp_path, dovecot, tls_ca, start_server, https_server
):
    imap_user = dovecot.add_user(password=IMAP_SECRET)
    pop3_user = dovecot.add_user(password=POP3_SECRET)
    ftps = start_server(
        FtpServer(
            tmp_path / "ftp-home", cert=tls_ca.server, ca_file=tls_ca.ca_file, password=FTP_SECRET
        )
    )
    smtp = start_server(
        SmtpServer(cert=tls_ca.server, ca_file=tls_ca.ca_file, password=SMTP_SECRET)
    )
    good = https_server.add("/exports/5-1-people.csv", b"id,name\n1,a\n")
    imap_user.append(export_mail(good, token="good-1"))
    imap_user.append(export_mail("https://10.0.0.1/5-1-refused.csv", token="bad-1"))
    pop3_user.append(export_mail(good, token="pop-1"))

    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir(mode=0o700)
    (secrets_dir / "imap").write_text(IMAP_SECRET + "\n")
    (secrets_dir / "token").write_text(TOKEN_SECRET + "\n")
    ps_dir = tmp_path / "ps"
    ps_dir.mkdir()

    def command(secret_file: str, label: str) -> str:
        # Takes a snapshot of every process's command line while exportmon waits for it.
        return f"ps -eo args > {ps_dir}/{label}.$$.txt; cat {secrets_dir / secret_file}"

    monitors = tmp_path / "monitors"
    alerts = {
        "smtp_url": f"submission://127.0.0.1:{smtp.port}",
        "smtp_user": smtp.user,
        "smtp_password_env": "SMTP_PASS",
        "smtp_ca_file": str(tls_ca.ca_file),
        "to": ["ops@example.com"],
        "from": "exportmon@example.com",
        "command": f"ps -eo args > {ps_dir}/alert.$$.txt; cat > /dev/null",
    }
    download = {"allow_hosts": ["localhost"], "ca_file": str(tls_ca.ca_file)}
    deliver = {
        "ftp_url": f"ftps://127.0.0.1:{ftps.port}",
        "ftp_user": ftps.user,
        "ftp_password": FTP_SECRET,
        "ftp_ca_file": str(tls_ca.ca_file),
    }
    good_localhost = good.replace("127.0.0.1", "localhost")
    imap_user_mail = export_mail(good_localhost, token="good-2")
    imap_user.append(imap_user_mail)
    roots = {name: tmp_path / f"state-{name}" for name in ("imap", "pop3", "oauth")}
    write_config(
        monitors,
        {
            "ids": [777],
            "root": str(roots["imap"]),
            "source": {
                "kind": "imap",
                "host": "127.0.0.1",
                "port": imap_user.ports.imaps,
                "user": imap_user.name,
                "password_command": command("imap", "imap"),
                "ca_file": str(tls_ca.ca_file),
                "archive": "Archive",
            },
            "download": download,
            "deliver": deliver,
            "alerts": alerts,
        },
        "imap",
    )
    write_config(
        monitors,
        {
            "ids": [777],
            "root": str(roots["pop3"]),
            "source": {
                "kind": "pop3",
                "host": "127.0.0.1",
                "port": pop3_user.ports.pop3s,
                "user": pop3_user.name,
                "password_env": "POP3_PASS",
                "ca_file": str(tls_ca.ca_file),
            },
            "download": download,
            "deliver": {"to": str(tmp_path / "delivered")},
            "alerts": alerts,
        },
        "pop3",
    )
    # An OAuth2 token the plain Dovecot does not accept: the failure path must not show it.
    write_config(
        monitors,
        {
            "ids": [777],
            "root": str(roots["oauth"]),
            "source": {
                "kind": "imap",
                "host": "127.0.0.1",
                "port": imap_user.ports.imaps,
                "user": imap_user.name,
                "auth": "xoauth2",
                "token_command": command("token", "token"),
                "ca_file": str(tls_ca.ca_file),
                "archive": "",
            },
            "deliver": {"to": str(tmp_path / "delivered-oauth")},
            "alerts": alerts,
        },
        "oauth",
    )
    env = {"POP3_PASS": POP3_SECRET, "SMTP_PASS": SMTP_SECRET}

    outputs = []
    for args in (
        ("-v", "run", "--once"),
        ("-vv", "run", "--once", "--retry-failed"),
        ("-v", "status"),
        ("status", "--json"),
        ("report", "--html", "--since", "7d"),
        ("report", "--json", "--since", "7d"),
        ("-v", "--log-format", "json", "run", "--once", "--json"),
    ):
        result = run_cli("-c", monitors, *args, env=env)
        outputs.append((args, result))

    first = outputs[0][1]
    assert first.code == 1, first.stderr  # the refused link and the refused token
    assert "10.0.0.1" in first.stderr
    assert [p.name for p in (ftps.home).rglob("5-1-people.csv")], "nothing reached the FTPS server"
    assert smtp.messages, "no alert mail was sent"
    assert list(ps_dir.glob("imap.*.txt")) and list(ps_dir.glob("token.*.txt"))
    assert list(ps_dir.glob("alert.*.txt")), "the alert command did not run"

    snapshots = b"".join(p.read_bytes() for p in ps_dir.iterdir())
    assert b"-m exportmon" in snapshots, "ps did not see exportmon running"
    assert "oauth" in first.stderr and "XOAUTH2" in first.stderr.upper(), first.stderr

    found: dict[str, list[str]] = {}
    for args, result in outputs:
        found[f"output of {' '.join(args)}"] = leaks(result.stdout + result.stderr)
    for message in smtp.messages:
        found[f"alert mail to {message.rcpt_tos}"] = leaks(message.data)
    for snapshot in ps_dir.iterdir():
        found[f"ps while {snapshot.name}"] = leaks(snapshot.read_bytes())
    for root in roots.values():
        for path in root.rglob("*"):
            if path.is_file():
                found[str(path)] = leaks(path.read_bytes())
        ledger = root / "ledger.sqlite"
        if ledger.exists():
            with sqlite3.connect(ledger) as connection:
                dump = "\n".join(connection.iterdump())
            found[f"{ledger} dump"] = leaks(dump)
    searched = len(found)
    hits = {where: which for where, which in found.items() if which}
    print(f"secret search: {len(SECRETS)} secrets, {searched} places, {len(hits)} with a hit")
    assert hits == {}, hits
    assert searched > 20
