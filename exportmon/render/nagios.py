"""The Nagios/Icinga plugin line: ``EXPORTMON <STATE> - <reason> | <perfdata>``.

Exit codes are the plugin convention: 0 OK, 1 WARNING, 2 CRITICAL (error), 3 UNKNOWN.
"""

from __future__ import annotations

from exportmon.actions.problems import STATE_CODES
from exportmon.actions.status import StatusReport

WORDS = {"ok": "OK", "warning": "WARNING", "error": "CRITICAL", "unknown": "UNKNOWN"}
#: Longest reason on the line (plugins are shown in one line of a web page).
REASON_LIMIT = 400


def nagios_line(report: StatusReport) -> tuple[str, int]:
    """The one-line plugin output and its exit code."""
    text = " ".join(report.reason.replace("|", "/").split())
    if len(text) > REASON_LIMIT:
        text = text[: REASON_LIMIT - 1] + "…"
    rows = [row for status in report.monitors for row in status.exports]
    perfdata = {
        "delivered": sum(row.delivered for row in rows),
        "failing": sum(row.failing for row in rows),
        "pending": sum(row.pending for row in rows),
        "files": sum(row.files_delivered for row in rows),
        "rows": sum(row.rows_delivered for row in rows),
    }
    perf = " ".join(f"{name}={value};;;0" for name, value in perfdata.items())
    return f"EXPORTMON {WORDS[report.state]} - {text} | {perf}", STATE_CODES[report.state]
