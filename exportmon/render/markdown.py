"""The report as Markdown: exports, their files and the destinations, as tables."""

from __future__ import annotations

from exportmon.actions.report import Report
from exportmon.render.cells import (
    DESTINATION_COLUMNS,
    EXPORT_COLUMNS,
    FILE_COLUMNS,
    destination_cells,
    export_cells,
    file_cells,
    title,
)


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
    files = [(export, file) for export in report.exports for file in export.file_details]
    if files:
        out += ["", "## Files", ""]
        out.append("| " + " | ".join(FILE_COLUMNS) + " |")
        out.append("|" + "---|" * len(FILE_COLUMNS))
        for export, file in files:
            out.append("| " + " | ".join(_md(c) for c in file_cells(export, file)) + " |")
    if report.destinations:
        out += ["", "## Destinations", ""]
        out.append("| " + " | ".join(DESTINATION_COLUMNS) + " |")
        out.append("|" + "---|" * len(DESTINATION_COLUMNS))
        for total in report.destinations:
            out.append("| " + " | ".join(_md(c) for c in destination_cells(total)) + " |")
    return "\n".join(out) + "\n"
