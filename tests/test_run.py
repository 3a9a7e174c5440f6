"""`exportmon run`, once and watching, end to end against real Dovecot, HTTPS, FTPS and SMTP."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fetchkit import config_data, export_mail, imap_table, plain_mail, write_config
from gem_output import GEM_ZIP
from watching import Watcher, wait_for, wait_for_cycles

from cli import run_cli
from exportmon.actions.run import RunOptions, run_once
from exportmon.config.load import load_monitor
from exportmon.ledger import Ledger, from_text, to_text
from exportmon.lock import running_pid

GEM_CSV_PATH = "/exports/20130911/wdc/20130911-195545-affected_slas.csv"
GEM_ZIP_PATH = "/exports/20130923/wdc/" + GEM_ZIP
ZIP_FILES = [
    "5-20130923-072312-calendars.csv",
    "5-20130923-072312-organizations.csv",
    "5-20130923-072312-organizations_contact_details.csv",
    "5-20130923-072312-sites.csv",
]


def gem_mail(gem_fixtures: Path, name: str, base_url: str) -> bytes:
    """A gem fixture mail whose link points at the local HTTPS server, not expired."""
    mail = (gem_fixtures / name).read_bytes()
    mail = mail.replace(b"https://itrp.amazonaws.com", base_url.encode())
    return mail.replace(b"Expires=1379102146", b"Expires=4102444800")


@pytest.fixture
def setup(tmp_path, mail_user, https_server, tls_ca):
    """Writes a monitor config for the fixture account; returns (config path, deliver dir)."""

    def write(name: str = "777", user=None, ids=(777,), **top):
        user = user or mail_user
        deliver = top.pop("deliver", {"to": str(tmp_path / f"delivered-{name}")})
        data = config_data(
            tmp_path / f"state-{name}",
            imap_table(user),
            ids=ids,
            ca_file=tls_ca.ca_file,
            deliver=deliver,
            **top,
        )
        return write_config(tmp_path / "monitors", data, name), Path(deliver.get("to", ""))

    return write


def test_generate_then_run_once_delivers_the_gem_exports_and_archives(
    tmp_path, exportmon_home, gem_fixtures, mail_user, https_server, tls_ca
):
    https_server.add(GEM_CSV_PATH, (gem_fixtures / "dummy.csv").read_bytes())
    https_server.add(GEM_ZIP_PATH, gem_fixtures / GEM_ZIP)
    base = https_server.base_url
    mail_user.append(gem_mail(gem_fixtures, "export_finished_1.eml", base))
    zip_mail = gem_mail(gem_fixtures, "on_premise_export.eml", base)
    zip_mail = zip_mail.replace(GEM_CSV_PATH.encode(), GEM_ZIP_PATH.encode())
    zip_mail = zip_mail.replace(b"0fad4fc0fd4a0130ad2a", b"1fad4fc0fd4a0130ad2a")
    zip_mail = zip_mail.replace(b"<5230cac2b5b24_", b"<zip-5230cac2b5b24_")
    mail_user.append(zip_mail)
    mail_user.append((gem_fixtures / "non_export.eml").read_bytes())

    generated = run_cli(
        "generate",
        "2",
        f"{mail_user.name}@example.com",
        "--password-env",
        "IMAP_PASS",
        "--to",
        tmp_path / "delivered",
    )
    assert generated.code == 0, generated.stderr
    config = Path(generated.stdout.strip())
    text = config.read_text()
    text = text.replace('host = "imap.example.com"', f"host = '{mail_user.host}'")
    text = text.replace("port = 993", f"port = {mail_user.ports.imaps}")
    text = text.replace(f'user = "{mail_user.name}@example.com"', f"user = '{mail_user.name}'")
    text = text.replace("[source]\n", f"[source]\nca_file = '{mail_user.ca_file}'\n")
    text = text.replace(
        "[download]\n", f"[download]\nallow_hosts = ['127.0.0.1']\nca_file = '{tls_ca.ca_file}'\n"
    )
    config.write_text(text)
    env = {"IMAP_PASS": mail_user.password}

    result = run_cli("run", "--once", env=env)
    assert result.code == 0, result.stderr
    delivered = tmp_path / "delivered"
    assert sorted(p.name for p in delivered.iterdir()) == sorted(
        ["20130911-195545-affected_slas.csv", *ZIP_FILES]
    )
    assert (delivered / "20130911-195545-affected_slas.csv").read_text() == "exported content"
    calendars = (delivered / ZIP_FILES[0]).read_text()
    assert "30,,,24x7 except Sunday 5:00am until Noon,mon,00:00,24:00" in calendars
    assert "Copied 4 file(s) from" in result.stderr
    # The two exports are archived; the ordinary mail is left alone.
    assert len(mail_user.list_uids("Archive")) == 2
    (left,) = mail_user.fetch_all("INBOX").values()
    assert b"X-ITRP-ExportID" not in left
    requests = len(https_server.requests)

    again = run_cli("run", "--once", env=env)
    assert again.code == 0, again.stderr
    assert len(https_server.requests) == requests
    assert len(mail_user.list_uids("Archive")) == 2
    with Ledger.open(exportmon_home / "state" / "2" / "ledger.sqlite") as ledger:
        assert len(ledger.deliveries(state="done")) == 5
        assert [r.status for r in ledger.runs()] == ["ok", "ok"]
    status = run_cli("status", "--nagios", env=env)
    assert status.code == 0 and status.stdout.startswith("EXPORTMON OK"), status.stdout


def test_run_picks_up_work_a_crash_left_without_doing_it_twice(
    setup, mail_user, https_server, gem_fixtures, tmp_path
):
    link = https_server.add("/e/" + GEM_ZIP, gem_fixtures / GEM_ZIP)
    mail_user.append(export_mail(link, token="tok-1"))
    config, delivered = setup()
    # Downloaded but not delivered (as if `run` died after the download).
    assert run_cli("-c", config, "fetch").code == 0
    assert len(https_server.requests_for("/e/" + GEM_ZIP)) == 1
    result = run_cli("-c", config, "run", "--once")
    assert result.code == 0, result.stderr
    assert "resuming export 777" in result.stderr
    assert len(https_server.requests_for("/e/" + GEM_ZIP)) == 1
    assert sorted(p.name for p in delivered.iterdir()) == ZIP_FILES
    assert len(mail_user.list_uids("Archive")) == 1

    # Delivered but not archived (as if it died before the move).
    mail_user.append(export_mail(https_server.add("/e/b.csv", b"a,b\n1,2\n"), token="tok-2"))
    assert run_cli("-c", config, "run", "--once", "--no-archive").code == 0
    assert len(mail_user.list_uids("INBOX")) == 1
    mtime = (delivered / "b.csv").stat().st_mtime_ns
    assert run_cli("-c", config, "run", "--once").code == 0
    assert mail_user.list_uids("INBOX") == [] and len(mail_user.list_uids("Archive")) == 2
    assert (delivered / "b.csv").stat().st_mtime_ns == mtime
    with Ledger.open(tmp_path / "state-777" / "ledger.sqlite") as ledger:
        assert len(ledger.deliveries(state="done")) == 5
        assert {m.state for m in ledger.mails()} == {"archived"}


def test_a_failing_export_alerts_once_and_recovers_once(
    setup, mail_user, https_server, smtp_server, tls_ca
):
    mail_user.append(export_mail(https_server.url("/e/late.csv"), token="tok-late"))
    alerts = {
        "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
        "smtp_user": smtp_server.user,
        "smtp_password_env": "SMTP_PASS",
        "smtp_ca_file": str(tls_ca.ca_file),
        "from": "exportmon@example.com",
        "to": ["ops@example.com"],
    }
    config, delivered = setup(alerts=alerts)
    env = {"SMTP_PASS": smtp_server.password}
    failed = run_cli("-c", config, "run", "--once", env=env)
    assert failed.code == 1
    assert len(smtp_server.wait_for_messages(1)) == 1
    again = run_cli("-c", config, "run", "--once", env=env)
    assert again.code == 0, again.stderr
    assert len(smtp_server.messages) == 1
    (alert,) = smtp_server.messages
    assert alert.message["Auto-Submitted"] == "auto-generated"
    assert "777" in alert.message["Subject"]
    assert smtp_server.password not in alert.data.decode()
    assert len(mail_user.list_uids("INBOX")) == 1  # the failed mail stays

    https_server.add("/e/late.csv", b"id\n1\n")
    fixed = run_cli("-c", config, "run", "--once", "--retry-failed", env=env)
    assert fixed.code == 0, fixed.stderr
    assert (delivered / "late.csv").read_bytes() == b"id\n1\n"
    messages = smtp_server.wait_for_messages(2)
    assert len(messages) == 2 and "recover" in messages[1].message["Subject"].lower()
    assert mail_user.list_uids("INBOX") == []


def test_dry_run_changes_nothing(setup, mail_user, https_server, tmp_path):
    mail_user.append(export_mail(https_server.add("/e/a.csv", b"x\n"), token="tok-a"))
    config, delivered = setup()
    result = run_cli("-c", config, "run", "--once", "--dry-run")
    assert result.code == 0, result.stderr
    assert "would download a.csv" in result.stderr
    assert https_server.requests_for("/e/a.csv") == []
    assert not delivered.exists() and not (tmp_path / "state-777").exists()
    assert len(mail_user.list_uids("INBOX")) == 1


def test_json_summary(setup, mail_user, https_server):
    import json

    mail_user.append(export_mail(https_server.add("/e/a.csv", b"x\n1\n"), token="tok-a"))
    config, _ = setup()
    result = run_cli("-c", config, "run", "--once", "--json")
    assert result.code == 0, result.stderr
    (summary,) = json.loads(result.stdout)
    assert summary["monitor"] == "777" and summary["delivered"] == 1
    assert summary["delivered_exports"][0]["file"] == "a.csv"
    assert summary["delivered_exports"][0]["rows"] == 1


def age_by(state: Path, hours: float) -> None:
    """Make everything of a monitor's delivered exports ``hours`` older: the ledger's
    delivery times and the downloaded files' modification times."""
    ledger_path = state / "ledger.sqlite"
    with contextlib.closing(sqlite3.connect(ledger_path)) as db, db:
        for row_id, delivered_at in db.execute(
            "SELECT id, delivered_at FROM exports WHERE delivered_at IS NOT NULL"
        ).fetchall():
            moved = from_text(delivered_at) - timedelta(hours=hours)
            db.execute("UPDATE exports SET delivered_at = ? WHERE id = ?", (to_text(moved), row_id))
    for path in (state / "downloads").rglob("*"):
        info = path.lstat()
        shift = hours * 3600
        os.utime(path, (info.st_atime - shift, info.st_mtime - shift), follow_symlinks=False)


