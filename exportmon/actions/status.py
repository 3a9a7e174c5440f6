"""How each monitor and export id is doing: the data that `exportmon status`, the
status page, Nagios and Prometheus all show.

:func:`load_status` (configs to data) and :func:`collect_status` (loaded monitors to
data) return a :class:`StatusReport`, plain dataclasses whose ``to_dict()`` is what
``status --json`` prints; renderers live in :mod:`exportmon.render`. The state of an
export id is the worst of its problems (:mod:`exportmon.actions.problems`); a
monitor's is the worst of its export ids and its monitor-wide problems; a config
that does not load is a monitor in error, named by its file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from exportmon.actions.problems import (
    MONITOR_SCOPE,
    SEVERITY,
    STATES,
    Problem,
    config_monitor_name,
    config_problem,
    export_scope,
    find_problems,
    sign_in_problems,
    sign_in_state_of,
    worst,
)
from exportmon.actions.status_tracking import (
    ProcessingStatus,
    processing_status,
    waiting_summary,
)
from exportmon.actions.steps import retry_command
from exportmon.config.load import discover, load_monitors
from exportmon.config.schema import MonitorConfig
from exportmon.errors import ConfigError, LedgerError
from exportmon.ledger import ExportFigures, Ledger, from_text, to_text
from exportmon.notify.apprise import register_url
from exportmon.redact import redact
from exportmon.redact import register as register_secret
from exportmon.schedule import parse_schedule
from exportmon.units import human_time

__all__ = [
    "MONITOR_SCOPE",
    "SEVERITY",
    "STATES",
    "DestinationStatus",
    "ExportStatus",
    "MonitorStatus",
    "Problem",
    "StatusReport",
    "Totals",
    "collect_status",
    "find_problems",
    "human_time",
    "load_status",
    "mask_configured_secrets",
    "monitor_status",
    "overall",
    "status_of",
    "summarise",
]


@dataclass
class Totals:
    """What was ever delivered and what ever failed (pruning never lowers these)."""

    exports: int = 0
    files: int = 0
    rows: int = 0
    bytes: int = 0
    #: Failed attempts (of exports; for a destination, of deliveries).
    failures: int = 0


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
    #: While exports are failing: the command that retries them now (a run retries
    #: them by itself once their config changes, or at ``retry_after``).
    retry: str | None = None
    expect_every: str | None = None
    next_expected: str | None = None
    #: Running totals since the ledger began; pruning never lowers them.
    totals: Totals = field(default_factory=lambda: Totals())
    #: What receiving systems said of its files (HTTPS ``status_url``): those still
    #: being processed, and those of its latest export they reported on.
    processing: list[ProcessingStatus] = field(default_factory=list)


@dataclass
class DestinationStatus:
    """One destination of a monitor, from the deliveries the ledger holds."""

    destination: str
    #: ``error`` while some file's latest delivery there failed, else ``ok``.
    state: str
    files_delivered: int = 0
    bytes_delivered: int = 0
    #: Files whose latest delivery there failed.
    failing: int = 0
    last_success: str | None = None
    last_failure: str | None = None
    last_error: str | None = None
    #: Running totals for this destination (``exports`` and ``rows`` are not kept).
    totals: Totals = field(default_factory=lambda: Totals())
    #: One of the monitor's ``[[deliver]]`` destinations; ``False``: deliveries made
    #: there by an ad-hoc ``push-ftp --url/--to``, which settle nothing.
    configured: bool = True


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
    destinations: list[DestinationStatus] = field(default_factory=list)
    failed_mails: int = 0
    alerts_pending: int = 0
    #: While exports are failing: the command that retries them now.
    retry: str | None = None
    #: Set when the monitor's config does not load (``state`` is then ``error``).
    config_error: str | None = None
    #: Each of the config file's problems, one line each.
    config_errors: list[str] = field(default_factory=list)
    #: ``auth = "oauth2"`` monitors: who signed in with which flow, when the sign-in
    #: was last renewed (``renewed_at``) and when it ends, if the provider said.
    sign_in: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StatusReport:
    """Every monitor asked about, and the state and reason over all of them."""

    state: str
    reason: str
    checked_at: str
    monitors: list[MonitorStatus] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What ``exportmon status --json`` prints."""
        return asdict(self)


