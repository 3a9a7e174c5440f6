"""Heartbeats to a local HTTP server speaking the Healthchecks, Uptime Kuma and Cronitor
ping protocols: start, success and failure of `run --once`, one ping per watch cycle, and
a service that cannot be reached is a warning, never a failed run."""

from __future__ import annotations

import threading
from pathlib import Path

from fetchkit import export_mail
from monitoring import load, write_monitor

from exportmon.actions.run import RunOptions, run_once, watch_monitor
from exportmon.notify.heartbeat import MAX_BODY, ping_url
from exportmon.signals import Shutdown
from servers import free_port

CHECK = "/ping/6a0f1c2e-8d7b-4c1a-9e2f-0b1c2d3e4f5a"


def good_mail(tmp_path: Path, number: int = 0) -> None:
    (tmp_path / "mails").mkdir(exist_ok=True)
    mail = export_mail(
        export_id=777,
        token=f"tok-{number}",
        attachments=[(f"people-{number}.csv", b"id,name\n1,a\n")],
    )
    (tmp_path / "mails" / f"{number}.eml").write_bytes(mail)


def bad_mail(tmp_path: Path) -> None:
    (tmp_path / "mails").mkdir(exist_ok=True)
    mail = export_mail(export_id=777, token="tok-bad", attachments=[("broken.zip", b"not a zip")])
    (tmp_path / "mails" / "bad.eml").write_bytes(mail)


def monitor_path(tmp_path: Path, heartbeat: str) -> Path:
    extra = f'[deliver]\nto = "{tmp_path / "out"}"\n[heartbeat]\n{heartbeat}'
    return write_monitor(tmp_path, extra=extra)


def test_run_once_pings_start_then_success_with_the_last_log_lines(tmp_path, receiver, caplog):
    caplog.set_level("INFO", logger="exportmon")
    good_mail(tmp_path)
    path = monitor_path(tmp_path, f'url = "{receiver.url(CHECK)}"\n')
    result = run_once(load(path), RunOptions(archive=False))
    assert not result.failed
    assert [(r.method, r.path) for r in receiver.requests] == [
        ("POST", CHECK + "/start"),
        ("POST", CHECK),
    ]
    body = receiver.requests[1].text
    assert "1 export delivered" in body and len(body) <= MAX_BODY
    assert "6a0f1c2e" not in body


def test_a_failed_run_pings_fail_with_the_error(tmp_path, receiver, caplog):
    caplog.set_level("INFO", logger="exportmon")
    bad_mail(tmp_path)
    path = monitor_path(tmp_path, f'url = "{receiver.url(CHECK)}"\nkind = "healthchecks"\n')
    result = run_once(load(path), RunOptions(archive=False))
    assert result.failed
    assert [r.path for r in receiver.requests] == [CHECK + "/start", CHECK + "/fail"]
    body = receiver.requests[1].text
    assert "ERROR" in body and "broken.zip" in body, body


def test_uptime_kuma_push_gets_status_and_msg_and_no_start(tmp_path, receiver):
    bad_mail(tmp_path)
    push = receiver.url("/api/push/Kx1yZ2abc") + "?status=up&msg=OK&ping="
    path = monitor_path(tmp_path, f'url = "{push}"\nkind = "uptime-kuma"\n')
    run_once(load(path), RunOptions(archive=False))
    (request,) = receiver.requests
    assert request.method == "GET" and request.path == "/api/push/Kx1yZ2abc"
    assert request.query["status"] == "down" and request.query["msg"]
    assert request.query["ping"] == ""


def test_cronitor_gets_run_then_complete(tmp_path, receiver):
    good_mail(tmp_path)
    telemetry = receiver.url("/p/apikey123/exports-777")
    path = monitor_path(tmp_path, f'url = "{telemetry}"\nkind = "cronitor"\n')
    run_once(load(path), RunOptions(archive=False))
    assert [r.query["state"] for r in receiver.requests] == ["run", "complete"]


def test_an_unreachable_heartbeat_is_one_warning_and_the_run_succeeds(tmp_path, caplog):
    good_mail(tmp_path)
    url = f"http://127.0.0.1:{free_port()}{CHECK}"
    path = monitor_path(tmp_path, f'url = "{url}"\n')
    result = run_once(load(path), RunOptions(archive=False))
    assert not result.failed and len(result.delivered) == 1
    warnings = [r for r in caplog.records if "heartbeat" in r.getMessage()]
    assert [r.levelname for r in warnings] == ["WARNING"]
    assert "6a0f1c2e" not in caplog.text


def test_a_url_from_the_environment_is_never_shown(tmp_path, receiver, monkeypatch, caplog):
    receiver.fail(CHECK, 500)
    monkeypatch.setenv("HC_URL", receiver.url(CHECK))
    good_mail(tmp_path)
    path = monitor_path(tmp_path, 'url_env = "HC_URL"\n')
    assert not run_once(load(path), RunOptions(archive=False)).failed
    assert "HTTP 500" in caplog.text and "6a0f1c2e" not in caplog.text


def test_the_watcher_pings_once_per_cycle(tmp_path, receiver):
    good_mail(tmp_path)
    path = monitor_path(tmp_path, f'url = "{receiver.url(CHECK)}"\n')
    monitor = load(path)
    monitor.poll_interval = 1.0
    stop = Shutdown()
    thread = threading.Thread(target=watch_monitor, args=(monitor, RunOptions(), stop))
    thread.start()
    try:
        receiver.wait_for(2, CHECK)
    finally:
        stop.request()
        thread.join(30)
    paths = {r.path for r in receiver.requests}
    assert paths == {CHECK}, "the watcher sends no /start"


def test_ping_urls_for_each_kind():
    base = "https://hc-ping.com/abc/"
    assert ping_url("healthchecks", base, "start") == "https://hc-ping.com/abc/start"
    assert ping_url("healthchecks", base, "failure") == "https://hc-ping.com/abc/fail"
    assert ping_url("healthchecks", base, "success") == "https://hc-ping.com/abc"
    kuma = ping_url("uptime-kuma", "https://k/api/push/t?status=up&msg=OK&ping=", "failure", "x y")
    assert kuma == "https://k/api/push/t?ping=&status=down&msg=x+y"
    assert ping_url("cronitor", "https://cronitor.link/p/k/m", "start") == (
        "https://cronitor.link/p/k/m?state=run"
    )