@pytest.fixture
def watchers():
    started: list[Watcher] = []

    def start(*configs, **kwargs) -> Watcher:
        watcher = Watcher(*configs, **kwargs)
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.kill()


def test_watching_delivers_a_new_mail_within_seconds_and_stops_cleanly(
    setup, mail_user, https_server, watchers, tmp_path
):
    config, delivered = setup()
    watcher = watchers(config)
    pids = tmp_path / "state-777" / "pids"
    wait_for(lambda: running_pid(pids, "777") == watcher.process.pid)
    wait_for_cycles(tmp_path / "state-777" / "log" / "export_monitor.777.log")
    appended = time.monotonic()
    mail_user.append(export_mail(https_server.add("/e/new.csv", b"id\n7\n"), token="tok-new"))
    wait_for(lambda: (delivered / "new.csv").exists())
    latency = time.monotonic() - appended
    print(f"mail appended -> file delivered while watching: {latency:.2f} s")
    assert (delivered / "new.csv").read_bytes() == b"id\n7\n"
    wait_for(lambda: len(mail_user.list_uids("Archive")) == 1)

    # A second instance is refused while this one runs.
    second = run_cli("-c", config, "run", "--once")
    assert second.code == 2
    assert f"already running (pid {watcher.process.pid})" in second.stderr

    code, err = watcher.stop(signal.SIGTERM)
    assert code == 0, err
    assert "SIGTERM received" in err
    assert running_pid(pids, "777") is None
    assert (pids / "export_monitor.777.pid").read_text() == ""


