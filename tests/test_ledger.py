"""The SQLite ledger: schema, migrations, state transitions, deduplication, durability settings."""

from __future__ import annotations

import sqlite3
import stat

import pytest

from exportmon.errors import LedgerError
from exportmon.ledger import MIGRATIONS, Ledger


@pytest.fixture
def ledger(tmp_path):
    with Ledger.open(tmp_path / "ledger.sqlite") as opened:
        yield opened


def test_new_ledger_is_private_wal_and_at_the_latest_schema(tmp_path):
    path = tmp_path / "state" / "ledger.sqlite"
    with Ledger.open(path) as ledger:
        assert ledger.schema_version == len(MIGRATIONS)
        assert ledger.journal_mode == "wal"
        assert ledger.integrity_check() == "ok"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with Ledger.open(path) as again:  # reopening migrates nothing and keeps the version
        assert again.schema_version == len(MIGRATIONS)


def test_a_ledger_from_a_newer_exportmon_is_refused(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(LedgerError, match="newer than this exportmon understands"):
        Ledger.open(path)


def test_export_progresses_and_a_failure_keeps_its_progress(ledger):
    mail = ledger.add_mail(
        source="imap://u@h:993",
        mailbox="INBOX",
        uidvalidity=7,
        uid="42",
        message_id="<m@x>",
        subject="Export finished",
    )
    export = ledger.add_export(
        key="tok",
        kind="link",
        mail_id=mail.id,
        export_id=777,
        token="tok",
        link="https://x/a.zip",
        file_name="a.zip",
    )
    assert export.state == "new" and not export.failed
    export = ledger.advance_export(export.id, "downloaded", download_path="/d/a.zip", bytes=10)
    assert export.downloaded_at and export.bytes == 10
    failed = ledger.fail_export(export.id, "unzip", "CRC mismatch", retry_at=None)
    assert failed.state == "downloaded" and failed.failed and failed.attempts == 1
    assert ledger.due_exports() == []  # no automatic retry without retry_at
    assert [e.id for e in ledger.due_exports(include_failed=True)] == [export.id]
    ledger.fail_export(export.id, "unzip", "CRC mismatch", retry_at="2000-01-01T00:00:00.000000Z")
    assert [e.id for e in ledger.due_exports()] == [export.id]
    done = ledger.advance_export(export.id, "unpacked", files=4, rows=100)
    assert done.error is None and done.retry_at is None and done.files == 4
    with pytest.raises(LedgerError, match="cannot go back"):
        ledger.advance_export(export.id, "downloaded")
    assert ledger.settle_mail(mail.id) == "new"
    ledger.advance_export(export.id, "delivered")
    # Settled by the same transaction: no crash can leave the mail behind.
    assert ledger.mail(mail.id).state == "delivered"
    assert ledger.settle_mail(mail.id) == "delivered"
    ledger.set_mail_state(mail.id, "archived")
    assert ledger.mail(mail.id).archived_at is not None


def test_the_same_export_key_is_recorded_once(ledger):
    first = ledger.add_export(key="tok", kind="link", export_id=1, link="https://a")
    second = ledger.add_export(key="tok", kind="link", export_id=1, link="https://b")
    assert first.id == second.id and second.link == "https://a"
    assert len(ledger.exports()) == 1


def test_mails_are_found_by_uid_or_message_id(ledger):
    mail = ledger.add_mail(source="s", mailbox="INBOX", uidvalidity=1, uid="5", message_id="<a@b>")
    assert ledger.find_mail(source="s", mailbox="INBOX", uidvalidity=1, uid="5").id == mail.id
    # After a UIDVALIDITY change the UID means nothing, the Message-ID still does.
    assert (
        ledger.find_mail(source="s", mailbox="INBOX", uidvalidity=2, uid="9", message_id="<a@b>").id
        == mail.id
    )
    assert ledger.find_mail(source="s", mailbox="INBOX", uidvalidity=2, uid="9") is None


def test_mailbox_state_round_trips(ledger):
    assert ledger.mailbox_state("s", "INBOX") is None
    ledger.save_mailbox_state("s", "INBOX", 99, 1234, {"highestmodseq": 5})
    ledger.save_mailbox_state("s", "INBOX", 99, 1240)
    state = ledger.mailbox_state("s", "INBOX")
    assert (state.uidvalidity, state.last_uid) == (99, 1240)


def test_deliveries_record_start_before_finish(ledger):
    export = ledger.add_export(key="k", kind="link")
    file = ledger.add_file(
        path="/d/a.csv", name="a.csv", export_row=export.id, export_type="people", bytes=3
    )
    assert ledger.file_by_path("/d/a.csv").id == file.id
    delivery = ledger.start_delivery(
        destination="local:/out",
        source_path="/d/a.csv",
        target="/out/a.csv",
        file_id=file.id,
        export_row=export.id,
    )
    assert ledger.interrupted_deliveries() == [delivery]
    assert ledger.delivered(file.id, "local:/out") is None
    ledger.finish_delivery(delivery.id, bytes=3, sha256="abc")
    assert ledger.interrupted_deliveries() == []
    assert ledger.delivered(file.id, "local:/out").sha256 == "abc"
    again = ledger.add_file(path="/d2/a.csv", name="a.csv", export_row=export.id)
    assert again.id == file.id and again.path == "/d2/a.csv"


def test_notice_once(ledger):
    assert ledger.notice_once("unmonitored:778") is True
    assert ledger.notice_once("unmonitored:778") is False
    assert ledger.notice_once("unmonitored:779") is True


def test_alerts_and_runs(ledger):
    alert = ledger.add_alert("failure", "export:777", {"error": "boom"})
    assert alert.state == "pending" and alert.data == {"error": "boom"}
    ledger.set_alert_state(alert.id, "sent")
    assert ledger.alerts(state="sent")[0].sent_at
    run_id = ledger.start_run("run --once")
    ledger.finish_run(run_id, "ok", {"delivered": 1})
    assert ledger.runs()[0].status == "ok"


def test_prune_removes_only_finished_old_records(ledger):
    mail = ledger.add_mail(source="s", uid="1")
    old = ledger.add_export(key="old", kind="link", mail_id=mail.id)
    ledger.advance_export(old.id, "delivered")
    pending = ledger.add_export(key="pending", kind="link")
    counts = ledger.prune("9999-01-01T00:00:00.000000Z")
    assert counts["exports"] == 1
    assert [e.key for e in ledger.exports()] == [pending.key]


def test_bad_states_are_programming_errors(ledger):
    with pytest.raises(ValueError):
        ledger.exports("done")
    export = ledger.add_export(key="k", kind="link")
    with pytest.raises(ValueError):
        ledger.advance_export(export.id, "delivered", colour="red")


def test_atomic_keeps_all_changes_of_the_block_or_none(ledger):
    with ledger.atomic():
        mail = ledger.add_mail(source="imap", uid="1", subject="a")
        ledger.add_export(key="k1", kind="attachment", mail_id=mail.id)
        ledger.add_export(key="k2", kind="attachment", mail_id=mail.id)
    assert len(ledger.exports(mail_id=mail.id)) == 2
    with pytest.raises(RuntimeError), ledger.atomic():
        other = ledger.add_mail(source="imap", uid="2", subject="b")
        ledger.add_export(key="k3", kind="attachment", mail_id=other.id)
        raise RuntimeError("killed half-way")
    assert [m.uid for m in ledger.mails()] == ["1"]
    assert ledger.find_export("k3") is None


def _counter_values(ledger):
    return {(c.name, c.export_id, c.destination): c.value for c in ledger.counters()}


def _deliver(ledger, key, export_id=777, destination="local:/srv/in"):
    export = ledger.add_export(key=key, kind="link", export_id=export_id)
    ledger.advance_export(export.id, "unpacked")
    file = ledger.add_file(
        path=f"/d/{key}.csv", name=f"{key}.csv", export_row=export.id, rows=5, bytes=50
    )
    delivery = ledger.start_delivery(
        destination=destination, source_path=file.path, target=file.name, file_id=file.id
    )
    ledger.finish_delivery(delivery.id, bytes=50)
    ledger.finish_delivery(delivery.id, bytes=50)  # finishing again counts nothing more
    ledger.advance_export(export.id, "delivered")
    ledger.advance_export(export.id, "delivered")
    return export


def test_counters_grow_once_per_change_and_pruning_leaves_them(ledger):
    _deliver(ledger, "a")
    _deliver(ledger, "b")
    failing = ledger.add_export(key="c", kind="link", export_id=777)
    ledger.fail_export(failing.id, "download", "HTTP 500", None)
    ledger.fail_export(failing.id, "download", "HTTP 500", None)
    broken = ledger.start_delivery(destination="local:/srv/in", source_path="/x", target="x")
    ledger.fail_delivery(broken.id, "disk full")
    expected = {
        ("delivered_exports", "777", ""): 2,
        ("delivered_files", "777", ""): 2,
        ("delivered_rows", "777", ""): 10,
        ("delivered_bytes", "777", ""): 100,
        ("export_failures", "777", ""): 2,
        ("destination_files", "", "local:/srv/in"): 2,
        ("destination_bytes", "", "local:/srv/in"): 100,
        ("destination_failures", "", "local:/srv/in"): 1,
    }
    assert _counter_values(ledger) == expected
    ledger.prune("9999-01-01T00:00:00.000000Z")
    assert ledger.exports("delivered") == []
    assert _counter_values(ledger) == expected


def test_counters_start_from_what_an_older_ledger_holds(tmp_path):
    from exportmon.ledger.db import MIGRATIONS as ALL

    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path) as ledger:
        _deliver(ledger, "a")
    with sqlite3.connect(path) as db:  # back to schema 3, as an older exportmon left it
        db.execute("DROP TABLE counters")
        db.execute("ALTER TABLE exports DROP COLUMN export_type")  # added by migration 5
        db.execute("ALTER TABLE exports DROP COLUMN error_config")  # added by migration 6
        # ... without what later migrations add (7: the processing status of deliveries).
        db.execute("DROP INDEX deliveries_by_status")
        for column in ("reference", "status", "status_fields", "submitted_at", "polled_at"):
            db.execute(f"ALTER TABLE deliveries DROP COLUMN {column}")
        db.execute("PRAGMA user_version = 3")
    assert len(ALL) >= 4
    with Ledger.open(path) as ledger:
        values = _counter_values(ledger)
    assert values[("delivered_files", "777", "")] == 1
    assert values[("delivered_rows", "777", "")] == 5
    assert values[("destination_bytes", "", "local:/srv/in")] == 50
