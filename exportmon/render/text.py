"""The report as plain text: the text part of the mailed report, readable anywhere."""

from __future__ import annotations

from exportmon.actions.report import Report
from exportmon.render.cells import EXPORT_COLUMNS, destination_cells, export_cells, title


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
            to = destination_cells(total)
            lines.append(f"  {to[0]}: {to[1]}: {to[2]} files, {to[3]}, {to[4]} failed")
    return "\n".join(lines) + "\n"
