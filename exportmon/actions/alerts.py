"""The alert engine: what to tell people, when, exactly once.

:func:`process_alerts` compares what is wrong now (:func:`~exportmon.actions.status.find_problems`:
failed exports and mails, failing steps, missing exports, odd row counts) with
the alerts already recorded in the ledger's ``alerts`` table:

* a problem without an alert gets one (``failure``, ``missing`` or ``rows``);
* a problem still there ``alerts.repeat_after`` after its last alert gets one
  more (never more often, so no alert storms);
* an alerted problem that is gone is marked resolved, and once nothing is wrong
  any more in its scope (one export id, or the monitor as a whole) a single
  ``recovery`` alert says so (``alerts.recovery``).

Then every ``pending`` alert is sent, oldest first, through the configured
channels (:mod:`exportmon.hooks.alerts`). An alert that cannot be sent stays
``pending`` and is retried on the next call, so an SMTP outage loses nothing;
a channel that already carried an alert is not used for it again. Without any
channel configured, alerts are recorded as ``skipped`` (they still show in
``status`` and the log).

Failures of a whole step (say the mailbox cannot be read) enter through
:meth:`Ledger.record_step_failure` and leave through
:meth:`Ledger.clear_step_failure`.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from exportmon.actions.status import (
    MONITOR_SCOPE,
    Problem,
    find_problems,
    human_time,
    mask_configured_secrets,
)
from exportmon.config.schema import MonitorConfig
from exportmon.errors import ExportmonError
from exportmon.hooks import alerts as channels
from exportmon.hooks import credentials
from exportmon.ledger import Alert, Ledger, from_text, to_text
from exportmon.log import get_logger, log_file_name
from exportmon.redact import redact
from exportmon.units import format_duration

log = get_logger(__name__)

SUBJECT_PREFIX = "[exportmon]"


@dataclass(frozen=True)
class AlertText:
    """An alert as people read it."""

    subject: str
    body: str


def configured_channels(monitor: MonitorConfig) -> list[str]:
    """The channels alerts go through: ``mail`` and/or ``command``."""
    found = []
    if monitor.alerts.smtp_url and monitor.alerts.to:
        found.append("mail")
    if monitor.alerts.command:
        found.append("command")
    return found


def process_alerts(
    monitor: MonitorConfig, ledger: Ledger, *, now: datetime | None = None
) -> list[Alert]:
    """Record the alerts the ledger calls for, then send every pending one.

    Call it after each ``run`` cycle and now and then while watching. Returns the
    alerts created by this call, as they stand after sending.
    """
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    stamp = to_text(moment)
    _know_secrets(monitor)
    problems = [p for p in find_problems(monitor, ledger, now=moment) if p.alert]
    state = "pending" if configured_channels(monitor) else "skipped"
    created: list[Alert] = []

    latest: dict[str, Alert] = {}
    for alert in ledger.unresolved_alerts():
        latest[alert.subject_key] = alert
    for problem in problems:
        previous = latest.get(problem.key)
        if previous is not None and not _repeat_due(monitor, previous, moment):
            continue
        repeat = (previous.data.get("repeat", 0) + 1) if previous is not None else 0
        payload = _problem_payload(monitor, problem, repeat, previous)
        alert = ledger.add_alert(
            problem.kind, problem.key, payload, scope=problem.scope, state=state, at=stamp
        )
        log.warning("alert: %s", payload["subject"])
        created.append(alert)

    current = {p.key for p in problems}
    gone = [
        alert
        for key, alert in latest.items()
        if key not in current and not _awaiting_outcome(ledger, alert)
    ]
    if gone:
        ledger.resolve_alerts([alert.subject_key for alert in gone], at=stamp)
        troubled_scopes = {p.scope for p in problems}
        for scope in dict.fromkeys(alert.scope or MONITOR_SCOPE for alert in gone):
            if scope in troubled_scopes or not monitor.alerts.recovery:
                continue
            mine = [a for a in gone if (a.scope or MONITOR_SCOPE) == scope]
            payload = _recovery_payload(monitor, scope, mine)
            alert = ledger.add_alert(
                "recovery",
                f"recovery:{scope}:{stamp}",
                payload,
                scope=scope,
                state=state,
                at=stamp,
            )
            log.info("alert: %s", payload["subject"])
            created.append(alert)

    send_pending(monitor, ledger)
    return [ledger.alert(alert.id) or alert for alert in created]


def _know_secrets(monitor: MonitorConfig) -> None:
    """Register the passwords before any alert text is stored or logged, so none shows."""
    mask_configured_secrets(monitor)
    if monitor.alerts.smtp_url and monitor.alerts.smtp_user:
        with contextlib.suppress(ExportmonError):  # reported when the mail is sent
            credentials.resolve(monitor.alerts.smtp_password_source())


def _awaiting_outcome(ledger: Ledger, alert: Alert) -> bool:
    """Whether a failed export's error was only cleared for a retry (``reset_export``):
    it is fixed when it is delivered, or a later export of its id is, not before."""
    if alert.kind != "failure" or not alert.subject_key.startswith("export:"):
        return False
    row = alert.subject_key.split(":", 1)[1]
    if not row.isdigit():
        return False
    export = ledger.export(int(row))
    if export is None or export.state == "delivered":
        return False
    return not ledger.superseded(export)


def _repeat_due(monitor: MonitorConfig, previous: Alert, moment: datetime) -> bool:
    if monitor.alerts.repeat_after is None or previous.state == "pending":
        return False
    age = moment - from_text(previous.created_at)
    return age >= timedelta(seconds=monitor.alerts.repeat_after)


def send_pending(monitor: MonitorConfig, ledger: Ledger) -> int:
    """Send pending alerts oldest first; stop at the first that fails. Return how many went."""
    sent = 0
    for alert in ledger.alerts(state="pending"):
        try:
            send_alert(monitor, alert, ledger=ledger)
        except ExportmonError as error:
            message = redact(error.one_line())
            final = not error.retryable
            ledger.set_alert_state(alert.id, "failed" if final else "pending", message)
            if ledger.notice_once(f"alert-not-sent:{alert.id}") or final:
                log.warning(
                    "alert %r not sent%s: %s",
                    alert.data.get("subject"),
                    "" if final else " (kept, retried on the next run)",
                    message,
                )
            if not final:
                # Keep the order: a recovery must not overtake its failure.
                break
            continue
        ledger.set_alert_state(alert.id, "sent")
        sent += 1
    return sent


def send_alert(monitor: MonitorConfig, alert: Alert, *, ledger: Ledger | None = None) -> None:
    """Send one recorded alert through every configured channel that has not yet carried it.

    With ``ledger``, each channel that succeeds is remembered there at once, so a
    retry after a failure of another channel does not repeat it.
    Raises an :class:`ExportmonError` (retryable unless it never can work).
    """
    data = alert.data
    details = alert_details(monitor, alert)
    done = alert.sent_via
    if "mail" in configured_channels(monitor) and "mail" not in done:
        text = render_alert(monitor, alert)
        message = channels.new_message(
            monitor.alerts, monitor=monitor.name, subject=text.subject, text=text.body
        )
        channels.send_mail(monitor.alerts, message)
        log.info("alert mailed to %s: %s", ", ".join(monitor.alerts.to), data.get("subject"))
        if ledger is not None:
            ledger.add_alert_channel(alert.id, "mail")
    if monitor.alerts.command and "command" not in done:
        channels.run_command(monitor.alerts.command, details, monitor)
        log.info("alert command ran for: %s", data.get("subject"))
        if ledger is not None:
            ledger.add_alert_channel(alert.id, "command")


# --- what an alert says -----------------------------------------------------------------


def _subject(monitor: MonitorConfig, summary: str, suffix: str = "") -> str:
    text = " ".join(redact(summary).split())
    if len(text) > 150:
        text = text[:149] + "…"
    return f"{SUBJECT_PREFIX} {monitor.name}: {text}{suffix}"


def _problem_payload(
    monitor: MonitorConfig, problem: Problem, repeat: int, previous: Alert | None
) -> dict[str, Any]:
    since = (previous.data.get("since") or previous.created_at) if previous else None
    suffix = (
        f" (still unresolved since {human_time(since, offset=True)})" if repeat and since else ""
    )
    return {
        "kind": problem.kind,
        "monitor": monitor.name,
        "export_id": problem.export_id,
        "scope": problem.scope,
        "subject": _subject(monitor, problem.summary, suffix),
        "summary": redact(problem.summary),
        "repeat": repeat,
        "since": since,
        "details": {k: redact(v) if isinstance(v, str) else v for k, v in problem.details.items()},
    }


def _recovery_payload(monitor: MonitorConfig, scope: str, gone: list[Alert]) -> dict[str, Any]:
    what = "the monitor" if scope == MONITOR_SCOPE else f"export {scope.split(':', 1)[1]}"
    export_id = None if scope == MONITOR_SCOPE else _int(scope.split(":", 1)[1])
    return {
        "kind": "recovery",
        "monitor": monitor.name,
        "export_id": export_id,
        "scope": scope,
        "subject": _subject(monitor, f"{what} recovered"),
        "summary": f"{what} recovered",
        "repeat": 0,
        "since": min((a.data.get("since") or a.created_at for a in gone), default=None),
        "details": {"resolved": [a.data.get("summary") for a in gone]},
    }


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


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


def _log_file(monitor: MonitorConfig) -> str | None:
    if monitor.root is None:
        return None
    return str(monitor.dirs.log / log_file_name(monitor.name))


_LABELS = {
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
}


def _value(key: str, value: Any) -> str:
    if key.endswith("_at") or key == "last_arrival":
        return human_time(value, offset=True)
    if key.endswith("_seconds") and isinstance(value, (int, float)):
        return format_duration(value)
    return str(value)


def render_alert(monitor: MonitorConfig, alert: Alert) -> AlertText:
    """The subject and plain-text body of an alert mail."""
    data = alert.data
    details = data.get("details") or {}
    config = f" -c {monitor.path}" if monitor.path else ""
    lines = [redact(data.get("summary", "")), ""]
    lines.append(f"{'Monitor':<15} {monitor.name}")
    for key, label in _LABELS.items():
        value = details.get(key)
        if value is None or value == "":
            continue
        lines.append(f"{label:<15} {_value(key, value)}")
    if data.get("since"):
        lines.append(f"{'Since':<15} {human_time(data['since'], offset=True)}")
    if alert.kind == "recovery":
        lines += ["", "Resolved:"] + [f"  - {item}" for item in details.get("resolved", [])]
    lines += ["", "What to do:"]
    lines += _advice(alert.kind, details, config)
    lines.append(f"  - the monitor's log: {_log_file(monitor) or '(no state directory)'}")
    lines.append(f"  - every export's state: exportmon{config} status")
    lines += ["", _footer(monitor, alert.kind)]
    lines += ["", "-- ", f"exportmon on {socket.gethostname()}"]
    return AlertText(data.get("subject", ""), redact("\n".join(lines) + "\n"))


def _advice(kind: str, details: dict[str, Any], config: str) -> list[str]:
    if kind == "recovery":
        return ["  - nothing: this is the all-clear for the alerts above"]
    if kind == "missing":
        return [
            "  - check that the scheduled export still runs and that its mails reach the mailbox",
            f"  - look for unprocessed export mails: exportmon{config} fetch --dry-run",
        ]
    if kind == "rows":
        return [
            "  - check the export's filter and the delivered file before the receiving system"
            " imports it",
            "  - adjust min_rows/max_rows in the monitor config if the new size is expected",
        ]
    if details.get("step") == "mail":
        return ["  - the mail stays in the mailbox; forward or delete it after checking it"]
    return [
        "  - fix the cause above; the export is retried automatically"
        + (
            f" at {human_time(details['retry_at'], offset=True)}"
            if details.get("retry_at")
            else " when it can be"
        ),
        f"  - or retry now: exportmon{config} run --once --retry-failed",
    ]


def _footer(monitor: MonitorConfig, kind: str) -> str:
    if kind == "recovery":
        return "This is the last mail about these problems."
    repeat = monitor.alerts.repeat_after
    again = f"repeated every {format_duration(repeat)}" if repeat else "not repeated"
    recovery = " A notice follows when it is resolved." if monitor.alerts.recovery else ""
    return f"This alert is sent once per problem and {again} while it lasts.{recovery}"
