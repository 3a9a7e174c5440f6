"""The report as one self-contained HTML page: inline CSS and an SVG chart, no scripts."""

from __future__ import annotations

import html
from collections.abc import Sequence

from exportmon.actions.report import Bucket, Report
from exportmon.render.cells import (
    DESTINATION_COLUMNS,
    EXPORT_COLUMNS,
    FILE_COLUMNS,
    destination_cells,
    error_cell,
    export_cells,
    file_cells,
    title,
)
from exportmon.units import human_time

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
        notes = [f"error: {error_cell(e)}" if e.error else "" for e in report.exports]
        sections.append(_html_table(columns, rows, numeric, notes))
    else:
        sections.append("<p>No exports were received in this period.</p>")
    file_rows = [(e.outcome, file_cells(e, f)) for e in report.exports for f in e.file_details]
    if file_rows:
        sections.append("<h2>Files</h2>")
        sections.append(_html_table(FILE_COLUMNS, file_rows, numeric))
    if report.destinations:
        sections.append("<h2>Destinations</h2>")
        rows = [("", destination_cells(d)) for d in report.destinations]
        sections.append(_html_table(DESTINATION_COLUMNS, rows, numeric))
    sections.append("</body></html>")
    return "\n".join(sections) + "\n"
