"""`exportmon report` end to end: period selection, every format, strict HTML, mailing."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser

import pytest
from monitoring import (
    backdate_export,
    delivered_export,
    failed_export,
    load,
    open_ledger,
    smtp_alerts,
    write_monitor,
)

from cli import run_cli
from exportmon.commands.report import parse_when, period
from exportmon.errors import UsageError

HOSTILE = '=cmd|" /C calc"!A0 <script>alert(1)</script>'


@pytest.fixture
def filled(tmp_path):
    """A monitor with exports over ten days, one failed with a hostile name and error."""
    path = write_monitor(tmp_path, "shop", ids=(777, 778))
    monitor = load(path)
    ledger = open_ledger(monitor)
    files = (("people.csv", "people", 100, 4000), ("sites.csv", "sites", 10, 500))
    for day in range(10):
        export = delivered_export(
            ledger, 777 if day % 2 else 778, f"tok-{day}", files=files, destination="/srv/in"
        )
        backdate_export(ledger, export, days=day, hours=1)
    bad = failed_export(ledger, 777, "bad", error=f"HTTP 500 {HOSTILE}")
    backdate_export(ledger, bad, days=1)
    ledger.add_export(key="waiting", kind="link", export_id=778, file_name=f"{HOSTILE}.zip")
    ledger.close()
    return path


def test_json_report_of_the_last_seven_days(filled):
    result = run_cli("-c", filled, "report", "--json")
    assert result.code == 0, result.output
    report = json.loads(result.stdout)
    summary = report["summary"]
    # Days 0..6 of ten daily exports, the failed one and the pending one.
    assert summary == {
        "exports": 9,
        "delivered": 7,
        "failed": 1,
        "pending": 1,
        "files": 14,
        "rows": 770,
        "bytes": 7 * 4500,
    }
    exports = report["exports"]
    delivered = [e for e in exports if e["outcome"] == "delivered"]
    assert all(e["destinations"] == ["/srv/in"] and e["files"] == 2 for e in delivered)
    assert all(e["rows"] == 110 and e["duration_seconds"] >= 0 for e in delivered)
    assert {f["name"] for f in delivered[0]["file_details"]} == {"people.csv", "sites.csv"}
    (failed,) = [e for e in exports if e["outcome"] == "failed"]
    assert failed["error_step"] == "download" and failed["error"].startswith("HTTP 500")
    assert report["destinations"] == [
        {
            "monitor": "shop",
            "destination": "/srv/in",
            "files": 14,
            "bytes": 7 * 4500,
            "failed": 0,
            "last_at": report["destinations"][0]["last_at"],
        }
    ]
    assert len(report["buckets"]) in (7, 8)  # a day per bar, both ends included
    assert sum(b["delivered"] for b in report["buckets"]) == 7


def test_period_options(filled):
    def count(*args):
        result = run_cli("-c", filled, "report", "--json", *args)
        assert result.code == 0, result.output
        return json.loads(result.stdout)["summary"]["exports"]

    assert count("--since", "30d") == 12
    assert count("--since", "2d") == 4  # days 0 and 1, the failed one and the pending one
    today = datetime.now().astimezone().date()
    assert (
        count("--from", (today - timedelta(days=40)).isoformat(), "--to", today.isoformat()) == 12
    )
    start = (today - timedelta(days=40)).isoformat()
    assert count("--from", start, "--to", (today - timedelta(days=30)).isoformat()) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "a week"), "--since: 'a week' is not a duration"),
        (("--from", "yesterday"), "'yesterday' is not a date or date-time"),
        (("--from", "2026-02-01", "--to", "2026-01-01"), "the period is empty"),
        (("--csv", "--html"), "choose one of"),
    ],
)
def test_bad_period_and_format_options_are_usage_errors(filled, args, message):
    result = run_cli("-c", filled, "report", *args)
    assert result.code == 2 and message in result.stderr


def test_parse_when_and_period():
    utc = timezone.utc
    assert parse_when("2026-11-01T08:00Z") == datetime(2026, 11, 1, 8, tzinfo=utc)
    assert parse_when("2026-11-01T08:00+01:00") == datetime(2026, 11, 1, 7, tzinfo=utc)
    day_end = parse_when("2026-11-01", end=True) - parse_when("2026-11-01")
    assert day_end in (timedelta(hours=23), timedelta(hours=24), timedelta(hours=25))
    now = datetime(2026, 11, 23, 12, tzinfo=utc)
    assert period("7d", None, None, now) == (now - timedelta(days=7), now)
    with pytest.raises(UsageError):
        period("0s", None, None, now)


def test_csv_is_one_row_per_export_and_safe_for_spreadsheets(filled):
    result = run_cli("-c", filled, "report", "--csv")
    assert result.code == 0
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 9
    assert rows[0].keys() >= {"export_id", "received_at", "rows", "destinations", "error"}
    (pending,) = [r for r in rows if r["outcome"] == "pending"]
    assert pending["file"].startswith("'=cmd|")
    (failed,) = [r for r in rows if r["outcome"] == "failed"]
    assert failed["error"].startswith("HTTP 500 =cmd")
    assert all(r["delivered_at"].endswith("Z") for r in rows if r["outcome"] == "delivered")


def test_markdown_escapes_table_separators(filled):
    result = run_cli("-c", filled, "report", "--markdown")
    assert result.code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# exportmon report ")
    assert "**9 exports: 7 delivered, 1 failed, 1 pending; 14 files, 770 rows, 31.5 kB**" in lines
    tables, current = [], []
    for line in [*lines, ""]:
        if line.startswith("|---"):
            continue
        if line.startswith("| "):
            current.append(line.replace("\\|", ""))
        elif current:
            tables.append(current)
            current = []
    # Exports (a header and nine), their files (a header and two per delivered export)
    # and the destinations.
    assert len(tables) == 3 and len(tables[0]) == 10 and len(tables[1]) == 15
    assert tables[1][0] == "| export | download | file | type | rows | size | delivered to |"
    for table in tables:  # an unescaped | in a value would add a cell
        assert {line.count(" | ") for line in table} == {table[0].count(" | ")}
    assert "=cmd\\|" in result.stdout


VOID = {"meta", "br", "hr", "img", "input", "link", "line", "rect"}


class StrictPage(HTMLParser):
    """Fails on unbalanced tags; collects tables, SVG shapes and anything loading resources."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.tables = []
        self.rects = 0
        self.scripts = 0
        self.external = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts += 1
        if tag == "table":
            self.tables.append([])
        if tag == "th":
            self.tables[-1].append("")
        if tag == "rect":
            self.rects += 1
        for name, value in attrs:
            if name in ("src", "href") or (value and "url(" in value):
                self.external.append((tag, name, value))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag == "rect":
            self.rects += 1

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "th":
            self.tables[-1][-1] += data
        self.text.append(data)


