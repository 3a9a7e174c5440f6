"""`exportmon serve`: the endpoints over real HTTP, the access rules, and the page in
headless Chromium (renders, shows a failing and a missing export, updates without a
reload after a new delivery)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from monitoring import (
    ago,
    backdate_export,
    delivered_export,
    failed_export,
    load,
    open_ledger,
    start_run,
    write_monitor,
)
from prometheus_client.parser import text_string_to_metric_families

from exportmon.errors import UsageError
from exportmon.web.data import Source
from exportmon.web.server import Access, StatusApp, StatusServer

EXPECT_778 = '[exports.778]\nexpect_every = "1d"\ngrace = "1h"\n'
TOKEN = "0123456789abcdef-page-token"


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def troubled_monitor(tmp_path: Path):
    """A monitor with a failing export (777) and a missing one (778, last seen 3 days ago)."""
    monitor = load(write_monitor(tmp_path, ids=(777, 778), extra=EXPECT_778))
    ledger = open_ledger(monitor)
    failed_export(ledger, 777, "tok-1", error="HTTP 404 <b>gone</b>")
    old = delivered_export(ledger, 778, "tok-old")
    backdate_export(ledger, old, days=3)
    start_run(ledger, ago(days=3))
    return monitor, ledger


def serve(tmp_path: Path, *configs: Path, access: Access | None = None, listen="127.0.0.1:0"):
    source = Source(list(configs))
    return StatusServer(StatusApp(source, access or Access(), refresh=1.0), listen).start()


def test_endpoints_answer_status_report_metrics_and_health(tmp_path):
    monitor, _ = troubled_monitor(tmp_path / "a")
    good = load(write_monitor(tmp_path / "b", name="quiet"))
    broken = tmp_path / "c" / "typo.toml"
    broken.parent.mkdir()
    broken.write_text('ids = [1]\n[source]\nkind = "dir"\npath = "/nope"\nbogus_key = 1\n')
    server = serve(tmp_path, monitor.path, good.path, broken)
    try:
        status, headers, body = get(server.url + "healthz")
        assert status == 503 and body == b"error\n"
        status, headers, body = get(server.url + "api/status")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        data = json.loads(body)
        by_name = {m["monitor"]: m for m in data["monitors"]}
        assert data["state"] == "error"
        assert by_name["shop"]["state"] == "error"
        assert by_name["typo"]["state"] == "error" and "bogus_key" in by_name["typo"]["reason"]
        status, _, body = get(server.url + "api/report?since=7d")
        report = json.loads(body)
        assert status == 200 and report["summary"]["failed"] == 1
        assert get(server.url + "api/report?since=soon")[0] == 400
        status, headers, body = get(server.url + "metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        states = {s.labels["monitor"]: s.value for s in families["exportmon_monitor_state"].samples}
        assert states["shop"] == 2 and states["typo"] == 2
        status, headers, body = get(server.url)
        assert status == 200 and b'id="live"' in body
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        request = urllib.request.Request(server.url, method="POST", data=b"x")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 405
        assert get(server.url + "nothing-here")[0] == 404
    finally:
        server.stop()


def test_healthz_is_200_when_every_monitor_is_ok(tmp_path):
    monitor = load(write_monitor(tmp_path))
    ledger = open_ledger(monitor)
    delivered_export(ledger, 777, "tok-1")
    start_run(ledger, ago(minutes=1))
    server = serve(tmp_path, monitor.path)
    try:
        assert get(server.url + "healthz")[:3:2] == (200, b"ok\n")
    finally:
        server.stop()


def test_another_address_needs_a_token_or_basic_auth(tmp_path):
    monitor = load(write_monitor(tmp_path))
    with pytest.raises(UsageError, match="not a loopback address"):
        serve(tmp_path, monitor.path, listen="0.0.0.0:0")
    server = serve(tmp_path, monitor.path, access=Access(token=TOKEN), listen="0.0.0.0:0")
    try:
        base = server.url.replace("0.0.0.0", "127.0.0.1")
        assert get(base + "api/status")[0] == 401
        assert get(base + "api/status?token=wrong-token-wrong")[0] == 401
        assert get(base + f"api/status?token={TOKEN}")[0] == 200
        assert get(base + "metrics", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        assert get(base + "healthz")[0] in (200, 503)  # probes need no token
    finally:
        server.stop()
    access = Access(user="ops", password="s3cret-basic-pass")
    server = serve(tmp_path, monitor.path, access=access, listen="0.0.0.0:0")
    try:
        base = server.url.replace("0.0.0.0", "127.0.0.1")
        status, headers, _ = get(base)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
        good = base64.b64encode(b"ops:s3cret-basic-pass").decode()
        bad = base64.b64encode(b"ops:nope").decode()
        assert get(base, {"Authorization": f"Basic {good}"})[0] == 200
        assert get(base, {"Authorization": f"Basic {bad}"})[0] == 401
    finally:
        server.stop()


def test_no_secret_is_shown_and_text_is_escaped(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAP_PW", "imap-very-secret-pw")
    extra = (
        '[alerts]\nnotify = ["json://127.0.0.1:9/hook/tok-abcdef123456"]\n'
        '[heartbeat]\nurl = "https://hc-ping.com/uuid-secret-0123456789"\n'
    )
    monitor = load(write_monitor(tmp_path, extra=extra))
    ledger = open_ledger(monitor)
    failed_export(ledger, 777, "tok-1", error="<script>x()</script> imap-very-secret-pw")
    from exportmon import redact

    redact.register("imap-very-secret-pw")
    server = serve(tmp_path, monitor.path)
    try:
        everything = b"".join(
            get(server.url + path)[2]
            for path in ("", "live", "api/status", "api/report", "metrics")
        ).decode()
        for secret in ("imap-very-secret-pw", "tok-abcdef123456", "uuid-secret-0123456789"):
            assert secret not in everything
        page = get(server.url + "live")[2].decode()
        assert "<script>" not in page and "&lt;script&gt;x()" in page
    finally:
        server.stop()


def test_the_page_in_chromium_shows_failures_and_updates_without_a_reload(tmp_path, browser):
    monitor, ledger = troubled_monitor(tmp_path)
    server = serve(tmp_path, monitor.path)
    try:
        browser.goto(server.url)
        browser.wait_for("document.querySelector('#overall[data-state=\"error\"]')")
        failing = browser.evaluate(
            "document.querySelector('#exports tr[data-outcome=\"failed\"]').innerText"
        )
        assert "777" in failing and "HTTP 404 <b>gone</b>" in failing
        missing = browser.evaluate(
            'document.querySelector(\'article[data-monitor="shop"] tr[data-export-id="778"]\')'
            ".innerText"
        )
        assert "did not arrive" in missing or "missing" in missing.lower()
        assert browser.evaluate("document.querySelectorAll('b').length") == 0  # escaped
        assert browser.evaluate("getComputedStyle(document.getElementById('offline')).display") == (
            "none"
        )
        # Mark this page load; a reload would lose the mark.
        browser.evaluate("window.exportmonMark = 42")
        delivered_export(ledger, 779, "tok-new", files=(("new.csv", "new", 5, 100),))
        new_row = '#exports tr[data-export-id="779"][data-outcome="delivered"]'
        browser.wait_for(f"document.querySelector('{new_row}')")
        assert browser.evaluate("window.exportmonMark") == 42
        # Readable on a phone: nothing wider than the screen.
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            width=390,
            height=844,
            deviceScaleFactor=2,
            mobile=True,
        )
        time.sleep(0.5)
        width = browser.evaluate("document.documentElement.scrollWidth")
        assert width <= 400, width
    finally:
        server.stop()


def test_serve_command_starts_and_prints_where(tmp_path):
    monitor = load(write_monitor(tmp_path))
    env = {**os.environ, "COLUMNS": "80"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "exportmon",
            "-c",
            str(monitor.path),
            "serve",
            "--listen",
            "127.0.0.1:0",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline().decode()
        assert line.startswith("Status page: http://127.0.0.1:"), line
        url = line.split()[2]
        assert get(url + "api/status")[0] == 200
    finally:
        process.terminate()
        assert process.wait(30) == 0
