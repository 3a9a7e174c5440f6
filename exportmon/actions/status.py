"""How each monitor and export id is doing, computed from the ledger and the expectations.

:func:`find_problems` lists what is wrong right now; the alert engine
(:mod:`exportmon.actions.alerts`) turns those problems into alerts, and
:func:`status_of` turns them into a state per export id and per monitor:

=========  =====================================================================
state      when
=========  =====================================================================
error      an export is failing (a later delivered export of the same id clears
           it), a mail could not be read, a step such as reading the mailbox is
           failing, or an expected export is missing (late by more than ``grace``)
warning    an expected export is late (within ``grace``), an export's row count is
           outside ``min_rows``/``max_rows``, work has been pending for over an
           hour, or alerts cannot be sent
unknown    nothing has been received yet and nothing is expected (or no run has
           happened, so lateness cannot be judged)
ok         none of the above
=========  =====================================================================

The worst state wins (error, then warning, then unknown). Nagios exit codes are
0 ok, 1 warning, 2 error (CRITICAL) and 3 unknown.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from exportmon.config.schema import ExportExpectation, MonitorConfig
from exportmon.ledger import Export, ExportFigures, Ledger, from_text, to_text
from exportmon.notify.apprise import register_url
from exportmon.redact import redact
from exportmon.redact import register as register_secret
from exportmon.schedule import lateness, parse_schedule
from exportmon.units import format_duration

STATES = ("ok", "warning", "error", "unknown")
#: Which state wins when several apply.
SEVERITY = {"ok": 0, "unknown": 1, "warning": 2, "error": 3}
NAGIOS_CODES = {"ok": 0, "warning": 1, "error": 2, "unknown": 3}
NAGIOS_WORDS = {"ok": "OK", "warning": "WARNING", "error": "CRITICAL", "unknown": "UNKNOWN"}
#: Work not finished (and not failed) after this long is a warning: runs have stopped?
PENDING_WARNING_AFTER = 3600.0
MONITOR_SCOPE = "monitor"


def export_scope(export_id: int | None) -> str:
    return f"export:{export_id}" if export_id is not None else MONITOR_SCOPE


def worst(states: list[str]) -> str:
    """The state that wins among ``states`` (``ok`` for none)."""
    return max(states, key=SEVERITY.__getitem__, default="ok")


@dataclass
class Problem:
    """One thing wrong right now."""

    #: Stable identity, the alert's subject: ``export:<row>``, ``mail:<id>``,
    #: ``step:<name>``, ``missing:<export id>:<expected at>``, ``rows:<row>:<type>``.
    key: str
    #: ``failure``, ``missing``, ``rows``, ``late``, ``pending`` or ``unsent``.
    kind: str
    #: ``export:<export id>`` or ``monitor``: recoveries are announced per scope.
    scope: str
    #: ``error`` or ``warning``.
    state: str
    #: One line for people, e.g. ``export 777 failed at download: HTTP 404``.
    summary: str
    #: Whether this problem is alerted (late-but-within-grace, say, is not).
    alert: bool = True
    export_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportStatus:
    """One export id of a monitor."""

    export_id: int | None
    state: str
    reason: str
    exports: int = 0
    delivered: int = 0
    failing: int = 0
    pending: int = 0
    files_delivered: int = 0
    rows_delivered: int = 0
    bytes_delivered: int = 0
    last_arrival: str | None = None
    last_success: str | None = None
    last_failure: str | None = None
    last_error: str | None = None
    last_error_step: str | None = None
    expect_every: str | None = None
    next_expected: str | None = None


@dataclass
class MonitorStatus:
    """A monitor: its overall state and reason, its export ids and monitor-wide problems."""

    monitor: str
    config: str | None
    root: str | None
    state: str
    reason: str
    checked_at: str
    exports: list[ExportStatus] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    failed_mails: int = 0
    alerts_pending: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mask_configured_secrets(monitor: MonitorConfig) -> None:
    """Register the monitor's passwords that are at hand (in the file or the environment)
    with :mod:`exportmon.redact`, so output never shows one even if a stored error holds it.

    Password commands are not run for this: status and reports must not prompt or wait.
    """
    for source in (
        monitor.source.password_source(),
        monitor.deliver.ftp_password_source(),
        monitor.alerts.smtp_password_source(),
    ):
        if source.value:
            register_secret(source.value)
        elif source.env:
            register_secret(os.environ.get(source.env))
    # URLs that hold tokens: each one and each of its token-like parts.
    for source in (monitor.alerts.notify_source(), monitor.heartbeat.url_source()):
        text = source.value if source.value else os.environ.get(source.env or "", "")
        for url in (text or "").replace(",", " ").split():
            register_url(url)


# --- gathering ------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc)


def _time(text: str | None) -> datetime | None:
    return from_text(text) if text else None


def _short(text: str | None, limit: int = 160) -> str:
    text = " ".join(redact(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _label(export_id: int | None) -> str:
    return f"export {export_id}" if export_id is not None else "an export"


def _export_details(monitor: MonitorConfig, export: Export) -> dict[str, Any]:
    return {
        "monitor": monitor.name,
        "export_id": export.export_id,
        "file": export.file_name,
        "error": redact(export.error or ""),
        "step": export.error_step,
        "attempts": export.attempts,
        "failed_at": export.error_at,
        "received_at": export.created_at,
        "retry_at": export.retry_at,
        "state": export.state,
    }


def find_problems(
    monitor: MonitorConfig, ledger: Ledger, *, now: datetime | None = None
) -> list[Problem]:
    """Everything wrong with ``monitor`` right now, in a stable order."""
    moment = _now(now)
    problems: list[Problem] = []

    for export in ledger.failing_exports():
        step = export.error_step or "?"
        problems.append(
            Problem(
                key=f"export:{export.id}",
                kind="failure",
                scope=export_scope(export.export_id),
                state="error",
                summary=f"{_label(export.export_id)} failed at {step}: {_short(export.error)}",
                export_id=export.export_id,
                details=_export_details(monitor, export),
            )
        )

    for mail in ledger.failed_mails(changed_after=ledger.last_delivered_at()):
        problems.append(
            Problem(
                key=f"mail:{mail.id}",
                kind="failure",
                scope=MONITOR_SCOPE,
                state="error",
                summary=f"a mail could not be processed: {_short(mail.note or 'unreadable')}",
                details={
                    "monitor": monitor.name,
                    "mail_subject": _short(mail.subject),
                    "mail_from": _short(mail.sender),
                    "error": _short(mail.note, 2000),
                    "step": "mail",
                    "failed_at": mail.updated_at,
                },
            )
        )

    for failure in ledger.step_failures():
        problems.append(
            Problem(
                key=f"step:{failure.step}",
                kind="failure",
                scope=MONITOR_SCOPE,
                state="error",
                summary=f"{failure.step} failed: {_short(failure.error)}",
                details={
                    "monitor": monitor.name,
                    "error": _short(failure.error, 2000),
                    "step": failure.step,
                    "failed_at": failure.first_at,
                    "last_failed_at": failure.last_at,
                    "attempts": failure.count,
                },
            )
        )

    started = _time(ledger.watch_started())
    for export_id, expectation in sorted(monitor.exports.items()):
        problems.extend(
            _expectation_problems(monitor, ledger, export_id, expectation, started, moment)
        )

    stalled_before = to_text(moment - timedelta(seconds=PENDING_WARNING_AFTER))
    for stalled in ledger.stalled_exports(stalled_before):
        age = (moment - from_text(stalled.oldest)).total_seconds()
        problems.append(
            Problem(
                key=f"pending:{stalled.export_id}",
                kind="pending",
                scope=export_scope(stalled.export_id),
                state="warning",
                summary=f"{stalled.count} export(s) unfinished for {format_duration(age)}:"
                " is `exportmon run` running?",
                alert=False,
                export_id=stalled.export_id,
            )
        )

    unsent = ledger.unsent_alerts()
    if unsent.count:
        problems.append(
            Problem(
                key="unsent",
                kind="unsent",
                scope=MONITOR_SCOPE,
                state="warning",
                summary=f"{unsent.count} alert(s) could not be sent: {_short(unsent.error)}",
                alert=False,
            )
        )
    return problems


def _expectation_problems(
    monitor: MonitorConfig,
    ledger: Ledger,
    export_id: int,
    expectation: ExportExpectation,
    started: datetime | None,
    moment: datetime,
) -> list[Problem]:
    problems = []
    scope = export_scope(export_id)
    if expectation.expect_every:
        schedule = parse_schedule(expectation.expect_every)
        last = ledger.last_received_at(export_id)
        anchor = _time(last) or started
        verdict = lateness(schedule, anchor, expectation.grace, moment)
        if verdict.verdict in ("late", "missing") and verdict.expected_at is not None:
            expected = to_text(verdict.expected_at)
            missing = verdict.verdict == "missing"
            problems.append(
                Problem(
                    key=f"missing:{export_id}:{expected}",
                    kind="missing" if missing else "late",
                    scope=scope,
                    state="error" if missing else "warning",
                    summary=f"export {export_id} did not arrive: expected {human_time(expected)},"
                    f" {format_duration(verdict.late_by)} late ({schedule.describe()})",
                    alert=missing,
                    export_id=export_id,
                    details={
                        "monitor": monitor.name,
                        "export_id": export_id,
                        "expected_at": expected,
                        "late_by_seconds": round(verdict.late_by),
                        "last_arrival": last,
                        "expect_every": expectation.expect_every,
                        "grace_seconds": expectation.grace,
                    },
                )
            )
    if expectation.min_rows or expectation.max_rows:
        problems.extend(_row_problems(monitor, ledger, export_id, expectation))
    return problems


def _row_problems(
    monitor: MonitorConfig, ledger: Ledger, export_id: int, expectation: ExportExpectation
) -> list[Problem]:
    export, counts = ledger.latest_row_counts(export_id)
    if export is None:
        return []
    problems = []
    for export_type in sorted(set(expectation.min_rows) | set(expectation.max_rows)):
        rows = counts.get(export_type, 0)
        low = expectation.min_rows.get(export_type)
        high = expectation.max_rows.get(export_type)
        if low is not None and rows < low:
            bound = f"at least {low}"
        elif high is not None and rows > high:
            bound = f"at most {high}"
        else:
            continue
        problems.append(
            Problem(
                key=f"rows:{export.id}:{export_type}",
                kind="rows",
                scope=export_scope(export_id),
                state="warning",
                summary=f"export {export_id} has {rows} {export_type} rows (expected {bound})",
                export_id=export_id,
                details={
                    "monitor": monitor.name,
                    "export_id": export_id,
                    "file": export.file_name,
                    "export_type": export_type,
                    "rows": rows,
                    "min_rows": low,
                    "max_rows": high,
                    "received_at": export.created_at,
                },
            )
        )
    return problems


def human_time(text: str | None, *, offset: bool = False) -> str:
    """Ledger time as local ``2026-11-23 09:40`` (with ``+0100`` if ``offset``), ``-`` for none."""
    if not text:
        return "-"
    try:
        moment = from_text(text).astimezone()
    except ValueError:
        return text
    return moment.strftime("%Y-%m-%d %H:%M %z" if offset else "%Y-%m-%d %H:%M")


# --- status ---------------------------------------------------------------------------


def status_of(
    monitor: MonitorConfig, ledger: Ledger | None, *, now: datetime | None = None
) -> MonitorStatus:
    """The state of ``monitor`` and each of its export ids.

    ``ledger`` None means the monitor has never run (no ledger file yet).
    """
    moment = _now(now)
    base = MonitorStatus(
        monitor=monitor.name,
        config=str(monitor.path) if monitor.path else None,
        root=monitor.root,
        state="unknown",
        reason="",
        checked_at=to_text(moment),
    )
    if ledger is None:
        base.exports = [
            ExportStatus(
                export_id=export_id,
                state="unknown",
                reason="never ran (no ledger yet)",
                expect_every=_expect_every(monitor, export_id),
            )
            for export_id in monitor.ids
        ]
        base.reason = "never ran (no ledger yet)"
        return base

    problems = find_problems(monitor, ledger, now=moment)
    figures = {row.export_id: row for row in ledger.export_figures()}
    export_ids: list[int | None] = list(monitor.ids)
    export_ids += sorted((i for i in figures if i is not None and i not in monitor.ids), key=int)
    if None in figures:
        export_ids.append(None)
    started = _time(ledger.watch_started())
    rows = [
        _export_status(monitor, ledger, export_id, figures.get(export_id), problems, started)
        for export_id in export_ids
    ]
    monitor_problems = [p for p in problems if p.scope == MONITOR_SCOPE]
    states = [row.state for row in rows] + [p.state for p in monitor_problems]
    base.state = worst(states)
    base.exports = rows
    base.problems = problems
    base.failed_mails = ledger.count_mails("failed")
    base.alerts_pending = ledger.count_alerts("pending")
    base.reason = _reason(base.state, rows, monitor_problems)
    return base


def _reason(state: str, rows: list[ExportStatus], monitor_problems: list[Problem]) -> str:
    if state == "ok":
        latest = max((row.last_success for row in rows if row.last_success), default=None)
        return f"all ok; last delivered {human_time(latest)}" if latest else "all ok"
    reasons = [p.summary for p in monitor_problems if p.state == state]
    reasons += [row.reason for row in rows if row.state == state]
    unique = list(dict.fromkeys(reasons))
    shown = "; ".join(unique[:3])
    return shown + (f"; and {len(unique) - 3} more" if len(unique) > 3 else "")


def _expect_every(monitor: MonitorConfig, export_id: int | None) -> str | None:
    expectation = monitor.exports.get(export_id) if export_id is not None else None
    return expectation.expect_every if expectation else None


def _export_status(
    monitor: MonitorConfig,
    ledger: Ledger,
    export_id: int | None,
    figures: ExportFigures | None,
    problems: list[Problem],
    started: datetime | None,
) -> ExportStatus:
    scope = export_scope(export_id)
    mine = [p for p in problems if p.scope == scope] if export_id is not None else []
    row = ExportStatus(
        export_id=export_id, state="ok", reason="", expect_every=_expect_every(monitor, export_id)
    )
    if figures:
        row.exports = figures.exports
        row.delivered = figures.delivered
        row.pending = figures.pending
        row.last_arrival = figures.last_arrival
        row.last_success = figures.last_success
        row.files_delivered = figures.files_delivered
        row.rows_delivered = figures.rows_delivered
        row.bytes_delivered = figures.bytes_delivered
    row.failing = sum(1 for p in mine if p.kind == "failure")
    failed = ledger.last_failed_export(export_id)
    if failed:
        row.last_failure = failed.error_at
        row.last_error = _short(failed.error, 500)
        row.last_error_step = failed.error_step
    else:
        _last_failure_from_alerts(ledger, scope, row)
    expectation = monitor.exports.get(export_id) if export_id is not None else None
    if expectation and expectation.expect_every:
        schedule = parse_schedule(expectation.expect_every)
        anchor = _time(row.last_arrival) or started
        expected = schedule.next_after(anchor) if anchor else None
        row.next_expected = to_text(expected) if expected else None

    if mine:
        row.state = worst([p.state for p in mine])
        row.reason = "; ".join(p.summary for p in mine if p.state == row.state)
    elif not row.exports:
        row.state = "unknown"
        if expectation and expectation.expect_every:
            row.reason = "no run recorded yet: cannot tell whether the export is late"
        else:
            row.reason = "no export received yet"
    else:
        row.reason = (
            f"last delivered {human_time(row.last_success)}" if row.last_success else "in progress"
        )
    return row


def _last_failure_from_alerts(ledger: Ledger, scope: str, row: ExportStatus) -> None:
    """A failure that has since been fixed is no longer in the exports table; alerts remember it."""
    found = ledger.latest_alert(scope=scope, kind="failure")
    if found is None:
        return
    details = found.data.get("details", {})
    row.last_failure = details.get("failed_at") or found.created_at
    row.last_error = _short(details.get("error"), 500) or None
    row.last_error_step = details.get("step")


# --- output formats -------------------------------------------------------------------


def overall(statuses: list[MonitorStatus], extra: list[tuple[str, str]] = ()) -> tuple[str, str]:
    """The worst state over several monitors and its reason (monitor-prefixed when several).

    ``extra`` adds (state, reason) pairs, e.g. configs that could not be loaded.
    """
    items = [(s.state, s.monitor, s.reason) for s in statuses]
    items += [(state, "", reason) for state, reason in extra]
    if not items:
        return "unknown", "no monitors"
    state = worst([item[0] for item in items])
    several = len(items) > 1
    reasons = [
        f"{name}: {reason}" if several and name else reason
        for item_state, name, reason in items
        if item_state == state
    ]
    return state, "; ".join(reasons)


def nagios_line(
    statuses: list[MonitorStatus], extra: list[tuple[str, str]] = ()
) -> tuple[str, int]:
    """The one-line Nagios/Icinga plugin output and its exit code."""
    state, reason = overall(statuses, extra)
    text = " ".join(reason.replace("|", "/").split())
    if len(text) > 400:
        text = text[:399] + "…"
    rows = [row for status in statuses for row in status.exports]
    perfdata = {
        "delivered": sum(row.delivered for row in rows),
        "failing": sum(row.failing for row in rows),
        "pending": sum(row.pending for row in rows),
        "files": sum(row.files_delivered for row in rows),
        "rows": sum(row.rows_delivered for row in rows),
    }
    perf = " ".join(f"{name}={value};;;0" for name, value in perfdata.items())
    return f"EXPORTMON {NAGIOS_WORDS[state]} - {text} | {perf}", NAGIOS_CODES[state]


def _label_value(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _timestamp(text: str | None) -> float | None:
    return from_text(text).timestamp() if text else None


def prometheus_text(statuses: list[MonitorStatus]) -> str:
    """Prometheus text exposition format (for node_exporter's textfile collector)."""
    metrics: list[tuple[str, str, str, list[tuple[dict[str, Any], float | None]]]] = []

    def metric(name: str, kind: str, help_text: str) -> list[tuple[dict[str, Any], float | None]]:
        samples: list[tuple[dict[str, Any], float | None]] = []
        metrics.append((name, kind, help_text, samples))
        return samples

    state = metric(
        "exportmon_state", "gauge", "State per export id: 0 ok, 1 warning, 2 error, 3 unknown."
    )
    monitor_state = metric(
        "exportmon_monitor_state",
        "gauge",
        "Overall state per monitor: 0 ok, 1 warning, 2 error, 3 unknown.",
    )
    last_success = metric(
        "exportmon_last_success_timestamp_seconds", "gauge", "When the last export was delivered."
    )
    last_arrival = metric(
        "exportmon_last_arrival_timestamp_seconds", "gauge", "When the last export was received."
    )
    last_failure = metric(
        "exportmon_last_failure_timestamp_seconds", "gauge", "When an export last failed."
    )
    next_expected = metric(
        "exportmon_next_expected_timestamp_seconds", "gauge", "When the next export is expected."
    )
    exports_total = metric(
        "exportmon_exports_total",
        "counter",
        "Exports in the ledger: delivered, pending, or failed (and not delivered since).",
    )
    files_total = metric(
        "exportmon_delivered_files_total", "counter", "Files of delivered exports."
    )
    rows_total = metric("exportmon_delivered_rows_total", "counter", "Rows of delivered files.")
    bytes_total = metric("exportmon_delivered_bytes_total", "counter", "Bytes of delivered files.")
    pending = metric(
        "exportmon_pending_exports", "gauge", "Exports received but not yet delivered."
    )
    alerts_pending = metric("exportmon_alerts_pending", "gauge", "Alerts waiting to be sent.")

    for status in statuses:
        monitor_state.append(({"monitor": status.monitor}, NAGIOS_CODES[status.state]))
        alerts_pending.append(({"monitor": status.monitor}, status.alerts_pending))
        for row in status.exports:
            labels = {
                "monitor": status.monitor,
                "export_id": row.export_id if row.export_id is not None else "",
            }
            state.append((labels, NAGIOS_CODES[row.state]))
            last_success.append((labels, _timestamp(row.last_success)))
            last_arrival.append((labels, _timestamp(row.last_arrival)))
            last_failure.append((labels, _timestamp(row.last_failure)))
            next_expected.append((labels, _timestamp(row.next_expected)))
            failed = row.exports - row.delivered - row.pending
            for name, value in (
                ("delivered", row.delivered),
                ("pending", row.pending),
                ("failed", failed),
            ):
                exports_total.append(({**labels, "state": name}, value))
            files_total.append((labels, row.files_delivered))
            rows_total.append((labels, row.rows_delivered))
            bytes_total.append((labels, row.bytes_delivered))
            pending.append((labels, row.pending))

    lines = []
    for name, kind, help_text, samples in metrics:
        present = [(labels, value) for labels, value in samples if value is not None]
        if not present:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in present:
            rendered = ",".join(f'{key}="{_label_value(v)}"' for key, v in labels.items())
            lines.append(f"{name}{{{rendered}}} {_number(value)}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    if isinstance(value, float) and not value.is_integer():
        return repr(value)
    if isinstance(value, float) and math.isfinite(value):
        return str(int(value))
    return str(value)
