"""The steps as a shell pipeline, as users run them:
``exportmon unzip | exportmon rewrite-csv ... | exportmon push-ftp ...``, recorded in the
ledger of the monitor the download belongs to, or on plain files with flags only."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import urllib.request

from gem_output import GEM_ZIP, REWRITTEN

from exportmon.ledger import Ledger

TOKEN = "0fad4fc0fd4a0130ad2a12313b0e50759969ab71899d2bb1d3e3d8f66e6e5133"
GEM_CSV_TOML = """
[csv]
row_sep = "##\\n"
col_sep = "|"
quote_char = ":"
quoting = "gem"
replace_newlines = "<newline>"
"""
EXPORTMON = f"{shlex.quote(sys.executable)} -m exportmon"


def shell(pipeline: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``pipeline`` with bash (pipefail: any failing step fails it)."""
    full_env = {**os.environ, **(env or {})}
    completed = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {pipeline}"],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
        check=False,
    )
    assert "Traceback (most recent call last)" not in completed.stderr, completed.stderr
    return completed


def ftp_toml(server, tls_ca) -> str:
    return f"""
[deliver]
ftp_url = "ftps://127.0.0.1:{server.port}"
ftp_dir = "in/exports"
ftp_user = "{server.user}"
ftp_password_env = "FTP_PASS"
ftp_ca_file = "{tls_ca.ca_file}"
"""


def check_rewritten_on_server(server) -> None:
    folder = server.home / "in" / "exports"
    for kind, line in REWRITTEN.items():
        (path,) = (folder / kind).glob("*.csv")
        assert line in path.read_text(), path
    assert not [p for p in folder.rglob("*") if p.name.endswith(".in_progress")]
    assert len(list(folder.rglob("*.csv"))) == 4


def test_unzip_rewrite_push_pipeline_on_a_monitors_download(
    exportmon_home, tmp_path, gem_fixtures, ftps_server, tls_ca
):
    root = tmp_path / "state"
    (root / "downloads").mkdir(parents=True)
    monitors = exportmon_home / "monitors"
    monitors.mkdir(parents=True)
    (monitors / "pipe.toml").write_text(
        f'ids = [2]\nroot = "{root}"\nsub_dirs = true\n\n'
        f'[source]\nkind = "dir"\npath = "{tmp_path / "mails"}"\n'
        + GEM_CSV_TOML
        + ftp_toml(ftps_server, tls_ca)
    )
    download = root / "downloads" / GEM_ZIP
    shutil.copyfile(gem_fixtures / GEM_ZIP, download)
    with Ledger.open(root / "ledger.sqlite") as ledger:
        mail = ledger.add_mail(source="dir", uid="1", message_id="<m1@itrp>")
        export = ledger.add_export(key=TOKEN, kind="link", mail_id=mail.id, export_id=2)
        ledger.advance_export(export.id, "downloaded", download_path=str(download))

    # Every setting comes from the monitor the download belongs to.
    result = shell(
        f"{EXPORTMON} unzip {download} | {EXPORTMON} rewrite-csv | {EXPORTMON} push-ftp",
        env={"FTP_PASS": ftps_server.password},
    )

    assert result.returncode == 0, result.stderr
    check_rewritten_on_server(ftps_server)
    label = f"ftps://127.0.0.1:{ftps_server.port}/in/exports"
    assert result.stdout.splitlines() == sorted(
        f"{label}/{kind}/5-20130923-072312-{kind}.csv" for kind in REWRITTEN
    )
    assert f"Copied 4 file(s) from '{download}' to '{label}'" in result.stderr
    log_file = root / "log" / "export_monitor.pipe.log"
    assert f"Copied 4 file(s) from '{download}' to '{label}'" in log_file.read_text()
    assert ftps_server.password not in result.stderr + log_file.read_text()
    with Ledger.open(root / "ledger.sqlite") as ledger:
        export = ledger.export(export.id)
        assert export.state == "delivered" and export.files == 4 and export.rows == 186
        assert ledger.mail(mail.id).state == "delivered"
        files = ledger.files(export.id)
        assert {f.rewritten for f in files} == {1}
        assert {f.name.split("/")[0] for f in files} == set(REWRITTEN)
        deliveries = ledger.deliveries(export_row=export.id)
        assert [d.state for d in deliveries] == ["done"] * 4
        assert {d.destination for d in deliveries} == {label}

    # Running the delivery again delivers nothing twice.
    stored = len(ftps_server.commands_named("STOR"))
    again = shell(
        f"{EXPORTMON} push-ftp {' '.join(shlex.quote(str(f.path)) for f in files)}",
        env={"FTP_PASS": ftps_server.password},
    )
    assert again.returncode == 0, again.stderr
    assert len(ftps_server.commands_named("STOR")) == stored


