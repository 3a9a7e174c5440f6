"""The fields of a report as display cells, the same in every human format."""

from __future__ import annotations

from exportmon.actions.report import DestinationTotal, Report, ReportExport, ReportFile
from exportmon.units import format_duration, format_size, human_time

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
        error_cell(export),
    ]


FILE_COLUMNS = ("export", "download", "file", "type", "rows", "size", "delivered to")


def export_label(export: ReportExport) -> str:
    """``monitor/export id``, as the report shows an export."""
    return f"{export.monitor}/{export.export_id if export.export_id is not None else '-'}"


def file_cells(export: ReportExport, file: ReportFile) -> list[str]:
    """One file of an export as the display cells of :data:`FILE_COLUMNS`."""
    return [
        export_label(export),
        export.file_name or "-",
        file.name,
        file.export_type or "-",
        f"{file.rows:,}" if file.rows is not None else "-",
        format_size(file.bytes) if file.bytes is not None else "-",
        ", ".join(file.destinations + [f"({p})" for p in file.processing]) or "-",
    ]


def error_cell(export: ReportExport) -> str:
    """``step: error`` of a failed or pending export, empty when there is none."""
    return f"{export.error_step or '?'}: {export.error}" if export.error else ""


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
