"""What a notice says: one alert from the ledger rendered for every channel.

:func:`compose` turns a recorded alert (its kind and payload) into a
:class:`~exportmon.notify.Notice`: a title (the mail subject, the chat title),
the one line that matters (the chat message), a plain-text and an HTML mail
body built from the same parts, and the flat details the alert command gets.
Every value is redacted, and escaped in the HTML.
"""

from __future__ import annotations

import html
import socket
from dataclasses import dataclass, field
from typing import Any

from exportmon.config.schema import MonitorConfig
from exportmon.ledger import Alert
from exportmon.log import log_file_name
from exportmon.notify import Level, Notice
from exportmon.redact import redact
from exportmon.units import format_duration

#: The labels of the details an alert may carry, in the order they are shown.
LABELS = {
    "export_id": "Export id",
    "file": "File",
    "step": "Step",
    "error": "Error",
    "attempts": "Attempts",
    "received_at": "Received",
    "failed_at": "Failed at",
    "last_failed_at": "Last failed at",
    "retry_at": "Next retry",
    "state": "Progress",
    "mail_subject": "Mail subject",
    "mail_from": "Mail from",
    "expected_at": "Expected by",
    "last_arrival": "Last arrival",
    "expect_every": "Expected every",
    "grace_seconds": "Grace",
    "late_by_seconds": "Late by",
    "export_type": "Export type",
    "rows": "Rows",
    "min_rows": "Minimum rows",
    "max_rows": "Maximum rows",
    "delivered_at": "Delivered at",
}

LEVELS: dict[str, Level] = {
    "failure": "failure",
    "missing": "failure",
    "rows": "warning",
    "recovery": "success",
    "success": "success",
    "summary": "info",
}


@dataclass
class Body:
    """The parts of a mail body, rendered as text and as HTML."""

    headline: str
    rows: list[tuple[str, str]] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)
    footer: list[str] = field(default_factory=list)

    def text(self) -> str:
        lines = [self.headline, ""]
        lines += [f"{label:<15} {value}" for label, value in self.rows]
        for heading, items in self.sections:
            lines += ["", f"{heading}:"] + [f"  - {item}" for item in items]
        if self.footer:
            lines += ["", *self.footer]
        return "\n".join(lines) + "\n"

    def html(self, level: Level) -> str:
        colour = {"failure": "#b00020", "warning": "#8a5a00", "success": "#1b6e20"}.get(
            level, "#333"
        )
        e = html.escape
        parts = [
            '<!DOCTYPE html><html><body style="font-family:sans-serif;font-size:14px">',
            f'<p style="font-size:16px;color:{colour}"><strong>{e(self.headline)}</strong></p>',
        ]
        if self.rows:
            parts.append('<table style="border-collapse:collapse">')
            for label, value in self.rows:
                parts.append(
                    f'<tr><th style="text-align:left;padding:2px 12px 2px 0;'
                    f'vertical-align:top">{e(label)}</th><td>{e(value)}</td></tr>'
                )
            parts.append("</table>")
        for heading, items in self.sections:
            parts.append(f"<p><strong>{e(heading)}</strong></p><ul>")
            parts += [f"<li>{e(item)}</li>" for item in items]
            parts.append("</ul>")
        if self.footer:
            parts.append('<p style="color:#666">' + "<br>".join(e(x) for x in self.footer) + "</p>")
        parts.append("</body></html>")
        return "\n".join(parts) + "\n"


def compose(monitor: MonitorConfig, alert: Alert) -> Notice:
    """The notice ``alert`` makes, for every channel."""
    data = alert.data
    level = LEVELS.get(alert.kind, "info")
    body = _body(monitor, alert)
    title = redact(str(data.get("subject", "")))
    line = redact(" ".join(str(data.get("summary", "")).split()))
    return Notice(
        kind=alert.kind,
        monitor=monitor.name,
        title=title,
        line=line,
        text=redact(body.text()),
        html=redact(body.html(level)),
        level=level,
        details=alert_details(monitor, alert),
    )


