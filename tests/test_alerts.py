"""Alert engine and channels against the real SMTP servers: once per failure, then recovery."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from monitoring import (
    NOW,
    ago,
    backdate_export,
    delivered_export,
    failed_export,
    load,
    open_ledger,
    smtp_alerts,
    start_run,
    write_monitor,
)

from exportmon.actions.alerts import process_alerts
from exportmon.actions.status import status_of
from exportmon.notify.message import compose
from servers.smtp import SmtpServer


@pytest.fixture
def smtp_env(smtp_server, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", smtp_server.password)
    return smtp_server


def monitor_with(tmp_path, extra, **kwargs):
    monitor = load(write_monitor(tmp_path, extra=extra, **kwargs))
    return monitor, open_ledger(monitor)


def test_a_failing_export_gives_one_alert_mail_and_later_one_recovery_mail(tmp_path, smtp_env):
    monitor, ledger = monitor_with(tmp_path, smtp_alerts(smtp_env))
    failed_export(ledger, 777, "tok-1", error="HTTP 404 Not Found for https://x/e")

    created = process_alerts(monitor, ledger)
    assert [(a.kind, a.state) for a in created] == [("failure", "sent")]
    (mail,) = smtp_env.messages
    message = mail.message
    assert (
        message["Subject"]
        == "[exportmon] shop: export 777 failed at download: HTTP 404 Not Found for https://x/e"
    )
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Exportmon-Alert"] == "shop"
    assert message["Precedence"] == "bulk"
    assert message["Message-ID"] and message["Date"]
    assert message["From"] == "exportmon@example.com" and message["To"] == "ops@example.com"
    assert mail.tls and mail.auth_user == smtp_env.user
    assert mail.rcpt_tos == ("ops@example.com",)
    body = message.get_body(("plain",)).get_content()
    assert "Step            download" in body and "Attempts        1" in body
    assert f"exportmon -c {monitor.path} status" in body
    assert "export_monitor.shop.log" in body

    # Nothing new: no second mail, however often the engine runs.
    assert process_alerts(monitor, ledger) == []
    assert process_alerts(monitor, ledger) == []
    assert len(smtp_env.messages) == 1

    delivered_export(ledger, 777, "tok-2")
    created = process_alerts(monitor, ledger)
    assert [(a.kind, a.state) for a in created] == [("recovery", "sent")]
    assert len(smtp_env.messages) == 2
    recovery = smtp_env.messages[1].message
    assert recovery["Subject"] == "[exportmon] shop: export 777 recovered"
    assert recovery["Auto-Submitted"] == "auto-generated"
    assert "export 777 failed at download" in recovery.get_body(("plain",)).get_content()

    assert process_alerts(monitor, ledger) == []
    assert len(smtp_env.messages) == 2
    for received in smtp_env.messages:
        assert smtp_env.password.encode() not in received.data


def test_an_unresolved_failure_is_repeated_after_repeat_after_and_not_before(tmp_path, smtp_env):
    monitor, ledger = monitor_with(tmp_path, smtp_alerts(smtp_env) + 'repeat_after = "6h"\n')
    failed_export(ledger, 777, "tok-1")
    process_alerts(monitor, ledger, now=NOW)  # NOW is when the module was imported
    assert process_alerts(monitor, ledger, now=NOW + timedelta(hours=5)) == []
    repeated = process_alerts(monitor, ledger, now=NOW + timedelta(hours=6, minutes=1))
    assert [a.data["repeat"] for a in repeated] == [1]
    assert "still unresolved since" in smtp_env.messages[1].message["Subject"]
    assert process_alerts(monitor, ledger, now=NOW + timedelta(hours=7)) == []
    assert len(smtp_env.messages) == 2


def test_smtps_implicit_tls(tmp_path, smtps_server, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", smtps_server.password)
    monitor, ledger = monitor_with(tmp_path, smtp_alerts(smtps_server, scheme="smtps"))
    failed_export(ledger, 777, "tok-1")
    assert [a.state for a in process_alerts(monitor, ledger)] == ["sent"]
    (mail,) = smtps_server.messages
    assert mail.tls and mail.auth_user == smtps_server.user


def test_smtp_scheme_uses_starttls_when_offered(tmp_path, smtp_env):
    monitor, ledger = monitor_with(tmp_path, smtp_alerts(smtp_env, scheme="smtp"))
    failed_export(ledger, 777, "tok-1")
    process_alerts(monitor, ledger)
    (mail,) = smtp_env.messages
    assert mail.tls


def test_a_certificate_from_an_untrusted_ca_is_refused_and_the_alert_kept(
    tmp_path, smtp_env, tls_ca
):
    extra = smtp_alerts(smtp_env, ca_file=tls_ca.wrong_ca_file)
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "pending" and alert.attempts == 1
    assert "certificate not trusted" in alert.error and "smtp_ca_file" in alert.error
    assert smtp_env.messages == []


def test_no_password_over_a_plain_connection(tmp_path, start_server, monkeypatch):
    plain = start_server(SmtpServer())
    monkeypatch.setenv("SMTP_PASSWORD", plain.password)
    extra = smtp_alerts(plain, scheme="smtp").replace(f'smtp_ca_file = "{None}"\n', "")
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "pending"
    assert "refusing to send the SMTP password unencrypted" in alert.error
    assert plain.messages == []


def test_submission_requires_starttls(tmp_path, start_server):
    plain = start_server(SmtpServer(user=None))
    extra = (
        f'[alerts]\nsmtp_url = "submission://127.0.0.1:{plain.port}"\nto = ["ops@example.com"]\n'
    )
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    (alert,) = process_alerts(monitor, ledger)
    assert "does not offer STARTTLS" in alert.error and plain.messages == []


def test_plain_smtp_without_login_works(tmp_path, start_server):
    relay = start_server(SmtpServer(user=None))
    extra = f'[alerts]\nsmtp_url = "smtp://127.0.0.1:{relay.port}"\nto = ["ops@example.com"]\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    assert [a.state for a in process_alerts(monitor, ledger)] == ["sent"]
    (mail,) = relay.messages
    assert not mail.tls and mail.message["From"].startswith("exportmon@")


def test_smtp_down_keeps_alerts_pending_in_order_and_sends_them_later(tmp_path, smtp_env):
    monitor, ledger = monitor_with(tmp_path, smtp_alerts(smtp_env))
    smtp_env.stop()
    failed_export(ledger, 777, "tok-1")
    (first,) = process_alerts(monitor, ledger)
    assert first.state == "pending" and "cannot reach SMTP server" in first.error
    status = status_of(monitor, ledger)
    assert any(p.kind == "unsent" for p in status.problems)

    delivered_export(ledger, 777, "tok-2")  # recovered while the mail server was down
    (recovery,) = process_alerts(monitor, ledger)
    assert recovery.kind == "recovery" and recovery.state == "pending"

    smtp_env.start()
    assert process_alerts(monitor, ledger) == []
    subjects = [m.message["Subject"] for m in smtp_env.messages]
    assert subjects == [
        "[exportmon] shop: export 777 failed at download: HTTP 404",
        "[exportmon] shop: export 777 recovered",
    ]
    assert [a.state for a in ledger.alerts()] == ["sent", "sent"]
    process_alerts(monitor, ledger)
    assert len(smtp_env.messages) == 2


HOOK = """#!/bin/sh
cat > "{out}/stdin.json"
env > "{out}/env.txt"
{extra}
"""


def write_hook(tmp_path, extra=""):
    out = tmp_path / "hook-out"
    out.mkdir()
    script = tmp_path / "hook.sh"
    script.write_text(HOOK.format(out=out, extra=extra))
    script.chmod(0o755)
    return script, out


def test_the_command_hook_gets_json_on_stdin_and_environment_without_secrets(tmp_path, monkeypatch):
    script, out = write_hook(tmp_path)
    monkeypatch.setenv("IMAP_PASSWORD", "imap-secret-123")
    monkeypatch.setenv("FTP_PW", "ftp-secret-456")
    extra = '[deliver]\nftp_url = "ftp://127.0.0.1"\nftp_user = "u"\nftp_password_env = "FTP_PW"\n'
    extra += f'[alerts]\ncommand = "{script}"\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1", step="deliver", error="FTP 550 denied (ftp-secret-456)")
    from exportmon import redact

    redact.register("ftp-secret-456")
    (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "sent" and alert.sent_via == {"command"}
    details = json.loads((out / "stdin.json").read_text())
    assert details["kind"] == "failure" and details["monitor"] == "shop"
    assert details["export_id"] == 777 and details["step"] == "deliver"
    assert details["attempts"] == 1 and details["file"] == "tok-1.zip"
    assert details["error"] == "FTP 550 denied (***)"
    assert details["subject"].startswith("[exportmon] shop: export 777 failed at deliver")
    env = dict(
        line.split("=", 1) for line in (out / "env.txt").read_text().splitlines() if "=" in line
    )
    assert env["EXPORTMON_MONITOR"] == "shop"
    assert env["EXPORTMON_EXPORT_ID"] == "777"
    assert env["EXPORTMON_STEP"] == "deliver"
    assert env["EXPORTMON_KIND"] == "failure"
    assert "FTP_PW" not in env
    everything = (out / "stdin.json").read_text() + (out / "env.txt").read_text()
    assert "ftp-secret-456" not in everything


def test_a_failing_command_is_retried_without_repeating_the_mail(tmp_path, smtp_env):
    script, _ = write_hook(
        tmp_path, extra=f'test -e "{tmp_path}/fixed" || {{ echo broken >&2; exit 4; }}'
    )
    extra = smtp_alerts(smtp_env) + f'command = "{script}"\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "pending" and alert.sent_via == {"mail"}
    assert "alert command exited with status 4: broken" in alert.error
    (tmp_path / "fixed").touch()
    process_alerts(monitor, ledger)
    (alert,) = ledger.alerts()
    assert alert.state == "sent" and alert.sent_via == {"mail", "command"}
    assert len(smtp_env.messages) == 1


def test_without_channels_alerts_are_recorded_as_skipped_and_logged(tmp_path, caplog):
    monitor, ledger = monitor_with(tmp_path, "")
    failed_export(ledger, 777, "tok-1")
    with caplog.at_level(logging.WARNING, logger="exportmon"):
        (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "skipped"
    assert "alert: [exportmon] shop: export 777 failed at download" in caplog.text
    assert process_alerts(monitor, ledger) == []


def test_failed_mails_and_failing_steps_alert_at_monitor_level_and_recover(tmp_path, smtp_env):
    monitor, ledger = monitor_with(tmp_path, smtp_alerts(smtp_env))
    ledger.add_mail(source="dir", subject="Export ready", state="failed", note="not a MIME mail")
    ledger.record_step_failure("fetch", "cannot log in to imap.example.com: AUTHENTICATIONFAILED")
    created = process_alerts(monitor, ledger)
    assert [a.subject_key for a in created] == ["mail:1", "step:fetch"]
    subjects = [m.message["Subject"] for m in smtp_env.messages]
    assert subjects == [
        "[exportmon] shop: a mail could not be processed: not a MIME mail",
        "[exportmon] shop: fetch failed: cannot log in to imap.example.com: AUTHENTICATIONFAILED",
    ]
    # The same step failing again is the same problem: no new alert.
    ledger.record_step_failure("fetch", "cannot log in to imap.example.com: AUTHENTICATIONFAILED")
    assert process_alerts(monitor, ledger) == []

    ledger.clear_step_failure("fetch")
    assert process_alerts(monitor, ledger) == []  # the failed mail is still unresolved
    delivered_export(ledger, 777, "tok-2")
    (recovery,) = process_alerts(monitor, ledger)
    assert recovery.data["subject"] == "[exportmon] shop: the monitor recovered"
    assert len(smtp_env.messages) == 3


def test_a_missing_export_is_alerted_once_past_grace_and_recovers_when_it_arrives(
    tmp_path, smtp_env
):
    extra = smtp_alerts(smtp_env) + '[exports.777]\nexpect_every = "1d"\ngrace = "2h"\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    last = delivered_export(ledger, 777, "tok-1")
    backdate_export(ledger, last, hours=25)
    assert process_alerts(monitor, ledger) == []  # 1 h late: within grace
    status = status_of(monitor, ledger)
    assert status.state == "warning" and "did not arrive" in status.reason

    (alert,) = process_alerts(monitor, ledger, now=NOW + timedelta(hours=2))
    assert alert.kind == "missing"
    subject = smtp_env.messages[0].message["Subject"]
    assert subject.startswith("[exportmon] shop: export 777 did not arrive: expected ")
    body = smtp_env.messages[0].message.get_body(("plain",)).get_content()
    assert "Expected every  1d" in body and "fetch --dry-run" in body
    assert process_alerts(monitor, ledger, now=NOW + timedelta(hours=3)) == []

    delivered_export(ledger, 777, "tok-2")
    (recovery,) = process_alerts(monitor, ledger, now=NOW + timedelta(hours=3))
    assert recovery.kind == "recovery"
    assert len(smtp_env.messages) == 2


def test_a_monitor_that_never_received_its_export_is_missing_since_its_first_run(tmp_path):
    extra = '[exports.777]\nexpect_every = "0 6 * * *"\ngrace = "1h"\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    assert process_alerts(monitor, ledger) == []  # never ran: nothing can be said
    start_run(ledger, ago(days=3))
    (alert,) = process_alerts(monitor, ledger)
    assert alert.kind == "missing" and alert.data["details"]["last_arrival"] is None


def test_row_counts_outside_the_expected_range_are_alerted(tmp_path, smtp_env):
    extra = smtp_alerts(smtp_env) + (
        "[exports.777]\nmin_rows = { people = 100 }\nmax_rows = { sites = 10 }\n"
    )
    monitor, ledger = monitor_with(tmp_path, extra)
    delivered_export(ledger, 777, "tok-1", files=(("people.csv", "people", 500, 9000),))
    assert process_alerts(monitor, ledger) == []
    files = (("people.csv", "people", 3, 90), ("sites.csv", "sites", 11, 300))
    delivered_export(ledger, 777, "tok-2", files=files)
    created = process_alerts(monitor, ledger)
    assert sorted(a.data["subject"] for a in created) == [
        "[exportmon] shop: export 777 has 11 sites rows (expected at most 10)",
        "[exportmon] shop: export 777 has 3 people rows (expected at least 100)",
    ]
    assert status_of(monitor, ledger).state == "warning"
    delivered_export(ledger, 777, "tok-3", files=(("people.csv", "people", 480, 9000),))
    (recovery,) = process_alerts(monitor, ledger)
    assert recovery.kind == "recovery"
    assert len(smtp_env.messages) == 3


def test_render_alert_redacts_registered_secrets(tmp_path):
    from exportmon import redact

    monitor, ledger = monitor_with(tmp_path, "")
    redact.register("hunter2-secret")
    failed_export(ledger, 777, "tok-1", error="login failed for pw hunter2-secret")
    (alert,) = process_alerts(monitor, ledger)
    notice = compose(monitor, alert)
    shown = notice.title + notice.line + notice.text + notice.html + str(notice.details)
    assert "hunter2-secret" not in shown + alert.payload
    assert "***" in notice.text and "***" in notice.html


def test_a_reset_for_retry_is_no_recovery_until_the_export_is_delivered(tmp_path, smtp_env):
    monitor, ledger = monitor_with(tmp_path, smtp_alerts(smtp_env))
    export = failed_export(ledger, 777, "tok-1")
    process_alerts(monitor, ledger)
    ledger.reset_export(export.id, "new")  # the user asked for a retry
    assert process_alerts(monitor, ledger) == []
    ledger.fail_export(export.id, "download", "HTTP 404 again", None)
    assert process_alerts(monitor, ledger) == []  # the same failure, still unresolved
    ledger.reset_export(export.id, "new")
    for state in ("downloaded", "unpacked", "delivered"):
        ledger.advance_export(export.id, state)
    (recovery,) = process_alerts(monitor, ledger)
    assert recovery.kind == "recovery"
    assert [m.message["Subject"] for m in smtp_env.messages][-1].endswith("recovered")
    assert len(smtp_env.messages) == 2


def test_a_refused_login_is_kept_and_logged_without_the_password(
    tmp_path, smtp_server, monkeypatch
):
    from exportmon.log import log_file_name, monitor_context

    monkeypatch.setenv("SMTP_PASSWORD", "Wrong-Secret-77")
    monitor, ledger = monitor_with(tmp_path, smtp_alerts(smtp_server))
    failed_export(ledger, 777, "tok-1", error="login with Wrong-Secret-77 failed")
    with monitor_context(monitor.name, monitor.dirs.log):
        (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "pending" and "refused the login of alerts" in alert.error
    assert smtp_server.messages == []
    log_text = (monitor.dirs.log / log_file_name(monitor.name)).read_text()
    assert "not sent (kept, retried on the next run)" in log_text
    stored = " ".join(a.payload + (a.error or "") for a in ledger.alerts())
    assert "Wrong-Secret-77" not in log_text + stored


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.com", ("smtp", "mail.example.com", 25)),
        ("submission://mail.example.com", ("submission", "mail.example.com", 587)),
        ("smtps://mail.example.com:2465/", ("smtps", "mail.example.com", 2465)),
        ("smtps://[::1]", ("smtps", "::1", 465)),
    ],
)
def test_smtp_urls(url, expected):
    from exportmon.notify.smtp import parse_smtp_url

    target = parse_smtp_url(url)
    assert (target.scheme, target.host, target.port) == expected


def test_a_bad_smtp_url_is_refused_without_its_password():
    from exportmon.errors import AlertError
    from exportmon.notify.smtp import parse_smtp_url

    with pytest.raises(AlertError) as info:
        parse_smtp_url("http://user:Pw-Leak-99@mail.example.com")
    assert "Pw-Leak-99" not in info.value.one_line()
