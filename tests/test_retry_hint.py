"""A failure caused by the config is retried once the config has changed, and
``--retry-failed`` is named wherever a failure is shown."""

from __future__ import annotations

import io
import json
import signal
import zipfile
from pathlib import Path

from fetchkit import config_data, export_mail, imap_table, write_config
from watching import Watcher, wait_for, wait_for_cycles

from cli import run_cli

CHANGED = "config changed since export 777"


def _size_refusal(tmp_path, mail_user, https_server, tls_ca, **top):
    """A monitor whose 5000-byte export was refused for download.max_bytes = 1000,
    and a function that rewrites its config file with other download settings."""
    link = https_server.add("/e/big.csv", b"x" * 5000)
    mail_user.append(export_mail(link, token="big"))

    def configure(download, comment=""):
        data = config_data(
            tmp_path / "state",
            imap_table(mail_user),
            ca_file=tls_ca.ca_file,
            deliver={"to": str(tmp_path / "out")},
            download=download,
            **top,
        )
        config = write_config(tmp_path / "monitors", data)
        if comment:
            config.write_text(f"# {comment}\n" + config.read_text())
        return config

    config = configure({"max_bytes": 1000})
    run = run_cli("-c", config, "run", "--once")
    assert run.code == 1
    assert "download.max_bytes" in run.stderr, run.stderr
    return config, configure


def _export_rows(config):
    status = json.loads(run_cli("-c", config, "status", "--json").stdout)
    (monitor,) = status["monitors"]
    return monitor, {row["export_id"]: row for row in monitor["exports"]}


def _attempts(config):
    monitor, _ = _export_rows(config)
    failures = [p for p in monitor["problems"] if p["kind"] == "failure"]
    return [p["details"]["attempts"] for p in failures]


def test_a_size_refusal_names_retry_failed_in_the_log_status_and_json(
    tmp_path, mail_user, https_server, tls_ca
):
    config, _ = _size_refusal(tmp_path, mail_user, https_server, tls_ca)
    retry = f"exportmon -c {config} run --once --retry-failed"

    monitor, rows = _export_rows(config)
    assert "--retry-failed" in rows[777]["reason"], rows
    assert rows[777]["retry"] == retry and monitor["retry"] == retry
    (problem,) = [p for p in monitor["problems"] if p["kind"] == "failure"]
    assert problem["details"]["retry"] == retry

    # At 80 columns the reason is shortened; the command is in shell lines that fit
    # (this test's long folder shortened in the middle), whole with --wide.
    table = run_cli("-c", config, "status", env={"COLUMNS": "80"})
    lines = table.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), table.stdout
    assert "    run --once --retry-failed" in lines, table.stdout
    wide = run_cli("-c", config, "status", "--wide", env={"COLUMNS": "80"})
    assert f"  {retry}" in wide.stdout.splitlines(), wide.stdout

    report = json.loads(run_cli("-c", config, "report", "--since", "1d", "--json").stdout)
    (export,) = report["exports"]
    assert export["outcome"] == "failed" and export["retry"] == retry


def test_raising_max_bytes_in_the_config_delivers_at_the_next_run(
    tmp_path, mail_user, https_server, tls_ca
):
    config, configure = _size_refusal(tmp_path, mail_user, https_server, tls_ca)

    plan = run_cli("-c", configure({"max_bytes": 10_000}), "run", "--once", "--dry-run")
    assert plan.code == 0, plan.stderr
    assert "big.csv again for export 777 (the config changed" in plan.stderr, plan.stderr

    run = run_cli("-c", config, "run", "--once")
    assert run.code == 0, run.stderr
    assert run.stderr.count(f"{CHANGED} (big.csv) failed; retrying") == 1, run.stderr
    assert (tmp_path / "out" / "big.csv").read_bytes() == b"x" * 5000
    monitor, rows = _export_rows(config)
    assert rows[777]["state"] == "ok" and monitor["retry"] is None, monitor

    again = run_cli("-c", config, "run", "--once")
    assert again.code == 0 and CHANGED not in again.stderr, again.stderr