def test_html_is_a_valid_self_contained_page(filled, tmp_path):
    result = run_cli("-c", filled, "report", "--html")
    assert result.code == 0
    page = result.stdout
    assert page.startswith("<!DOCTYPE html>")
    parser = StrictPage()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert parser.scripts == 0 and parser.external == []
    assert [table[:3] for table in parser.tables] == [
        ["monitor", "export id", "file"],
        ["export", "download", "file"],
        ["monitor", "destination", "files"],
    ]
    assert parser.rects >= 8  # bars: seven delivered days, one failed, one pending
    text = "".join(parser.text)
    assert HOSTILE in text  # shown as text, not markup
    assert "9 exports: 7 delivered, 1 failed, 1 pending" in text
    assert "error: download: HTTP 500" in text
    (tmp_path / "report.html").write_text(page)


def test_table_output(filled):
    result = run_cli("-c", filled, "report")
    assert result.code == 0
    assert "9 exports: 7 delivered, 1 failed, 1 pending" in result.stdout
    assert "Destinations" in result.stdout


def test_mail_to_sends_text_and_html_through_the_alert_smtp_settings(tmp_path, smtp_server):
    path = write_monitor(tmp_path, "shop", extra=smtp_alerts(smtp_server))
    ledger = open_ledger(load(path))
    delivered_export(ledger, 777, "tok-1")
    ledger.close()
    env = {"SMTP_PASSWORD": smtp_server.password}
    result = run_cli("-c", path, "report", "--mail-to", "boss@example.com", env=env)
    assert result.code == 0, result.output
    assert result.stdout == "" and "Report mailed to boss@example.com" in result.stderr
    (mail,) = smtp_server.messages
    message = mail.message
    assert mail.rcpt_tos == ("boss@example.com",) and mail.tls
    assert message["Subject"].startswith("[exportmon] report ")
    assert "1 exports: 1 delivered" in message["Subject"]
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Exportmon-Alert"] == "shop"
    assert message.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "1 exports: 1 delivered" in parts["text/plain"]
    assert parts["text/html"].startswith("<!DOCTYPE html>")
    assert smtp_server.password.encode() not in mail.data
    assert smtp_server.password not in result.output


def test_mail_to_without_smtp_settings_is_a_usage_error(filled):
    result = run_cli("-c", filled, "report", "--mail-to", "boss@example.com")
    assert result.code == 2
    assert "no SMTP server to send the report through" in result.stderr


def test_mail_to_with_the_smtp_server_down_fails_with_one_line(tmp_path, smtp_server):
    path = write_monitor(tmp_path, "shop", extra=smtp_alerts(smtp_server))
    smtp_server.stop()
    env = {"SMTP_PASSWORD": smtp_server.password}
    result = run_cli("-c", path, "report", "--mail-to", "boss@example.com", env=env)
    assert result.code == 1
    assert "cannot reach SMTP server" in result.stderr and len(result.stderr.splitlines()) == 1


def test_secrets_never_show_in_reports(tmp_path):
    extra = (
        '[alerts]\nsmtp_url = "smtps://127.0.0.1:1"\nsmtp_user = "a"\n'
        'smtp_password_env = "SMTP_PASSWORD"\nto = ["ops@example.com"]\n'
    )
    path = write_monitor(tmp_path, "shop", extra=extra)
    ledger = open_ledger(load(path))
    failed_export(ledger, 777, "tok-1", error="auth with S3cret-Smtp-Pw failed")
    ledger.close()
    env = {"SMTP_PASSWORD": "S3cret-Smtp-Pw"}
    for fmt in ((), ("--json",), ("--csv",), ("--markdown",), ("--html",)):
        result = run_cli("-c", path, "report", *fmt, env=env)
        assert result.code == 0
        assert "S3cret-Smtp-Pw" not in result.output
        assert "***" in result.stdout
