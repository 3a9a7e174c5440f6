"""A failure no run retries by itself names --retry-failed wherever it is shown."""

from __future__ import annotations

import json

from fetchkit import config_data, export_mail, imap_table, write_config

from cli import run_cli


def test_a_size_refusal_names_retry_failed_in_the_log_status_and_json(
    tmp_path, mail_user, https_server, tls_ca
):
    link = https_server.add("/e/big.csv", b"x" * 5000)
    mail_user.append(export_mail(link, token="big"))
    data = config_data(
        tmp_path / "state",
        imap_table(mail_user),
        ca_file=tls_ca.ca_file,
        deliver={"to": str(tmp_path / "out")},
        download={"max_bytes": 1000},
    )
    config = write_config(tmp_path / "monitors", data)
    run = run_cli("-c", config, "run", "--once")
    assert run.code == 1
    assert "download.max_bytes" in run.stderr and "--retry-failed" in run.stderr, run.stderr
    status = json.loads(run_cli("-c", config, "status", "--json").stdout)
    assert "--retry-failed" in status["reason"], status
    table = run_cli("-c", config, "status", env={"COLUMNS": "200"})
    assert "--retry-failed" in table.stdout.replace("\n", " ") or "retry" in table.stdout
