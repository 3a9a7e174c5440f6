"""What is wrong with a monitor right now: failing, missing or late exports, odd row
counts, stalled work, step failures, unsendable alerts and configs that do not load.

:func:`find_problems` lists them for one monitor and its ledger; the alert engine
(:mod:`exportmon.actions.alerts`) turns them into alerts and :mod:`exportmon.actions.status`
into a state per export id and per monitor. A config that does not load is a problem
too (:func:`config_problem`): its monitor is in error wherever states are shown.

=========  =====================================================================
state      when
=========  =====================================================================
error      an export is failing (a later delivered export of the same id clears
           it), a mail could not be read, a step such as reading the mailbox is
           failing, an expected export is missing (late by more than ``grace``),
           or the monitor's config does not load
warning    an expected export is late (within ``grace``), an export's row count is
           outside ``min_rows``/``max_rows``, work has been pending for over an
           hour, or alerts cannot be sent
unknown    nothing has been received yet and nothing is expected (or no run has
           happened, so lateness cannot be judged)
ok         none of the above
=========  =====================================================================

The worst state wins (error, then warning, then unknown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypedDict

from exportmon.actions.steps import retry_command
from exportmon.config.schema import ExportExpectation, MonitorConfig
from exportmon.errors import ConfigError
from exportmon.ledger import Export, Ledger, from_text, to_text
from exportmon.redact import redact
from exportmon.schedule import lateness, parse_schedule
from exportmon.units import format_duration, human_time

#: Longest summary (the subject of an alert, a one-line reason).
SUMMARY_LIMIT = 160
#: Longest error text kept in a problem's reason and details.
DETAIL_LIMIT = 4000

STATES = ("ok", "warning", "error", "unknown")
#: Which state wins when several apply.
SEVERITY = {"ok": 0, "unknown": 1, "warning": 2, "error": 3}
#: The number of each state in Nagios exit codes and Prometheus series.
STATE_CODES = {"ok": 0, "warning": 1, "error": 2, "unknown": 3}
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
    #: ``failure``, ``missing``, ``rows``, ``late``, ``pending``, ``unsent`` or ``sign-in``.
    kind: str
    #: ``export:<export id>`` or ``monitor``: recoveries are announced per scope.
    scope: str
    #: ``error`` or ``warning``.
    state: str
    #: One line for people, e.g. ``export 777 failed at download: HTTP 404``, shortened
    #: to :data:`SUMMARY_LIMIT` (alert subjects, one-line reasons).
    summary: str
    #: Whether this problem is alerted (late-but-within-grace, say, is not).
    alert: bool = True
    export_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    #: The same sentence with the whole error (``summary`` when that is all of it).
    reason: str = ""

    def __post_init__(self) -> None:
        self.reason = self.reason or self.summary


# --- gathering ------------------------------------------------------------------------


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc)


def _time(text: str | None) -> datetime | None:
    return from_text(text) if text else None


def _short(text: str | None, limit: int = SUMMARY_LIMIT) -> str:
    text = " ".join(redact(text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _full(text: str | None) -> str:
    """``text`` redacted on one line, whole up to :data:`DETAIL_LIMIT`."""
    return _short(text, DETAIL_LIMIT)


class _Words(TypedDict):
    summary: str
    reason: str


def _worded(lead: str, detail: str | None) -> _Words:
    """A problem's ``summary`` and ``reason``, both ``lead: detail``: the detail
    shortened for the one, whole (up to :data:`DETAIL_LIMIT`) for the other."""
    return _Words(summary=f"{lead}: {_short(detail)}", reason=f"{lead}: {_full(detail)}")


def _label(export_id: int | None) -> str:
    return f"export {export_id}" if export_id is not None else "an export"


def _export_details(monitor: MonitorConfig, export: Export, ledger: Ledger) -> dict[str, Any]:
    found: dict[str, Any] = {
        "monitor": monitor.name,
        "export_id": export.export_id,
        "file": export.file_name,
        "error": redact(export.error or ""),
        "step": export.error_step,
        "attempts": export.attempts,
        "failed_at": export.error_at,
        "received_at": export.created_at,
        "retry_at": export.retry_at,
        # How to retry it now; a run retries it by itself at retry_at (when set)
        # and once the config has changed since it failed.
        "retry": retry_command(monitor),
        "state": export.state,
    }
    if export.error_step == "deliver":
        found["destination_states"] = destination_progress(monitor, ledger, export)
    return found


def destination_progress(monitor: MonitorConfig, ledger: Ledger, export: Export) -> dict[str, str]:
    """Where an export stands at each destination: ``delivered``, ``failed: <reason>``
    or ``pending`` (configured, nothing failed there yet), by ledger label."""
    from exportmon.actions.status import configured_labels

    files = {f.id for f in ledger.files(export.id)}
    records: dict[str, list[Any]] = {label: [] for label in configured_labels(monitor)}
    for delivery in ledger.deliveries(export_row=export.id):
        records.setdefault(" ".join(redact(delivery.destination).split()), []).append(delivery)
    progress = {}
    for label, found in records.items():
        done = {d.file_id for d in found if d.state == "done" and d.file_id is not None}
        latest: dict[tuple[int | None, str], Any] = {}
        for delivery in found:
            latest[(delivery.file_id, delivery.target)] = delivery
        failed = [d for d in latest.values() if d.state == "failed"]
        if failed:
            progress[label] = f"failed: {_short(failed[-1].error)}"
        elif files and files <= done:
            progress[label] = "delivered"
        else:
            progress[label] = "pending"
    return progress


def find_problems(
    monitor: MonitorConfig,
    ledger: Ledger,
    *,
    now: datetime | None = None,
    sign_in: dict[str, Any] | None = None,
) -> list[Problem]:
    """Everything wrong with ``monitor`` right now, in a stable order.

    ``sign_in`` is the monitor's :func:`sign_in_state_of` when the caller has read it
    already (``status`` shows it too); otherwise it is read here.
    """
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
                **_worded(f"{_label(export.export_id)} failed at {step}", export.error),
                export_id=export.export_id,
                details=_export_details(monitor, export, ledger),
            )
        )

    for mail in ledger.failed_mails(changed_after=ledger.last_delivered_at()):
        problems.append(
            Problem(
                key=f"mail:{mail.id}",
                kind="failure",
                scope=MONITOR_SCOPE,
                state="error",
                **_worded("a mail could not be processed", mail.note or "unreadable"),
                details={
                    "monitor": monitor.name,
                    "mail_subject": _short(mail.subject),
                    "mail_from": _short(mail.sender),
                    "error": _full(mail.note),
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
                **_worded(f"{failure.step} failed", failure.error),
                details={
                    "monitor": monitor.name,
                    "error": _full(failure.error),
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

    problems.extend(sign_in_problems(monitor, sign_in or sign_in_state_of(monitor)))

    unsent = ledger.unsent_alerts()
    if unsent.count:
        problems.append(
            Problem(
                key="unsent",
                kind="unsent",
                scope=MONITOR_SCOPE,
                state="warning",
                **_worded(f"{unsent.count} alert(s) could not be sent", unsent.error),
                alert=False,
            )
        )
    return problems


def sign_in_state_of(monitor: MonitorConfig) -> dict[str, Any] | None:
    """What ``status`` shows of the monitor's OAuth2 sign-in (None: not an OAuth2
    monitor, and then nothing is read or imported)."""
    if monitor.source.auth != "oauth2":
        return None
    from exportmon.oauth import sign_in_state

    return sign_in_state(monitor)


def sign_in_problems(monitor: MonitorConfig, state: dict[str, Any] | None) -> list[Problem]:
    """A sign-in (``state``, from :func:`sign_in_state_of`) that ends soon (a warning,
    alerted once) or is missing (an error); failed renewals are the mailbox's step
    failures already."""
    problem = (state or {}).get("problem")
    if not problem:
        return []
    return [
        Problem(
            key="sign-in",
            kind="sign-in",
            scope=MONITOR_SCOPE,
            state="warning" if state and state.get("signed_in") else "error",
            summary=_short(problem),
            reason=_full(problem),
            details={"monitor": monitor.name, "sign_in": state},
        )
    ]


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
    if monitor.source.kind == "folder":
        # Every dropped file is an export of its own: each type's latest file counts.
        by_type = ledger.latest_row_counts_by_type(export_id)
        if not by_type:
            return []
        latest = max((export for _, export in by_type.values()), key=lambda e: e.id)
        counts = {kind: rows for kind, (rows, _) in by_type.items()}
        exports = {kind: export for kind, (_, export) in by_type.items()}
    else:
        export, counts = ledger.latest_row_counts(export_id)
        if export is None:
            return []
        latest, exports = export, {}
    problems = []
    for export_type in sorted(set(expectation.min_rows) | set(expectation.max_rows)):
        export = exports.get(export_type, latest)
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


def config_problem(error: ConfigError) -> Problem:
    """The problem of a config file that does not load: its monitor is in error."""
    path = str(error.path) if error.path is not None else None
    message = " ".join(redact(error.one_line()).split())
    return Problem(
        key=f"config:{path or message}",
        kind="config",
        scope=MONITOR_SCOPE,
        state="error",
        **_worded("config does not load", message),
        details={
            "config": path,
            "error": _full(message),
            # One per problem of a file with several (ConfigProblems), else the one.
            "errors": [" ".join(redact(line).split()) for line in error.lines()],
        },
    )


def config_monitor_name(error: ConfigError) -> str:
    """What to call the monitor of a config that does not load: its file's name."""
    return Path(str(error.path)).stem if error.path is not None else "(config)"