def test_sighup_reloads_the_config(setup, mail_user, https_server, watchers, tmp_path):
    config, first_dir = setup()
    watcher = watchers(config)
    wait_for(lambda: running_pid(tmp_path / "state-777" / "pids", "777") == watcher.process.pid)
    second_dir = tmp_path / "elsewhere"
    config.write_text(config.read_text().replace(str(first_dir), str(second_dir)))
    watcher.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in watcher.output())
    mail_user.append(export_mail(https_server.add("/e/r.csv", b"r\n"), token="tok-r"))
    wait_for(lambda: (second_dir / "r.csv").exists())
    assert not first_dir.exists()
    code, err = watcher.stop()
    assert code == 0 and "reloaded" in err


def test_exit_when_idle_stops_the_watcher(setup, watchers):
    config, _ = setup(exit_when_idle=0.05)
    watcher = watchers(config)
    code, err = watcher.stop(sig=0, timeout=30)  # signal 0: just wait for it to end
    assert code == 0, err
    assert re.search(r"no export mails for 0\.05 minutes: stopping", err)


def test_one_process_watches_several_monitors(setup, dovecot, https_server, watchers, tmp_path):
    first_user, second_user = dovecot.add_user(), dovecot.add_user()
    first, first_dir = setup("first", user=first_user)
    second, second_dir = setup("second", user=second_user, ids=(778,))
    watcher = watchers(first, second)
    for name in ("first", "second"):
        wait_for(lambda name=name: running_pid(tmp_path / f"state-{name}" / "pids", name))
    first_user.append(export_mail(https_server.add("/e/1.csv", b"1\n"), token="t1"))
    second_user.append(export_mail(https_server.add("/e/2.csv", b"2\n"), export_id=778, token="t2"))
    wait_for(lambda: (first_dir / "1.csv").exists() and (second_dir / "2.csv").exists())
    code, err = watcher.stop(signal.SIGINT)
    assert code == 130, err  # Ctrl-C