def mask_configured_secrets(monitor: MonitorConfig) -> None:
    """Register the monitor's passwords that are at hand (in the file or the environment)
    with :mod:`exportmon.redact`, so output never shows one even if a stored error holds it.

    Password commands are not run for this: status and reports must not prompt or wait.
    """
    for source in monitor.secret_sources():
        if source.value:
            register_secret(source.value)
        elif source.env:
            register_secret(os.environ.get(source.env))
    # URLs that hold tokens: each one and each of its token-like parts.
    for source in (monitor.alerts.notify_source(), monitor.heartbeat.url_source()):
        text = source.value if source.value else os.environ.get(source.env or "", "")
        for url in (text or "").replace(",", " ").split():
            register_url(url)


def _now(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc)


def _time(text: str | None) -> datetime | None:
    return from_text(text) if text else None


def _one_line(text: str | None) -> str:
    return " ".join(redact(text or "").split())


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
        sign_in=sign_in_state_of(monitor),
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
        # A missing sign-in is worth saying before the first run.
        base.problems = sign_in_problems(monitor, base.sign_in)
        if base.problems:
            base.state = worst([p.state for p in base.problems])
            base.reason = base.problems[0].summary
        return base

    problems = find_problems(monitor, ledger, now=moment, sign_in=base.sign_in)
    figures = {row.export_id: row for row in ledger.export_figures()}
    export_ids: list[int | None] = list(monitor.ids)
    export_ids += sorted(i for i in figures if i is not None and i not in monitor.ids)
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
    if any(p.kind == "failure" and p.key.startswith("export:") for p in problems):
        base.retry = retry_command(monitor)
    counters = {(c.name, c.export_id, c.destination): c.value for c in ledger.counters()}
    for row in rows:
        key = "" if row.export_id is None else str(row.export_id)
        row.totals = Totals(
            exports=counters.get(("delivered_exports", key, ""), 0),
            files=counters.get(("delivered_files", key, ""), 0),
            rows=counters.get(("delivered_rows", key, ""), 0),
            bytes=counters.get(("delivered_bytes", key, ""), 0),
            failures=counters.get(("export_failures", key, ""), 0),
        )
    base.destinations = [
        DestinationStatus(
            destination=_one_line(found.destination),
            state="error" if found.failing else "ok",
            files_delivered=found.files_delivered,
            bytes_delivered=found.bytes_delivered,
            failing=found.failing,
            last_success=found.last_success,
            last_failure=found.last_failure,
            last_error=_one_line(found.last_error) or None,
            totals=_destination_totals(counters, found.destination),
        )
        for found in ledger.destination_states()
    ]
    known = {d.destination for d in base.destinations}
    pruned = sorted({name for kind, _, name in counters if kind.startswith("destination_")} - known)
    for destination in pruned:  # every delivery there has been pruned; the totals remain
        base.destinations.append(
            DestinationStatus(
                destination=_one_line(destination),
                state="ok",
                totals=_destination_totals(counters, destination),
            )
        )
    configured = configured_labels(monitor)
    for place in base.destinations:
        place.configured = place.destination in configured
    shown = {d.destination for d in base.destinations}
    for label in configured:  # configured, nothing delivered there yet
        if label not in shown:
            base.destinations.append(DestinationStatus(destination=label, state="unknown"))
    return base


def configured_labels(monitor: MonitorConfig) -> list[str]:
    """The ledger labels of the monitor's ``[[deliver]]`` destinations (no secret is
    looked up); those that cannot be named here are left out."""
    from exportmon.actions.deliver import destination_label

    labels = [destination_label(config) for config in monitor.destinations]
    return [_one_line(label) for label in labels if label]


def _destination_totals(counters: dict[tuple[str, str, str], int], destination: str) -> Totals:
    return Totals(
        files=counters.get(("destination_files", "", destination), 0),
        bytes=counters.get(("destination_bytes", "", destination), 0),
        failures=counters.get(("destination_failures", "", destination), 0),
    )