def test_an_edit_that_leaves_the_cause_is_retried_once_and_others_not_at_all(
    tmp_path, mail_user, https_server, tls_ca
):
    config, configure = _size_refusal(tmp_path, mail_user, https_server, tls_ca)
    assert _attempts(config) == [1]

    # A comment, and a setting no export step reads: nothing is retried.
    configure({"max_bytes": 1000}, comment="limits agreed with ops")
    config.write_text(config.read_text().replace("ids = [777]", "ids = [777]\npoll_interval = 30"))
    quiet = run_cli("-c", config, "run", "--once")
    assert CHANGED not in quiet.stderr, quiet.stderr
    assert _attempts(config) == [1]

    # Raised, but not enough: one retry, failing as loudly as the first time.
    configure({"max_bytes": 2000})
    retried = run_cli("-c", config, "run", "--once")
    assert retried.code == 1
    assert CHANGED in retried.stderr and "download.max_bytes" in retried.stderr, retried.stderr
    assert _attempts(config) == [2]

    # The same config again: no retry storm.
    for _ in range(2):
        idle = run_cli("-c", config, "run", "--once")
        assert CHANGED not in idle.stderr, idle.stderr
    assert _attempts(config) == [2]
    assert not (tmp_path / "out" / "big.csv").exists()


def test_a_zip_refused_at_unpack_is_unpacked_once_the_limit_is_raised(tmp_path, mail_user):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        for name in ("people.csv", "sites.csv", "teams.csv"):
            zipped.writestr(name, "id,name\n1,a\n")
    mail_user.append(export_mail(attachments=[("export.zip", archive.getvalue())]))

    def configure(max_entries):
        data = config_data(
            tmp_path / "state",
            imap_table(mail_user),
            deliver={"to": str(tmp_path / "out")},
            zip={"max_entries": max_entries},
        )
        return write_config(tmp_path / "monitors", data)

    config = configure(2)
    refused = run_cli("-c", config, "run", "--once")
    assert refused.code == 1 and "max_entries" in refused.stderr, refused.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())

    configure(10)
    run = run_cli("-c", config, "run", "--once")
    assert run.code == 0, run.stderr
    assert f"{CHANGED} (export.zip) failed; retrying" in run.stderr, run.stderr
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.csv")) == [
        "people.csv",
        "sites.csv",
        "teams.csv",
    ]


def test_fetch_downloads_a_refused_export_again_once_the_limit_is_raised(
    tmp_path, mail_user, https_server, tls_ca
):
    config, configure = _size_refusal(tmp_path, mail_user, https_server, tls_ca)
    configure({"max_bytes": 10_000})
    fetched = run_cli("-c", config, "fetch")
    assert fetched.code == 0, fetched.stderr
    assert f"{CHANGED} (big.csv) failed; retrying" in fetched.stderr, fetched.stderr
    (path,) = fetched.stdout.split()
    assert path.endswith("big.csv") and Path(path).read_bytes() == b"x" * 5000


def test_a_watcher_reloaded_with_a_raised_limit_delivers_the_refused_export(
    tmp_path, mail_user, https_server, tls_ca
):
    config, configure = _size_refusal(tmp_path, mail_user, https_server, tls_ca)
    watcher = Watcher(config)
    try:
        log = tmp_path / "state" / "log" / "export_monitor.777.log"
        wait_for_cycles(log)
        assert CHANGED not in watcher.output()
        configure({"max_bytes": 10_000})
        watcher.process.send_signal(signal.SIGHUP)
        wait_for(lambda: (tmp_path / "out" / "big.csv").exists())
        code, err = watcher.stop()
    finally:
        watcher.kill()
    assert code == 0, err
    assert err.count(f"{CHANGED} (big.csv) failed; retrying") == 1, err
