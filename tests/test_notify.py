"""Notification channels against real receivers: Apprise json:// and form:// webhooks on a
local HTTP server, aiosmtpd for mail, a shell command; each channel on its own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from fetchkit import export_mail
from monitoring import failed_export, load, open_ledger, smtp_alerts, write_monitor

from exportmon import redact
from exportmon.actions.alerts import process_alerts
from exportmon.actions.run import RunOptions, run_once
from exportmon.config.load import load_monitor
from exportmon.errors import ConfigError
from exportmon.notify import configured_channels
from servers import free_port

TOKEN = "hooktoken-5f1e2d3c4b5a"


@pytest.fixture
def smtp_env(smtp_server, monkeypatch):
    monkeypatch.setenv("SMTP_PASSWORD", smtp_server.password)
    return smtp_server


def monitor_with(tmp_path: Path, extra: str, **kwargs):
    monitor = load(write_monitor(tmp_path, extra=extra, **kwargs))
    return monitor, open_ledger(monitor)


def json_url(receiver, path=f"/hooks/{TOKEN}") -> str:
    return receiver.url(path, scheme="json")


def test_a_failure_reaches_a_json_webhook_with_title_message_and_type(tmp_path, receiver):
    extra = f'[alerts]\nnotify = ["{json_url(receiver)}"]\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1", error="HTTP 404 Not Found")
    (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "sent"
    (request,) = receiver.at(f"/hooks/{TOKEN}")
    assert request.method == "POST"
    assert request.headers["content-type"].startswith("application/json")
    payload = request.json()
    assert payload["version"] == "1.0" and payload["type"] == "failure"
    assert payload["title"].startswith("[exportmon] shop: export 777 failed at download")
    assert payload["message"] == "export 777 failed at download: HTTP 404 Not Found"
    assert "\n" not in payload["message"]
    (record,) = ledger.alert_channels(alert.id)
    assert record.channel.startswith("notify:json:") and TOKEN not in record.channel
    assert record.state == "sent"


def test_a_form_webhook_gets_the_same_fields(tmp_path, receiver):
    url = receiver.url("/form-hook", scheme="form")
    monitor, ledger = monitor_with(tmp_path, f'[alerts]\nnotify = ["{url}"]\n')
    failed_export(ledger, 777, "tok-1")
    process_alerts(monitor, ledger)
    (request,) = receiver.at("/form-hook")
    fields = dict(part.split("=", 1) for part in request.text.split("&"))
    assert fields["type"] == "failure" and "title" in fields and "message" in fields


def test_an_smtp_outage_delivers_the_json_notice_and_queues_the_mail(
    tmp_path, receiver, smtp_env, monkeypatch
):
    extra = smtp_alerts(smtp_env).replace(str(smtp_env.port), str(free_port()))
    extra += f'notify = ["{json_url(receiver)}"]\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "pending"
    assert len(receiver.at(f"/hooks/{TOKEN}")) == 1
    states = {c.channel.split(":")[0]: c.state for c in ledger.alert_channels(alert.id)}
    assert states == {"mail": "pending", "notify": "sent"}
    (mail_record,) = [c for c in ledger.alert_channels(alert.id) if c.channel == "mail"]
    assert "cannot reach SMTP server" in (mail_record.error or "")

    # The mail server comes back: the mail goes, the webhook is not repeated.
    monitor.alerts.smtp_url = f"submission://127.0.0.1:{smtp_env.port}"
    process_alerts(monitor, ledger)
    (alert,) = ledger.alerts()
    assert alert.state == "sent" and alert.sent_via == {"mail", alert_channel(ledger, "notify")}
    assert len(smtp_env.messages) == 1 and len(receiver.at(f"/hooks/{TOKEN}")) == 1


def alert_channel(ledger, prefix: str) -> str:
    return next(c.channel for c in ledger.alert_channels() if c.channel.startswith(prefix))


def test_an_smtp_outage_does_not_stop_the_command(tmp_path, smtp_env):
    out = tmp_path / "ran"
    extra = smtp_alerts(smtp_env).replace(str(smtp_env.port), str(free_port()))
    extra += f'command = "cat > {out}"\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    for _ in range(3):
        process_alerts(monitor, ledger)
    assert '"kind": "failure"' in out.read_text()
    (alert,) = ledger.alerts()
    assert alert.state == "pending" and alert.sent_via == {"command"}


def test_a_refusing_webhook_keeps_its_queue_in_order_while_mail_goes_on(
    tmp_path, receiver, smtp_env
):
    receiver.fail(f"/hooks/{TOKEN}", 503)
    extra = smtp_alerts(smtp_env) + f'notify = ["{json_url(receiver)}"]\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    process_alerts(monitor, ledger)
    failed_export(ledger, 778, "tok-2")
    process_alerts(monitor, ledger)
    assert len(smtp_env.messages) == 2
    # One attempt per run: the channel stops at its first failure, keeping the order.
    assert len(receiver.at(f"/hooks/{TOKEN}")) == 2
    assert [a.state for a in ledger.alerts()] == ["pending", "pending"]
    receiver.fail(f"/hooks/{TOKEN}", 200)
    process_alerts(monitor, ledger)
    titles = [r.json()["title"] for r in receiver.at(f"/hooks/{TOKEN}")[2:]]
    assert [t.split(": ")[1] for t in titles] == [
        "export 777 failed at download",
        "export 778 failed at download",
    ]
    assert [a.state for a in ledger.alerts()] == ["sent", "sent"]
    assert len(smtp_env.messages) == 2


def test_urls_from_the_environment_are_secret_everywhere(tmp_path, receiver, monkeypatch, caplog):
    receiver.fail(f"/hooks/{TOKEN}", 500)
    monkeypatch.setenv("NOTIFY_URLS", f"{json_url(receiver)} , ")
    monitor, ledger = monitor_with(tmp_path, '[alerts]\nnotify_env = "NOTIFY_URLS"\n')
    failed_export(ledger, 777, "tok-1")
    with caplog.at_level("DEBUG"):
        (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "pending"
    assert len(receiver.at(f"/hooks/{TOKEN}")) == 1
    (record,) = ledger.alert_channels(alert.id)
    shown = caplog.text + (record.error or "") + record.channel
    assert (TOKEN not in shown and "notify[1] json://…" in shown) or "notify[1]" in shown
    assert TOKEN not in Path(monitor.dirs.ledger).read_bytes().decode("latin-1")
    assert redact.redact(f"see {json_url(receiver)}") == "see ***"


def test_urls_from_a_command(tmp_path, receiver):
    script = tmp_path / "urls.sh"
    script.write_text(f"#!/bin/sh\necho '{json_url(receiver)}'\n")
    script.chmod(0o700)
    monitor, ledger = monitor_with(tmp_path, f'[alerts]\nnotify_command = "{script}"\n')
    failed_export(ledger, 777, "tok-1")
    (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "sent" and len(receiver.at(f"/hooks/{TOKEN}")) == 1


def test_an_unset_url_variable_waits_and_the_other_channels_go(tmp_path, receiver, monkeypatch):
    out = tmp_path / "ran"
    monkeypatch.delenv("NOTIFY_URLS", raising=False)
    extra = f'[alerts]\nnotify_env = "NOTIFY_URLS"\ncommand = "cat > {out}"\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    (alert,) = process_alerts(monitor, ledger)
    assert out.exists() and alert.state == "pending"
    assert "NOTIFY_URLS is not set" in (alert.error or "")
    monkeypatch.setenv("NOTIFY_URLS", json_url(receiver))
    process_alerts(monitor, ledger)
    assert ledger.alerts()[0].state == "sent" and len(receiver.at(f"/hooks/{TOKEN}")) == 1


def test_without_apprise_a_notify_url_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "apprise", None)  # makes `import apprise` fail
    path = write_monitor(tmp_path, extra='[alerts]\nnotify = ["ntfy://ntfy.example.com/x"]\n')
    with pytest.raises(ConfigError) as caught:
        load_monitor(path)
    line = caught.value.one_line()
    assert "exportmon[notify]" in line and "\n" not in line


def test_a_bad_apprise_url_is_given_up_for_that_channel_only(tmp_path, receiver):
    out = tmp_path / "ran"
    extra = f'[alerts]\nnotify = ["nosuchservice://x/y"]\ncommand = "cat > {out}"\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    assert [c.name.split(":")[0] for c in configured_channels(monitor)] == ["command", "notify"]
    failed_export(ledger, 777, "tok-1")
    (alert,) = process_alerts(monitor, ledger)
    assert out.exists() and alert.state == "sent"
    notify = [c for c in ledger.alert_channels(alert.id) if c.channel.startswith("notify")]
    assert notify[0].state == "failed" and "not a URL Apprise knows" in notify[0].error


def test_only_the_kinds_in_on_are_sent(tmp_path, receiver):
    extra = f'[alerts]\nnotify = ["{json_url(receiver)}"]\non = ["recovery"]\n'
    monitor, ledger = monitor_with(tmp_path, extra)
    failed_export(ledger, 777, "tok-1")
    (alert,) = process_alerts(monitor, ledger)
    assert alert.state == "skipped" and receiver.requests == []


def write_attachment_mails(tmp_path: Path, count: int) -> None:
    for number in range(count):
        rows = "".join(f"{i},name {i}\n" for i in range(number + 2))
        mail = export_mail(
            export_id=777 + number,
            token=f"tok-{number}",
            attachments=[(f"people-{number}.csv", ("id,name\n" + rows).encode())],
        )
        (tmp_path / "mails" / f"{number}.eml").write_bytes(mail)


def test_a_run_with_success_and_summary_sends_one_per_export_and_one_summary(
    tmp_path, receiver, smtp_env
):
    extra = (
        f'[deliver]\nto = "{tmp_path / "out"}"\n'
        + smtp_alerts(smtp_env)
        + f'notify = ["{json_url(receiver)}"]\non = ["success", "summary"]\n'
    )
    path = write_monitor(tmp_path, ids=(777, 778), extra=extra)
    write_attachment_mails(tmp_path, 2)
    result = run_once(load(path), RunOptions(archive=False))
    destination = load(path).deliver.to
    assert len(result.delivered) == 2 and not result.failed
    payloads = [r.json() for r in receiver.at(f"/hooks/{TOKEN}")]
    assert len(payloads) == 3, payloads
    successes = [p for p in payloads if p["type"] == "success"]
    summaries = [p for p in payloads if p["type"] == "info"]
    assert len(successes) == 2 and len(summaries) == 1
    messages = sorted(p["message"] for p in successes)
    assert messages[0].startswith("export 777 delivered: 1 file, 2 rows to ")
    assert messages[1].startswith("export 778 delivered: 1 file, 3 rows to ")
    assert all(m.endswith(str(destination)) for m in messages)
    assert summaries[0]["message"] == "2 exports delivered, 0 failed, 0 pending"
    # Mail: plain text and HTML parts, marked as automatic.
    assert len(smtp_env.messages) == 3
    for mail in smtp_env.messages:
        message = mail.message
        assert message["Auto-Submitted"] == "auto-generated"
        assert message.get_body(("plain",)) is not None
        assert message.get_body(("html",)) is not None
    summary_mail = next(m.message for m in smtp_env.messages if "0 pending" in m.message["Subject"])
    text = summary_mail.get_body(("plain",)).get_content()
    assert ("Delivered:" in text and "people-0.csv" in text) or "export 777" in text
    html = summary_mail.get_body(("html",)).get_content()
    assert "<li>" in html and "<script" not in html

    # A second run with nothing new sends nothing.
    run_once(load(path), RunOptions(archive=False))
    assert len(receiver.at(f"/hooks/{TOKEN}")) == 3 and len(smtp_env.messages) == 3


def test_html_bodies_escape_what_the_mail_or_error_said(tmp_path, smtp_env):
    monitor, ledger = monitor_with(tmp_path, smtp_alerts(smtp_env))
    failed_export(ledger, 777, "tok-1", error="<script>alert(1)</script> & more")
    process_alerts(monitor, ledger)
    html = smtp_env.messages[0].message.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html
