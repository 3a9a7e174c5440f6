"""The report as CSV: one row per export, times in ISO 8601 UTC, safe in a spreadsheet."""

from __future__ import annotations

import csv
import io
from typing import Any

from exportmon.actions.report import Report

CSV_COLUMNS = (
    "monitor",
    "export_id",
    "file",
    "outcome",
    "received_at",
    "delivered_at",
    "duration_seconds",
    "bytes",
    "files",
    "rows",
    "destinations",
    "error_step",
    "error",
)


def _cell(value: Any) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def render_csv(report: Report) -> str:
    """One row per export, times in ISO 8601 UTC."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for e in report.exports:
        duration = round(e.duration_seconds, 3) if e.duration_seconds is not None else None
        writer.writerow(
            [
                _cell(e.monitor),
                e.export_id,
                _cell(e.file_name),
                e.outcome,
                e.received_at,
                e.delivered_at or "",
                duration if duration is not None else "",
                e.bytes if e.bytes is not None else "",
                e.files,
                e.rows if e.rows is not None else "",
                _cell(";".join(e.destinations)),
                e.error_step or "",
                _cell(e.error),
            ]
        )
    return buffer.getvalue()