def test_pipeline_with_flags_only_on_a_download_from_https(
    tmp_path, gem_fixtures, https_server, ftp_server, tls_ca
):
    url = https_server.add("/exports/20130923/wdc/" + GEM_ZIP, gem_fixtures / GEM_ZIP)
    download = tmp_path / "in" / GEM_ZIP
    download.parent.mkdir()
    context = ssl.create_default_context(cafile=str(tls_ca.ca_file))
    with urllib.request.urlopen(url, context=context) as response, open(download, "wb") as out:
        shutil.copyfileobj(response, out)

    result = shell(
        f"{EXPORTMON} unzip --json --sub-dirs {download}"
        f" | {EXPORTMON} rewrite-csv --json --quoting gem --col-sep '|' --row-sep '##\\n'"
        "   --quote-char : --replace-newlines '<newline>'"
        f" | {EXPORTMON} push-ftp --json --url ftp://127.0.0.1:{ftp_server.port} --dir in/exports"
        f"   --user {ftp_server.user} --password-env FTP_PASS",
        env={"FTP_PASS": ftp_server.password},
    )

    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 4
    assert {r["name"].split("/")[0] for r in records} == set(REWRITTEN)  # names carried along
    check_rewritten_on_server(ftp_server)
    assert ftp_server.password not in result.stdout + result.stderr


FETCH_TOML = """
ids = [2]
root = "{root}"
sub_dirs = true

[source]
kind = "imap"
host = "127.0.0.1"
port = {imaps_port}
security = "ssl"
user = "{user}"
password_env = "IMAP_PASS"
ca_file = "{mail_ca}"
archive = ""

[download]
allow_hosts = ["127.0.0.1"]
ca_file = "{ca}"
"""


def test_fetch_heads_the_pipeline(
    tmp_path, gem_fixtures, mail_user, https_server, ftps_server, tls_ca
):
    """The full shell pipeline, from a real mailbox to a real FTPS server."""
    link = https_server.add("/exports/20130923/wdc/" + GEM_ZIP, gem_fixtures / GEM_ZIP)
    mail = (gem_fixtures / "export_finished_1.eml").read_bytes()
    old_link = mail.split(b"download: ", 1)[1].split(b"\n", 1)[0].strip()
    mail_user.append(mail.replace(old_link, link.encode()))
    root = tmp_path / "state"
    config = tmp_path / "fetching.toml"
    config.write_text(
        FETCH_TOML.format(
            root=root,
            imaps_port=mail_user.ports.imaps,
            user=mail_user.name,
            mail_ca=mail_user.ca_file,
            ca=tls_ca.ca_file,
        )
        + GEM_CSV_TOML
        + ftp_toml(ftps_server, tls_ca)
    )
    steps = ["fetch", "unzip", "rewrite-csv", "push-ftp"]
    result = shell(
        " | ".join(f"{EXPORTMON} -c {config} {step}" for step in steps),
        env={"IMAP_PASS": mail_user.password, "FTP_PASS": ftps_server.password},
    )

    assert result.returncode == 0, result.stderr
    assert len(https_server.requests_for("/exports/20130923/wdc/" + GEM_ZIP)) >= 1
    check_rewritten_on_server(ftps_server)
    with Ledger.open(root / "ledger.sqlite") as ledger:
        (export,) = ledger.exports()
        assert export.state == "delivered" and export.export_id == 2
        assert ledger.mail(export.mail_id).state == "delivered"
        assert len(ledger.deliveries(export_row=export.id, state="done")) == 4