def _body(monitor: MonitorConfig, alert: Alert) -> Body:
    data = alert.data
    details = data.get("details") or {}
    config = f" -c {monitor.path}" if monitor.path else ""
    body = Body(redact(str(data.get("summary", ""))))
    body.rows.append(("Monitor", monitor.name))
    if alert.kind == "summary":
        body.rows += [(k.capitalize(), str(v)) for k, v in (details.get("counts") or {}).items()]
        for heading in ("delivered", "failed", "pending"):
            items = details.get(heading) or []
            if items:
                body.sections.append((heading.capitalize(), [redact(str(i)) for i in items]))
        body.sections.append(("Look closer", [f"exportmon{config} report --since 1d"]))
        body.footer = [_signature()]
        return body
    for key, label in LABELS.items():
        value = details.get(key)
        if value is None or value == "" or (alert.kind == "success" and key == "rows"):
            continue
        body.rows.append((label, _value(key, value)))
    if alert.kind == "success":
        body.rows.append(("Rows", f"{details.get('rows') or 0:,}"))
        files = [
            f"{f.get('name')}: {f.get('rows') or 0:,} rows"
            + (f" ({f['export_type']})" if f.get("export_type") else "")
            for f in details.get("files") or []
        ]
        if files:
            body.sections.append(("Files", files))
        if details.get("destinations"):
            body.sections.append(("Delivered to", [str(d) for d in details["destinations"]]))
        counts = details.get("receiver_counts") or {}
        if counts:
            body.sections.append(
                (
                    "The receiving system reports",
                    [f"{where}: {_counts(value)}" for where, value in counts.items()],
                )
            )
        body.footer = [_signature()]
        return body
    states = details.get("destination_states") or {}
    if states:
        body.sections.append(
            ("Destinations", [redact(f"{where}: {state}") for where, state in states.items()])
        )
    if data.get("since"):
        body.rows.append(("Since", _human_time(data["since"])))
    if alert.kind == "recovery":
        body.sections.append(("Resolved", [str(i) for i in details.get("resolved", [])]))
    advice = _advice(alert.kind, details, config)
    advice.append(f"the monitor's log: {_log_file(monitor) or '(no state directory)'}")
    advice.append(f"every export's state: exportmon{config} status")
    body.sections.append(("What to do", advice))
    body.footer = [_footer(monitor, alert.kind), "", "-- ", _signature()]
    return body


def _counts(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return str(value)


def _signature() -> str:
    return f"exportmon on {socket.gethostname()}"


def _human_time(value: Any) -> str:
    from exportmon.actions.status import human_time

    return human_time(value, offset=True)


def _value(key: str, value: Any) -> str:
    if key.endswith("_at") or key == "last_arrival":
        return _human_time(value)
    if key.endswith("_seconds") and isinstance(value, (int, float)):
        return format_duration(value)
    return redact(str(value))


def _advice(kind: str, details: dict[str, Any], config: str) -> list[str]:
    if kind == "recovery":
        return ["nothing: this is the all-clear for the alerts above"]
    if kind == "missing":
        return [
            "check that the scheduled export still runs and that its mails reach the mailbox",
            f"look for unprocessed export mails: exportmon{config} fetch --dry-run",
        ]
    if kind == "rows":
        return [
            "check the export's filter and the delivered file before the receiving system"
            " imports it",
            "adjust min_rows/max_rows in the monitor config if the new size is expected",
        ]
    if details.get("step") == "mail":
        return ["the mail stays in the mailbox; forward or delete it after checking it"]
    return [
        "fix the cause above; the export is retried automatically"
        + (
            f" at {_human_time(details['retry_at'])}"
            if details.get("retry_at")
            else " by the next run once the monitor's config has changed"
        ),
        f"or retry now: exportmon{config} run --once --retry-failed",
    ]


def _footer(monitor: MonitorConfig, kind: str) -> str:
    if kind == "recovery":
        return "This is the last mail about these problems."
    repeat = monitor.alerts.repeat_after
    again = f"repeated every {format_duration(repeat)}" if repeat else "not repeated"
    recovery = " A notice follows when it is resolved." if monitor.alerts.recovery else ""
    return f"This alert is sent once per problem and {again} while it lasts.{recovery}"


def _log_file(monitor: MonitorConfig) -> str | None:
    if monitor.root is None:
        return None
    return str(monitor.dirs.log / log_file_name(monitor.name))


def alert_details(monitor: MonitorConfig, alert: Alert) -> dict[str, Any]:
    """The flat details handed to the alert command (JSON and ``EXPORTMON_*`` variables)."""
    data = alert.data
    details: dict[str, Any] = {
        "alert_id": alert.id,
        "kind": alert.kind,
        "monitor": monitor.name,
        "export_id": data.get("export_id"),
        "subject": data.get("subject"),
        "summary": data.get("summary"),
        "repeat": data.get("repeat", 0),
        "since": data.get("since"),
        "created_at": alert.created_at,
        "config": str(monitor.path) if monitor.path else None,
        "log_file": _log_file(monitor),
        "hostname": socket.gethostname(),
    }
    for key, value in (data.get("details") or {}).items():
        details.setdefault(key, value)
    return details
