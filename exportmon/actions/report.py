"""Reports over a period: every export received, its files and where they went.

:func:`collect_report` (loaded monitors) and :func:`build_report` (monitors with
their open ledgers) return a :class:`Report`, plain dataclasses whose ``to_dict()``
is what ``report --json`` prints; :mod:`exportmon.render` turns it into a table,
text, Markdown, CSV or HTML, and :mod:`exportmon.actions.mail_report` mails it.

An export belongs to the period in which it was received (its ledger record
was created); the per-destination totals count the deliveries started in the
period. Every text that came from outside (file names, errors) is redacted here
and escaped by each renderer for the format it goes into.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from exportmon.actions.status import mask_configured_secrets
from exportmon.actions.status_tracking import processing_line
from exportmon.actions.steps import retry_command
from exportmon.config.schema import MonitorConfig
from exportmon.ledger import Ledger, from_text, to_text
from exportmon.redact import redact
from exportmon.units import format_size, human_time

#: Past this many days the chart shows weeks instead of days.
MAX_CHART_DAYS = 92


@dataclass
class ReportFile:
    name: str
    export_type: str | None
    rows: int | None
    bytes: int | None
    destinations: list[str] = field(default_factory=list)
    #: What receiving systems said of it (HTTPS ``status_url``):
    #: ``done: completed 5 / errors 0``, one per destination that reports.
    processing: list[str] = field(default_factory=list)


@dataclass
class ReportExport:
    monitor: str
    export_id: int | None
    file_name: str | None
    #: ``delivered``, ``failed`` or ``pending``.
    outcome: str
    received_at: str
    delivered_at: str | None
    #: From receipt (the download's start) to delivery.
    duration_seconds: float | None
    bytes: int | None
    files: int
    rows: int | None
    destinations: list[str]
    error: str | None
    error_step: str | None
    attempts: int
    file_details: list[ReportFile] = field(default_factory=list)
    #: A failed export: the command that retries it now.
    retry: str | None = None


@dataclass
class DestinationTotal:
    monitor: str
    destination: str
    files: int
    bytes: int
    failed: int
    last_at: str | None


@dataclass
class Bucket:
    """One bar of the chart: a day (``2026-11-23``) or a week (``2026-W47``)."""

    label: str
    delivered: int = 0
    failed: int = 0
    pending: int = 0


@dataclass
class Summary:
    exports: int = 0
    delivered: int = 0
    failed: int = 0
    pending: int = 0
    files: int = 0
    rows: int = 0
    bytes: int = 0

    def line(self) -> str:
        return (
            f"{self.exports} exports: {self.delivered} delivered, {self.failed} failed,"
            f" {self.pending} pending; {self.files} files, {self.rows:,} rows,"
            f" {format_size(self.bytes)}"
        )


@dataclass
class Report:
    since: str
    until: str
    generated_at: str
    monitors: list[str]
    summary: Summary
    exports: list[ReportExport] = field(default_factory=list)
    destinations: list[DestinationTotal] = field(default_factory=list)
    buckets: list[Bucket] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def period(self) -> str:
        return f"{human_time(self.since)} – {human_time(self.until)}"


def _clean(text: str | None) -> str | None:
    return " ".join(redact(text).split()) if text else text


# --- building --------------------------------------------------------------------------


def collect_report(
    monitors: Sequence[MonitorConfig],
    since: datetime,
    until: datetime,
    *,
    now: datetime | None = None,
) -> Report:
    """The report of ``monitors`` for exports received in ``[since, until)``, read from
    their ledger files (a monitor that never ran has none and adds nothing)."""
    opened: list[Ledger] = []
    try:
        sources: list[tuple[MonitorConfig, Ledger | None]] = []
        for monitor in monitors:
            mask_configured_secrets(monitor)
            ledger = None
            if monitor.dirs.ledger.exists():
                ledger = Ledger.open(monitor.dirs.ledger)
                opened.append(ledger)
            sources.append((monitor, ledger))
        return build_report(sources, since, until, now=now)
    finally:
        for ledger in opened:
            ledger.close()


def build_report(
    sources: Sequence[tuple[MonitorConfig, Ledger | None]],
    since: datetime,
    until: datetime,
    *,
    now: datetime | None = None,
) -> Report:
    """The report of ``sources`` (a monitor and its ledger, None if it never ran) for
    exports received in ``[since, until)``."""
    start, end = to_text(since), to_text(until)
    report = Report(
        since=start,
        until=end,
        generated_at=to_text(now or datetime.now(timezone.utc)),
        monitors=[monitor.name for monitor, _ in sources],
        summary=Summary(),
    )
    for monitor, ledger in sources:
        if ledger is None:
            continue
        report.exports += _exports(monitor, ledger, start, end)
        report.destinations += _destinations(monitor, ledger, start, end)
    report.exports.sort(key=lambda e: (e.received_at, e.monitor))
    summary = report.summary
    for export in report.exports:
        summary.exports += 1
        setattr(summary, export.outcome, getattr(summary, export.outcome) + 1)
        if export.outcome == "delivered":
            summary.files += export.files
            summary.rows += export.rows or 0
            summary.bytes += sum(f.bytes or 0 for f in export.file_details)
    report.buckets = _buckets(report.exports, since, until)
    return report


def _exports(monitor: MonitorConfig, ledger: Ledger, start: str, end: str) -> list[ReportExport]:
    found = []
    for export in ledger.exports(since=start, until=end):
        files = ledger.files(export.id)
        done = ledger.deliveries(export_row=export.id, state="done")
        by_file: dict[int | None, list[str]] = defaultdict(list)
        processed: dict[int | None, list[str]] = defaultdict(list)
        for delivery in done:
            destination = _clean(delivery.destination) or ""
            if destination not in by_file[delivery.file_id]:
                by_file[delivery.file_id].append(destination)
            if delivery.status:
                processed[delivery.file_id].append(processing_line(delivery))
        details = [
            ReportFile(
                name=_clean(f.name) or "",
                export_type=f.export_type,
                rows=f.rows,
                bytes=f.bytes,
                destinations=by_file.get(f.id, []),
                processing=processed.get(f.id, []),
            )
            for f in files
        ]
        if export.state == "delivered":
            outcome = "delivered"
        elif export.error:
            outcome = "failed"
        else:
            outcome = "pending"
        duration = None
        if export.delivered_at:
            duration = (
                from_text(export.delivered_at) - from_text(export.created_at)
            ).total_seconds()
        rows = [f.rows for f in files if f.rows is not None]
        found.append(
            ReportExport(
                monitor=monitor.name,
                export_id=export.export_id,
                file_name=_clean(export.file_name),
                outcome=outcome,
                received_at=export.created_at,
                delivered_at=export.delivered_at,
                duration_seconds=duration,
                bytes=export.bytes,
                files=len(files),
                rows=sum(rows) if rows else export.rows,
                destinations=list(dict.fromkeys(d for ds in by_file.values() for d in ds)),
                error=_clean(export.error) if outcome != "delivered" else None,
                error_step=export.error_step if outcome != "delivered" else None,
                attempts=export.attempts,
                file_details=details,
                retry=retry_command(monitor) if outcome == "failed" else None,
            )
        )
    return found


def _destinations(
    monitor: MonitorConfig, ledger: Ledger, start: str, end: str
) -> list[DestinationTotal]:
    return [
        DestinationTotal(
            monitor=monitor.name,
            destination=_clean(row.destination) or "",
            files=row.files,
            bytes=row.bytes,
            failed=row.failed,
            last_at=row.last_at,
        )
        for row in ledger.destination_totals(start, end)
    ]


def _buckets(exports: list[ReportExport], since: datetime, until: datetime) -> list[Bucket]:
    first = since.astimezone().date()
    last = (until - timedelta(microseconds=1)).astimezone().date()
    weekly = (last - first).days + 1 > MAX_CHART_DAYS

    def label(day: date) -> str:
        if weekly:
            year, week, _ = day.isocalendar()
            return f"{year}-W{week:02d}"
        return day.isoformat()

    buckets: dict[str, Bucket] = {}
    day = first
    while day <= last:
        buckets.setdefault(label(day), Bucket(label(day)))
        day += timedelta(days=1)
    for export in exports:
        key = label(from_text(export.received_at).astimezone().date())
        bucket = buckets.setdefault(key, Bucket(key))
        setattr(bucket, export.outcome, getattr(bucket, export.outcome) + 1)
    return list(buckets.values())
