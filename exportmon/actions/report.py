"""Reports over a period: every export received, its files and where they went.

:func:`build_report` reads the ledgers of one or more monitors into a
:class:`Report` (plain dataclasses, JSON-serialisable); the ``render_*``
functions turn it into Markdown, CSV, plain text or a self-contained HTML page
with an inline SVG chart, and :func:`mail_report` sends the text and HTML
versions through a monitor's alert SMTP settings.

An export belongs to the period in which it was received (its ledger record
was created); the per-destination totals count the deliveries started in the
period. Every text that came from outside (file names, errors) is redacted and
escaped for the format it goes into.
"""

from __future__ import annotations

import csv
import html
import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from exportmon.actions.status import human_time
from exportmon.config.schema import MonitorConfig
from exportmon.errors import UsageError
from exportmon.ledger import Ledger, from_text, to_text
from exportmon.notify import smtp as channels
from exportmon.redact import redact
from exportmon.units import format_duration, format_size

#: Past this many days the chart shows weeks instead of days.
MAX_CHART_DAYS = 92


@dataclass
class ReportFile:
    name: str
    export_type: str | None
    rows: int | None
    bytes: int | None
    destinations: list[str] = field(default_factory=list)


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
        for delivery in done:
            destination = _clean(delivery.destination) or ""
            if destination not in by_file[delivery.file_id]:
                by_file[delivery.file_id].append(destination)
        details = [
            ReportFile(
                name=_clean(f.name) or "",
                export_type=f.export_type,
                rows=f.rows,
                bytes=f.bytes,
                destinations=by_file.get(f.id, []),
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


# --- rendering --------------------------------------------------------------------------

EXPORT_COLUMNS = (
    "monitor",
    "export id",
    "file",
    "outcome",
    "received",
    "delivered",
    "duration",
    "size",
    "files",
    "rows",
    "destinations",
    "error",
)


def export_cells(export: ReportExport) -> list[str]:
    """One export as the display cells of :data:`EXPORT_COLUMNS`."""
    return [
        export.monitor,
        str(export.export_id) if export.export_id is not None else "-",
        export.file_name or "-",
        export.outcome,
        human_time(export.received_at),
        human_time(export.delivered_at) or "-",
        format_duration(export.duration_seconds) if export.duration_seconds is not None else "-",
        format_size(export.bytes) if export.bytes is not None else "-",
        str(export.files),
        f"{export.rows:,}" if export.rows is not None else "-",
        ", ".join(export.destinations) or "-",
        f"{export.error_step or '?'}: {export.error}" if export.error else "",
    ]


DESTINATION_COLUMNS = ("monitor", "destination", "files", "size", "failed", "last delivery")


def destination_cells(total: DestinationTotal) -> list[str]:
    return [
        total.monitor,
        total.destination,
        str(total.files),
        format_size(total.bytes),
        str(total.failed),
        human_time(total.last_at) or "-",
    ]


def title(report: Report) -> str:
    return f"exportmon report {report.period}"


def render_text(report: Report) -> str:
    """Plain text (the text part of a mailed report)."""
    lines = [title(report), "", report.summary.line(), ""]
    if not report.exports:
        lines.append("No exports were received in this period.")
    for export in report.exports:
        cells = dict(zip(EXPORT_COLUMNS, export_cells(export), strict=True))
        lines.append(
            f"{cells['received']}  {cells['monitor']}/{cells['export id']}  {cells['file']}"
            f"  {export.outcome}  {cells['files']} files, {cells['rows']} rows, {cells['size']}"
            f"  → {cells['destinations']}"
        )
        if export.error:
            lines.append(f"    error: {cells['error']}")
    if report.destinations:
        lines += ["", "Per destination:"]
        for total in report.destinations:
            cells = destination_cells(total)
            lines.append(
                f"  {cells[0]}: {cells[1]}: {cells[2]} files, {cells[3]}, {cells[4]} failed"
            )
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or " "


def render_markdown(report: Report) -> str:
    out = [f"# {title(report)}", "", f"**{report.summary.line()}**", ""]
    out += ["## Exports", ""]
    if report.exports:
        out.append("| " + " | ".join(EXPORT_COLUMNS) + " |")
        out.append("|" + "---|" * len(EXPORT_COLUMNS))
        for export in report.exports:
            out.append("| " + " | ".join(_md(c) for c in export_cells(export)) + " |")
    else:
        out.append("No exports were received in this period.")
    if report.destinations:
        out += ["", "## Destinations", ""]
        out.append("| " + " | ".join(DESTINATION_COLUMNS) + " |")
        out.append("|" + "---|" * len(DESTINATION_COLUMNS))
        for total in report.destinations:
            out.append("| " + " | ".join(_md(c) for c in destination_cells(total)) + " |")
    return "\n".join(out) + "\n"


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


_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933;
       margin: 2rem auto; max-width: 1200px; padding: 0 1rem; }
h1 { font-size: 1.5rem; margin-bottom: .25rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #d9e2ec; }
.summary { font-size: 1.05rem; background: #f0f4f8; padding: .6rem .9rem; border-radius: 6px; }
.meta { color: #627d98; }
table { border-collapse: collapse; width: 100%; margin-top: .5rem; }
th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid #e4e7eb;
         vertical-align: top; }
th { background: #f5f7fa; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.time { white-space: nowrap; }
td.text { overflow-wrap: anywhere; min-width: 6rem; }
tr.note td { padding-top: 0; color: #a61b1b; overflow-wrap: anywhere; }
tr.failed:has(+ tr.note) td { border-bottom: none; }
td.destination { overflow-wrap: anywhere; min-width: 13rem; }
.scroll { overflow-x: auto; }
svg { max-width: 100%; height: auto; }
tr.failed td { background: #fff1f0; }
tr.pending td { background: #fffbea; }
.outcome-delivered { color: #1b7f3b; font-weight: 600; }
.outcome-failed { color: #c62828; font-weight: 600; }
.outcome-pending { color: #b7791f; font-weight: 600; }
.legend span { display: inline-block; margin-right: 1rem; }
.swatch { display: inline-block; width: .8rem; height: .8rem; margin-right: .3rem;
          vertical-align: -1px; border-radius: 2px; }
"""

_CELL_CLASSES = {
    "received": "time",
    "delivered": "time",
    "last delivery": "time",
    "file": "text",
    "download": "text",
    "destinations": "destination",
    "destination": "destination",
    "delivered to": "destination",
}
_COLOURS = {"delivered": "#2f9e44", "failed": "#e03131", "pending": "#f59f00"}


def _chart(buckets: list[Bucket]) -> str:
    """An inline SVG stacked bar chart of exports per day (or week), by outcome."""
    width, height, left, bottom, top = 1100, 220, 40, 40, 10
    peak = max((b.delivered + b.failed + b.pending for b in buckets), default=0)
    scale_max = max(peak, 1)
    slot = (width - left - 10) / max(len(buckets), 1)
    bar = max(min(slot * 0.7, 40), 1)
    plot = height - bottom - top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}"'
        f' viewBox="0 0 {width} {height}" role="img" aria-label="Exports per period by outcome">',
        f'<line x1="{left}" y1="{top + plot}" x2="{width - 5}" y2="{top + plot}"'
        ' stroke="#9aa5b1"/>',
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end" font-size="11"'
        f' fill="#52606d">{peak}</text>',
        f'<text x="{left - 6}" y="{top + plot}" text-anchor="end" font-size="11"'
        ' fill="#52606d">0</text>',
    ]
    every = max(1, round(len(buckets) / 15))
    for index, bucket in enumerate(buckets):
        x = left + index * slot + (slot - bar) / 2
        y = top + plot
        for outcome in ("delivered", "failed", "pending"):
            count = getattr(bucket, outcome)
            if not count:
                continue
            size = plot * count / scale_max
            y -= size
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{size:.1f}"'
                f' fill="{_COLOURS[outcome]}"><title>{html.escape(bucket.label)}: {count}'
                f" {outcome}</title></rect>"
            )
        if index % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{top + plot + 16}" text-anchor="middle"'
                f' font-size="11" fill="#52606d">{html.escape(bucket.label[5:] or bucket.label)}'
                "</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _html_table(
    columns: Sequence[str],
    rows: list[tuple[str, list[str]]],
    numeric: set[str],
    notes: list[str] | None = None,
) -> str:
    """A table; ``notes[i]``, when not empty, is a full-width line under row ``i``."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for index, (css_class, cells) in enumerate(rows):
        tds = []
        for column, cell in zip(columns, cells, strict=True):
            css = _CELL_CLASSES.get(column, "num" if column in numeric else "")
            attribute = f' class="{css}"' if css else ""
            if column == "outcome":
                cell_html = f'<span class="outcome-{html.escape(cell)}">{html.escape(cell)}</span>'
            else:
                cell_html = html.escape(cell)
            tds.append(f"<td{attribute}>{cell_html}</td>")
        body.append(f'<tr class="{css_class}">' + "".join(tds) + "</tr>")
        note = notes[index] if notes else ""
        if note:
            body.append(
                f'<tr class="{css_class} note"><td colspan="{len(columns)}">'
                f"{html.escape(note)}</td></tr>"
            )
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def render_html(report: Report) -> str:
    """One self-contained page: inline CSS and SVG, no scripts, no external resources."""
    heading = html.escape(title(report))
    legend = "".join(
        f'<span><span class="swatch" style="background:{colour}"></span>{name}</span>'
        for name, colour in _COLOURS.items()
    )
    numeric = {"files", "rows", "size", "duration", "failed"}
    sections = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{heading}</title><style>{_CSS}</style></head><body>",
        f"<h1>{heading}</h1>",
        f'<p class="meta">Monitors: {html.escape(", ".join(report.monitors) or "-")}'
        f" · generated {html.escape(human_time(report.generated_at))}</p>",
        f'<p class="summary">{html.escape(report.summary.line())}</p>',
        "<h2>Exports received per "
        + ("week" if report.buckets and "-W" in report.buckets[0].label else "day")
        + "</h2>",
        _chart(report.buckets),
        f'<p class="legend">{legend}</p>',
        "<h2>Exports</h2>",
    ]
    if report.exports:
        # The error gets a line of its own under its export: a column would be too narrow.
        columns = EXPORT_COLUMNS[:-1]
        rows = [(e.outcome, export_cells(e)[:-1]) for e in report.exports]
        notes = [f"error: {export_cells(e)[-1]}" if e.error else "" for e in report.exports]
        sections.append(_html_table(columns, rows, numeric, notes))
    else:
        sections.append("<p>No exports were received in this period.</p>")
    file_rows = [
        (
            e.outcome,
            [
                f"{e.monitor}/{e.export_id if e.export_id is not None else '-'}",
                e.file_name or "-",
                f.name,
                f.export_type or "-",
                f"{f.rows:,}" if f.rows is not None else "-",
                format_size(f.bytes) if f.bytes is not None else "-",
                ", ".join(f.destinations) or "-",
            ],
        )
        for e in report.exports
        for f in e.file_details
    ]
    if file_rows:
        sections.append("<h2>Files</h2>")
        columns = ("export", "download", "file", "type", "rows", "size", "delivered to")
        sections.append(_html_table(columns, file_rows, numeric))
    if report.destinations:
        sections.append("<h2>Destinations</h2>")
        rows = [("", destination_cells(d)) for d in report.destinations]
        sections.append(_html_table(DESTINATION_COLUMNS, rows, numeric))
    sections.append("</body></html>")
    return "\n".join(sections) + "\n"


# --- mailing ----------------------------------------------------------------------------


def mail_report(monitors: Sequence[MonitorConfig], report: Report, to: Sequence[str]) -> str:
    """Send the report (text + HTML) through the first monitor with alert SMTP settings.

    Returns the name of the monitor whose settings were used. Raises
    :class:`UsageError` when none has any, or the SMTP errors of
    :func:`exportmon.notify.smtp.send_mail`.
    """
    sender = next((m for m in monitors if m.alerts.smtp_url), None)
    if sender is None:
        raise UsageError(
            "no SMTP server to send the report through",
            hint="set smtp_url (and to, smtp_user) in the [alerts] table of a monitor",
        )
    message = channels.new_message(
        sender.alerts,
        monitor=sender.name,
        subject=f"[exportmon] report {report.period}: {report.summary.line()}",
        text=render_text(report),
        html=render_html(report),
        to=list(to),
    )
    channels.send_mail(sender.alerts, message)
    return sender.name
