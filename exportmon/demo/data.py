"""The demo's exports and mails: small, realistic, and generated on the spot.

Two scheduled exports of an imaginary service desk: export 777, a weekly zip of
three CSV files (organizations, sites, people — with the commas, quotes, empty
values, accents and line breaks inside values that real exports have), and
export 778, a daily CSV of requests. Their mails look like ITRP's; a third export
mail links to a file that does not exist, and a fourth mail is an ordinary
newsletter that must be left alone.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

STAMP = "20261123-060000"

ORGANIZATIONS = [
    ["id", "name", "parent", "manager", "remarks"],
    ["1", "Widget Data Center", "", "Howard Tanner", ""],
    ["2", "Widget International, Corp.", "1", "Zoë Müller", 'Known as "WIC" internally'],
    ["3", "Widget Logistics", "1", "", "Runs the warehouses.\nMoves to Rotterdam in 2027."],
]
SITES = [
    ["id", "name", "address", "city", "country", "time_zone"],
    ["10", "Headquarters", "4465 San Felipe Street, Suite 1508", "Houston", "US", "Central"],
    ["11", "Amsterdam office", "Keizersgracht 1", "Amsterdam", "NL", "Amsterdam"],
    ["12", "Warehouse", "", "Rotterdam", "NL", "Amsterdam"],
]
PEOPLE = [
    ["id", "name", "organization", "site", "email", "job_title"],
    ["100", "Howard Tanner", "1", "10", "howard.tanner@widget.example", "Service Desk Lead"],
    ["101", "Zoë Müller", "2", "11", "zoe.muller@widget.example", "Manager, EMEA"],
    ["102", "Ann O'Neill", "3", "12", "", "Logistics"],
    ["103", "Ravi Shankar", "2", "11", "ravi.shankar@widget.example", 'Engineer "on call"'],
]
REQUESTS = [
    ["id", "subject", "status", "requested_by", "created_at"],
    ["5001", "Laptop does not start", "completed", "101", "2026-11-22T09:14:00Z"],
    ["5002", "Access to the finance share, please", "assigned", "103", "2026-11-22T11:02:00Z"],
    ["5003", "Printer on 3rd floor:\nout of toner", "in_progress", "100", "2026-11-22T15:40:00Z"],
]


def csv_bytes(rows: list[list[str]]) -> bytes:
    """Rows as an export CSV (comma separated, minimal quoting, CRLF line endings)."""
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def weekly_zip() -> bytes:
    """Export 777: a zip of the organizations, sites and people files."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for kind, rows in (("organizations", ORGANIZATIONS), ("sites", SITES), ("people", PEOPLE)):
            archive.writestr(f"777-{STAMP}-{kind}.csv", csv_bytes(rows))
    return buffer.getvalue()


@dataclass(frozen=True)
class DemoFile:
    """A file the demo's web server offers, and the mail that links to it."""

    path: str
    content: bytes | None
    export_id: int
    token: str
    subject: str


def demo_files() -> list[DemoFile]:
    """The exports the demo mails link to; the last one is missing on purpose."""
    return [
        DemoFile(
            f"/exports/777/{STAMP}-export.zip",
            weekly_zip(),
            777,
            "3b1f0c9e7d2a4f60a8e5c1d2b3a4f5e6",
            "Export finished - Weekly master data",
        ),
        DemoFile(
            f"/exports/778/778-{STAMP}-requests.csv",
            csv_bytes(REQUESTS),
            778,
            "9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f",
            "Export finished - Daily requests",
        ),
        DemoFile(
            "/exports/777/20261116-060000-export.zip",
            None,
            777,
            "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
            "Export finished - Weekly master data (last week)",
        ),
    ]


def export_mail(file: DemoFile, base_url: str) -> bytes:
    """An ITRP-style 'export finished' mail linking to ``file`` on ``base_url``."""
    message = EmailMessage()
    message["From"] = "ITRP <noreply@itrp.example>"
    message["To"] = "exports@widget.example"
    message["Subject"] = file.subject
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain="itrp.example")
    message["X-ITRP-ExportID"] = str(file.export_id)
    message["X-ITRP-Export"] = file.token
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(f"The export is ready for download: {base_url}{file.path}\n")
    return message.as_bytes()


def newsletter_mail() -> bytes:
    """An ordinary mail in the same mailbox, which exportmon must not touch."""
    message = EmailMessage()
    message["From"] = "Widget News <news@widget.example>"
    message["To"] = "exports@widget.example"
    message["Subject"] = "This week at Widget"
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    message["Message-ID"] = make_msgid(domain="widget.example")
    message.set_content("The canteen serves pancakes on Friday: https://intranet.widget.example/\n")
    return message.as_bytes()
