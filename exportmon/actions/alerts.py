"""The alert engine: what to tell people, when, exactly once, through every channel.

:func:`process_alerts` compares what is wrong now (:func:`~exportmon.actions.status.find_problems`:
failed exports and mails, failing steps, missing exports, odd row counts) with
the alerts already recorded in the ledger's ``alerts`` table:

* a problem without an alert gets one (``failure``, ``missing`` or ``rows``);
* a problem still there ``alerts.repeat_after`` after its last alert gets one
  more (never more often, so no alert storms);
* an alerted problem that is gone is marked resolved, and once nothing is wrong
  any more in its scope (one export id, or the monitor as a whole) a single
  ``recovery`` alert says so (``alerts.recovery``);
* with ``on`` asking for them, every export a cycle delivered gets a
  ``success`` notice and a cycle that delivered or failed something a
  ``summary``.

Kinds ``[alerts] on`` does not ask for are recorded as ``skipped`` (they still
show in ``status`` and the log, and still lead to recoveries).

Then every channel (:mod:`exportmon.notify`) sends its own queue: the pending
alerts it has not carried yet, oldest first, each channel on its own thread. A
channel that fails keeps its alerts queued and is retried on the next call,
without holding back any other channel; within one channel, order is kept (a
recovery never overtakes its failure). An alert is ``sent`` once every channel
carried it. Without any channel configured, alerts are recorded as ``skipped``.

Failures of a whole step (say the mailbox cannot be read) enter through
:meth:`Ledger.record_step_failure` and leave through
:meth:`Ledger.clear_step_failure`.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from exportmon.actions.problems import MONITOR_SCOPE, Problem, export_scope, find_problems
from exportmon.actions.status import mask_configured_secrets
from exportmon.config.schema import MonitorConfig
from exportmon.errors import ExportmonError
from exportmon.hooks import credentials
from exportmon.ledger import Alert, Export, Ledger, from_text, to_text
from exportmon.log import get_logger
from exportmon.notify import Channel, Notice, configured_channels, wanted
from exportmon.notify.message import compose
from exportmon.redact import redact
from exportmon.units import human_time

log = get_logger(__name__)

SUBJECT_PREFIX = "[exportmon]"


def process_alerts(
    monitor: MonitorConfig,
    ledger: Ledger,
    *,
    now: datetime | None = None,
    delivered: Sequence[Export] = (),
    failures: Sequence[str] = (),
) -> list[Alert]:
    """Record the alerts the ledger calls for, then send every pending one.

    Call it after each ``run`` cycle (with the exports it ``delivered`` and its
    ``failures``, for success and summary notices) and now and then while
    watching. Returns the alerts created by this call, as they stand after sending.
    """
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    stamp = to_text(moment)
    _know_secrets(monitor)
    channels = configured_channels(monitor)
    problems = [p for p in find_problems(monitor, ledger, now=moment) if p.alert]
    created: list[Alert] = []

    def state_for(kind: str) -> str:
        return "pending" if channels and wanted(monitor, kind) else "skipped"

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
            problem.kind,
            problem.key,
            payload,
            scope=problem.scope,
            state=state_for(problem.kind),
            at=stamp,
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
            if not wanted(monitor, "recovery"):
                continue
            mine = [a for a in gone if (a.scope or MONITOR_SCOPE) == scope]
            payload = _recovery_payload(monitor, scope, mine)
            alert = ledger.add_alert(
                "recovery",
                f"recovery:{scope}:{stamp}",
                payload,
                scope=scope,
                state=state_for("recovery"),
                at=stamp,
            )
            log.info("alert: %s", payload["subject"])
            created.append(alert)

    if wanted(monitor, "success"):
        for export in delivered:
            key = f"success:{export.id}"
            if ledger.alerts(subject_key=key):
                continue
            payload = _success_payload(monitor, ledger, export)
            created.append(
                _add_notice(ledger, "success", key, payload, state_for("success"), stamp)
            )
    if wanted(monitor, "summary") and (delivered or failures):
        payload = _summary_payload(monitor, ledger, delivered, failures)
        created.append(
            _add_notice(ledger, "summary", f"summary:{stamp}", payload, state_for("summary"), stamp)
        )

    send_pending(monitor, ledger, channels)
    return [ledger.alert(alert.id) or alert for alert in created]


def _add_notice(
    ledger: Ledger, kind: str, key: str, payload: dict[str, Any], state: str, stamp: str
) -> Alert:
    """Record a notice that concerns no problem: resolved from the start."""
    alert = ledger.add_alert(kind, key, payload, scope=payload.get("scope"), state=state, at=stamp)
    ledger.resolve_alerts([key], at=stamp)
    log.info("notice: %s", payload["subject"])
    return alert


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


# --- sending ------------------------------------------------------------------------------


def send_pending(
    monitor: MonitorConfig, ledger: Ledger, channels: Sequence[Channel] | None = None
) -> int:
    """Send every channel's queue, the channels side by side; return how many sends worked.

    Each channel takes its pending alerts oldest first and stops at the first
    that fails in a way that may work later (the rest wait, in order, for the
    next call); an alert that can never go through a channel is given up for
    that channel only. Then each alert's state is settled from its channels.
    """
    if channels is None:
        channels = configured_channels(monitor)
    pending = ledger.alerts(state="pending")
    if not pending:
        return 0
    if not channels:
        for alert in pending:
            ledger.set_alert_state(alert.id, "skipped")
        return 0
    notices: dict[int, Notice] = {}
    notices_lock = threading.Lock()

    def notice_of(alert: Alert) -> Notice:
        with notices_lock:
            if alert.id not in notices:
                notices[alert.id] = compose(monitor, alert)
            return notices[alert.id]

    counts: dict[str, int] = {}
    threads = []
    for channel in channels:
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run,
            args=(_send_queue, monitor, ledger, channel, notice_of, counts),
            name=f"notify-{monitor.name}-{channel.name}",
            daemon=True,
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    names = [channel.name for channel in channels]
    for alert in pending:
        ledger.settle_alert(alert.id, names)
    return sum(counts.values())


def _send_queue(
    monitor: MonitorConfig,
    ledger: Ledger,
    channel: Channel,
    notice_of: Any,
    counts: dict[str, int],
) -> None:
    sent = 0
    try:
        for alert in ledger.channel_queue(channel.name):
            try:
                notice = notice_of(alert)
                channel.send(notice)
            except ExportmonError as error:
                message = redact(error.one_line())
                final = not error.retryable
                ledger.record_channel_attempt(
                    alert.id, channel.name, "failed" if final else "pending", message
                )
                if ledger.notice_once(f"alert-not-sent:{alert.id}:{channel.name}") or final:
                    log.warning(
                        "%s: %r not sent%s: %s",
                        channel.label,
                        alert.data.get("subject"),
                        "" if final else " (kept, retried on the next run)",
                        message,
                    )
                if not final:
                    # Keep the order: a recovery must not overtake its failure.
                    break
                continue
            ledger.record_channel_attempt(alert.id, channel.name, "sent")
            log.info("%s: sent %s", channel.label, alert.data.get("subject"))
            sent += 1
    except ExportmonError as error:  # the ledger itself failed
        log.error("%s: %s", channel.label, redact(error.one_line()))
    except Exception as error:  # a channel's library failed unexpectedly: never lose the run
        log.error("%s: %s", channel.label, redact(f"{type(error).__name__}: {error}"))
    counts[channel.name] = sent


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


def _success_payload(monitor: MonitorConfig, ledger: Ledger, export: Export) -> dict[str, Any]:
    files = ledger.files(export.id)
    deliveries = ledger.deliveries(export_row=export.id, state="done")
    destinations = list(dict.fromkeys(d.destination for d in deliveries))
    rows = sum(f.rows or 0 for f in files) if files else (export.rows or 0)
    receiver_counts: dict[str, Any] = {}
    for delivery in deliveries:
        counts = getattr(delivery, "receiver_counts", None)
        if counts:
            receiver_counts[delivery.destination] = counts
    what = f"export {export.export_id}" if export.export_id is not None else "export"
    where = ", ".join(destinations) or "its destinations"
    summary = f"{what} delivered: {_plural(len(files), 'file')}, {_plural(rows, 'row')} to {where}"
    return {
        "kind": "success",
        "monitor": monitor.name,
        "export_id": export.export_id,
        "scope": export_scope(export.export_id),
        "subject": _subject(monitor, summary),
        "summary": redact(summary),
        "repeat": 0,
        "since": None,
        "details": {
            "file": export.file_name,
            "delivered_at": export.delivered_at,
            "rows": rows,
            "files": [
                {"name": f.name, "rows": f.rows, "bytes": f.bytes, "export_type": f.export_type}
                for f in files
            ],
            "destinations": destinations,
            "receiver_counts": receiver_counts,
        },
    }


def _summary_payload(
    monitor: MonitorConfig,
    ledger: Ledger,
    delivered: Sequence[Export],
    failures: Sequence[str],
) -> dict[str, Any]:
    pending = [e for e in ledger.unfinished_exports() if not e.failed]
    delivered_lines = [
        f"export {e.export_id}: {e.file_name or e.key}"
        f" ({_plural(e.files or 0, 'file')}, {_plural(e.rows or 0, 'row')})"
        for e in delivered
    ]
    pending_lines = [f"export {e.export_id}: {e.file_name or e.key} ({e.state})" for e in pending]
    counts = {"delivered": len(delivered), "failed": len(failures), "pending": len(pending)}
    summary = (
        f"{_plural(len(delivered), 'export')} delivered, {len(failures)} failed,"
        f" {len(pending)} pending"
    )
    return {
        "kind": "summary",
        "monitor": monitor.name,
        "export_id": None,
        "scope": MONITOR_SCOPE,
        "subject": _subject(monitor, summary),
        "summary": summary,
        "repeat": 0,
        "since": None,
        "details": {
            "counts": counts,
            "delivered": delivered_lines,
            "failed": [redact(line) for line in failures],
            "pending": pending_lines,
        },
    }


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"