def test_watching_survives_a_mail_server_restart(
    setup, dovecot, mail_user, https_server, watchers, tmp_path
):
    config, delivered = setup(poll_interval="2s")
    watcher = watchers(config)
    wait_for(lambda: running_pid(tmp_path / "state-777" / "pids", "777") == watcher.process.pid)
    wait_for_cycles(tmp_path / "state-777" / "log" / "export_monitor.777.log")
    dovecot.restart()
    mail_user.append(export_mail(https_server.add("/e/after.csv", b"a\n"), token="tok-after"))
    wait_for(lambda: (delivered / "after.csv").exists(), timeout=60)
    code, err = watcher.stop()
    assert code == 0, err
    assert watcher.process.returncode == 0


def test_unrelated_mail_is_not_touched_while_watching(
    setup, mail_user, https_server, watchers, tmp_path
):
    config, delivered = setup()
    mail_user.append(plain_mail())
    watcher = watchers(config)
    wait_for(lambda: running_pid(tmp_path / "state-777" / "pids", "777") == watcher.process.pid)
    mail_user.append(export_mail(https_server.add("/e/x.csv", b"x\n"), token="tok-x"))
    wait_for(lambda: (delivered / "x.csv").exists())
    watcher.stop()
    (left,) = mail_user.fetch_all("INBOX").values()
    assert b"Lunch on Friday" in left
    assert mail_user.flags("INBOX") and all(
        b"\\Seen" not in f for f in mail_user.flags("INBOX").values()
    )