def monitor_status(monitor: MonitorConfig, *, now: datetime | None = None) -> MonitorStatus:
    """The status of one monitor, read from its ledger file (a monitor that never ran
    has none); a ledger that cannot be read makes it ``error``."""
    mask_configured_secrets(monitor)
    path = monitor.dirs.ledger
    if not path.exists():
        return status_of(monitor, None, now=now)
    try:
        with Ledger.open(path) as ledger:
            return status_of(monitor, ledger, now=now)
    except LedgerError as exc:
        broken = status_of(monitor, None, now=now)
        broken.state = "error"
        broken.reason = _one_line(exc.one_line())
        return broken


def broken_config_status(error: ConfigError, *, now: datetime | None = None) -> MonitorStatus:
    """A config that does not load, as a monitor in error named by its file."""
    problem = config_problem(error)
    return MonitorStatus(
        monitor=config_monitor_name(error),
        config=str(error.path) if error.path is not None else None,
        root=None,
        state="error",
        reason=problem.reason,
        checked_at=to_text(_now(now)),
        problems=[problem],
        config_error=problem.details["error"],
        config_errors=list(problem.details["errors"]),
    )


def collect_status(
    monitors: Sequence[MonitorConfig],
    config_errors: Sequence[ConfigError] = (),
    *,
    now: datetime | None = None,
) -> StatusReport:
    """The status of loaded ``monitors`` and of the configs that did not load."""
    moment = _now(now)
    statuses = [monitor_status(monitor, now=moment) for monitor in monitors]
    statuses += [broken_config_status(error, now=moment) for error in config_errors]
    return summarise(statuses, now=moment)


def summarise(statuses: Sequence[MonitorStatus], *, now: datetime | None = None) -> StatusReport:
    """``statuses`` with the state and reason over all of them."""
    state, reason = overall(statuses)
    return StatusReport(
        state=state, reason=reason, checked_at=to_text(_now(now)), monitors=list(statuses)
    )


def load_status(
    configs: Sequence[Path] | None = None, *, strict: bool = False, now: datetime | None = None
) -> StatusReport:
    """The status of the monitors configured in ``configs`` (None: every configured one).

    Never raises for a broken config: it is a monitor in error in the result. Without
    any config at all the state is ``unknown`` (``no monitors``).
    """
    files: list[Path] = []
    errors: list[ConfigError] = []
    targets: list[list[Path] | None] = [[path] for path in configs] if configs else [None]
    for target in targets:
        try:  # one config that is missing does not hide the others
            files += discover(target)
        except ConfigError as exc:
            errors.append(exc)
    monitors, broken = load_monitors(files, strict=strict) if files else ([], [])
    return collect_status(monitors, [*broken, *errors], now=now)


def _reason(state: str, rows: list[ExportStatus], monitor_problems: list[Problem]) -> str:
    if state == "ok":
        latest = max((row.last_success for row in rows if row.last_success), default=None)
        return f"all ok; last delivered {human_time(latest)}" if latest else "all ok"
    reasons = [p.reason for p in monitor_problems if p.state == state]
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
    if row.failing:
        row.retry = retry_command(monitor)
    failed = ledger.last_failed_export(export_id)
    if failed:
        row.last_failure = failed.error_at
        row.last_error = _one_line(failed.error)
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
        row.reason = "; ".join(p.reason for p in mine if p.state == row.state)
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
    row.processing = processing_status(ledger, export_id)
    waiting = waiting_summary(row.processing)
    if waiting:
        row.reason = f"{row.reason}; {waiting}" if row.reason else waiting
    return row


def _last_failure_from_alerts(ledger: Ledger, scope: str, row: ExportStatus) -> None:
    """A failure that has since been fixed is no longer in the exports table; alerts remember it."""
    found = ledger.latest_alert(scope=scope, kind="failure")
    if found is None:
        return
    details = found.data.get("details", {})
    row.last_failure = details.get("failed_at") or found.created_at
    row.last_error = _one_line(details.get("error")) or None
    row.last_error_step = details.get("step")


# --- over several monitors -------------------------------------------------------------


def overall(statuses: Sequence[MonitorStatus]) -> tuple[str, str]:
    """The worst state over several monitors and its reason (monitor-prefixed when several)."""
    items = [(s.state, s.monitor, s.reason) for s in statuses]
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