def test_an_alert_mail_in_the_monitored_mailbox_is_never_processed(
    setup, mail_user, https_server, smtp_server, tls_ca
):
    # Alerts often go to the same mailbox the monitor reads.
    mail_user.append(export_mail(https_server.url("/e/missing.csv"), token="tok-missing"))
    alerts = {
        "smtp_url": f"smtp://127.0.0.1:{smtp_server.port}",
        "smtp_user": smtp_server.user,
        "smtp_password_env": "SMTP_PASS",
        "smtp_ca_file": str(tls_ca.ca_file),
        "from": "exportmon@example.com",
        "to": [f"{mail_user.name}@example.com"],
    }
    config, _ = setup(alerts=alerts)
    env = {"SMTP_PASS": smtp_server.password}
    assert run_cli("-c", config, "run", "--once", env=env).code == 1
    (alert,) = smtp_server.wait_for_messages(1)
    mail_user.append(alert.data)
    again = run_cli("-c", config, "run", "--once", env=env)
    assert again.code == 0, again.stderr
    assert len(mail_user.list_uids("INBOX")) == 2 and "Archive" not in mail_user.mailboxes()
    assert len(smtp_server.messages) == 1


def test_keep_downloads_prunes_old_downloads_of_delivered_exports(
    setup, mail_user, https_server, tmp_path
):
    mail_user.append(export_mail(https_server.add("/e/old.csv", b"id\n1\n"), token="tok-old"))
    config, delivered = setup(keep_downloads="1h")
    assert run_cli("-c", config, "run", "--once").code == 0
    downloads = tmp_path / "state-777" / "downloads"
    assert [p.name for p in downloads.rglob("*.csv")] == ["old.csv"]
    age_by(tmp_path / "state-777", hours=2)  # two hours pass
    assert run_cli("-c", config, "run", "--once").code == 0
    assert list(downloads.rglob("*.csv")) == []
    assert (delivered / "old.csv").read_bytes() == b"id\n1\n"


def test_an_export_is_delivered_while_the_next_downloads_in_mail_order(
    setup, mail_user, https_server, gem_fixtures, tmp_path
):
    bodies = {"a.csv": b"id\n1\n", GEM_ZIP: gem_fixtures / GEM_ZIP, "broken.zip": b"no zip"}
    bodies["d.csv"] = b"id\n4\n"
    for number, (name, body) in enumerate(bodies.items()):
        mail_user.append(export_mail(https_server.add("/e/" + name, body), token=f"tok-{number}"))
    config, delivered = setup()
    ledger_path = tmp_path / "state-777" / "ledger.sqlite"
    in_order: list[str | None] = []

    def on_delivered(_monitor, export) -> None:
        # Called on the worker thread. Holding it here after the first export leaves
        # the second one "new" for ever unless it downloads beside this delivery.
        if not in_order:
            with Ledger.open(ledger_path) as ledger:
                second = ledger.exports()[1]
                wait_for(lambda: ledger.export(second.id).state != "new")
        in_order.append(export.file_name)

    result = run_once(load_monitor(config), RunOptions(on_delivered=on_delivered))

    assert in_order == ["a.csv", GEM_ZIP, "d.csv"]
    assert len(result.failures) == 1 and "broken.zip" in result.failures[0]
    assert sorted(p.name for p in delivered.iterdir()) == sorted(["a.csv", "d.csv", *ZIP_FILES])
    # Mails are archived once their exports are delivered; the failed one stays.
    assert len(mail_user.list_uids("Archive")) == 3
    (left,) = mail_user.fetch_all("INBOX").values()
    assert b"broken.zip" in left
    with Ledger.open(ledger_path) as ledger:
        delivered_at = [e.delivered_at for e in ledger.exports("delivered")]
        assert delivered_at == sorted(delivered_at)


def test_the_delivery_worker_logs_to_the_monitor_log_file(setup, mail_user, https_server, tmp_path):
    for name in ("a.csv", "b.csv"):
        mail_user.append(export_mail(https_server.add(f"/e/{name}", b"id\n1\n"), token=name))
    config, _ = setup()
    result = run_cli("-c", config, "run", "--once")
    assert result.code == 0, result.stderr
    log_text = (tmp_path / "state-777" / "log" / "export_monitor.777.log").read_text()
    assert log_text.count("Copied 1 file(s)") == 2
