"""The tables `exportmon status` and `exportmon report` print for people.

Made for the width at hand (:mod:`exportmon.render.layout`): at 80 columns, or in a
pipe, they show the columns that matter most, say which are left out, never cut a
number, and shorten long text; ``wide`` shows everything.
"""

from __future__ import annotations

import shlex
import textwrap
from datetime import datetime

from rich.text import Text

from exportmon.actions.report import Report
from exportmon.actions.status import MONITOR_SCOPE, StatusReport
from exportmon.actions.steps import shell_word
from exportmon.render.cells import destination_cells, error_cell, export_label, file_cells
from exportmon.render.layout import MAX_LINES, Column, Laid, lay_out
from exportmon.units import format_duration, format_size, human_time

STATE_STYLES = {"ok": "green", "warning": "yellow", "error": "bold red", "unknown": "magenta"}
OUTCOME_STYLES = {"delivered": "green", "failed": "bold red", "pending": "yellow"}


def _names(header: str, cells: list[str], drop: int = 0) -> Column:
    """A column of names or paths: shortened in the middle when too long."""
    return Column(header, cells, drop=drop, text=True, wrap=False)


def when(text: str | None, now: datetime) -> str:
    """``2h ago`` / ``in 5h`` for people, ``-`` for never."""
    if not text:
        return "-"
    from exportmon.ledger import from_text

    seconds = (from_text(text) - now).total_seconds()
    if seconds >= 0:
        return f"in {format_duration(seconds)}"
    return f"{format_duration(-seconds)} ago"


def _count(value: int) -> str:
    return f"{value:,}"


def _paragraph(text: str, width: int, wide: bool, style: str | None = None) -> list[Text]:
    """``text`` wrapped to ``width``, at most a few lines unless ``wide``."""
    lines = textwrap.wrap(text, width, break_on_hyphens=False) if not wide else [text]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES]
        lines[-1] = lines[-1][: width - 1].rstrip() + "…"
    return [Text(line, style=style or "") for line in lines]


def _notes(hidden: list[str], shortened: bool, full: str, width: int) -> list[Text]:
    """Lines saying what is not shown, and how to see it."""
    what = []
    if hidden:
        what.append(f"{len(hidden)} column(s) left out ({', '.join(hidden)})")
    if shortened:
        what.append("long text shortened (…)")
    if not what:
        return []
    note = f"To fit {width} columns: {' and '.join(what)}; {full} shows everything."
    return [Text(line, style="dim") for line in textwrap.wrap(note, width)]


# --- status ------------------------------------------------------------------------------


def status_table(
    report: StatusReport, width: int, *, now: datetime, wide: bool = False
) -> list[Text]:
    """The lines of the status table, its notes and the overall line."""
    rows: list[dict[str, str]] = []
    for status in report.monitors:
        for row in status.exports:
            rows.append(
                {
                    "monitor": status.monitor,
                    "export": str(row.export_id) if row.export_id is not None else "-",
                    "state": row.state,
                    "reason": row.reason,
                    "last success": when(row.last_success, now),
                    "files": _count(row.files_delivered),
                    "rows": _count(row.rows_delivered),
                    "pending": _count(row.pending),
                    "last failure": when(row.last_failure, now),
                    "next expected": when(row.next_expected, now),
                }
            )
        for problem in status.problems:
            if problem.scope != MONITOR_SCOPE:
                continue
            blank = dict.fromkeys(("last success", "files", "rows", "pending"), "")
            rows.append(
                {
                    "monitor": status.monitor,
                    "export": "(config)" if problem.kind == "config" else "(monitor)",
                    "state": problem.state,
                    "reason": problem.reason,
                    **blank,
                    "last failure": "",
                    "next expected": "",
                }
            )
    states = [row["state"] for row in rows]

    def column(header: str, **how: object) -> Column:
        return Column(header, [row[header] for row in rows], **how)  # type: ignore[arg-type]

    columns = [
        column("monitor"),
        column("export"),
        Column("state", states, styles=[STATE_STYLES[s] for s in states]),
        column("reason", text=True, min_width=24),
        column("last success", drop=2),
        column("files", right=True, drop=4),
        column("rows", right=True, drop=3),
        column("pending", right=True, drop=5),
        column("last failure", drop=6),
        column("next expected", drop=7),
    ]
    laid = lay_out(columns, width, wide=wide)
    lines = list(laid.lines)
    places = destination_table(report, width, now=now, wide=wide)
    if places is not None:
        lines += [Text(""), *places.lines]
    summary = f"Overall: {report.state} - {report.reason}"
    overall = _paragraph(summary, width, wide)
    overall[0].stylize(
        STATE_STYLES[report.state], len("Overall: "), len(f"Overall: {report.state}")
    )
    lines += [Text(""), *overall]
    shortened = laid.shortened or overall[-1].plain.endswith("…")
    hidden = laid.hidden + [h for h in (places.hidden if places else []) if h not in laid.hidden]
    shortened = shortened or bool(places and places.shortened)
    retry, cut = _retry_lines(report, width, wide)
    return lines + retry + _notes(hidden, shortened or cut, "--wide (or --json)", width)


def destination_table(
    report: StatusReport, width: int, *, now: datetime, wide: bool = False
) -> Laid | None:
    """Each destination's state, when that tells more than the export rows: a monitor
    delivers to several destinations, one is failing, or one is not configured (an
    ad-hoc push); ``None`` otherwise."""
    found = [(status.monitor, d) for status in report.monitors for d in status.destinations]
    per_monitor = [len(status.destinations) for status in report.monitors]
    if not found or not (
        wide
        or max(per_monitor) > 1
        or any(d.state == "error" or not d.configured for _, d in found)
    ):
        return None
    states = [d.state for _, d in found]
    names = [d.destination + ("" if d.configured else " (ad hoc)") for _, d in found]
    columns = [
        Column("monitor", [monitor for monitor, _ in found]),
        Column("destination", names, text=True, wrap=False, min_width=28),
        Column("state", states, styles=[STATE_STYLES[s] for s in states]),
        Column("files", [_count(d.files_delivered) for _, d in found], right=True, drop=2),
        Column("last delivery", [when(d.last_success, now) for _, d in found], drop=3),
        Column("last error", [d.last_error or "-" for _, d in found], text=True, drop=1),
    ]
    return lay_out(columns, width, wide=wide)


def _retry_lines(report: StatusReport, width: int, wide: bool) -> tuple[list[Text], bool]:
    """How to retry the failing exports now: one command per monitor, as shell lines
    to paste; and whether a word too long for a line had to be shortened."""
    commands = list(dict.fromkeys(s.retry for s in report.monitors if s.retry))
    if not commands:
        return [], False
    intro = (
        "To retry the failing exports now (a run also retries them by itself once"
        " their config has changed):"
    )
    lines = [Text(line) for line in textwrap.wrap(intro, width)]
    cut = False
    for command in commands:
        shown, shortened = shell_lines(command, width, wide=wide)
        lines += [Text(line, style="bold") for line in shown]
        cut = cut or shortened
    return lines, cut


def shell_lines(
    command: str, width: int, *, wide: bool = False, indent: str = "  "
) -> tuple[list[str], bool]:
    """``command`` in lines of at most ``width`` columns, continued with ``\\`` between
    words (an option stays with its value), and whether a word had to be shortened in
    the middle to fit (never when ``wide``)."""
    pieces: list[str] = []
    for word in shlex.split(command):
        if pieces and pieces[-1] in ("-c", "--config"):
            pieces[-1] += " " + shell_word(word)
        else:
            pieces.append(shell_word(word))
    if wide:
        return [indent + " ".join(pieces)], False
    room = width - 2 * len(indent) - 2  # a continued line's indent and " \\"
    shortened = False
    for index, piece in enumerate(pieces):
        if len(piece) > room:
            head = (room - 1) // 2
            pieces[index] = piece[:head] + "…" + piece[len(piece) - (room - 1 - head) :]
            shortened = True
    lines: list[str] = []
    current = indent
    for piece in pieces:
        if current.strip() and len(current) + 1 + len(piece) + 2 > width:
            lines.append(current + " \\")
            current = indent * 2 + piece
        else:
            current = f"{current} {piece}" if current.strip() else current + piece
    return [*lines, current], shortened


# --- report ------------------------------------------------------------------------------


def report_table(report: Report, width: int, *, wide: bool = False) -> list[Text]:
    """The lines of the report: its exports, their files, the destinations, a summary."""
    from exportmon.render.cells import title

    lines = [Text(title(report), style="bold"), Text("")]
    hidden: list[str] = []
    shortened = False

    def section(heading: str, columns: list[Column], notes: list[str] | None = None) -> None:
        nonlocal shortened
        laid = lay_out(columns, width, wide=wide, notes=notes or (), note_style="red")
        lines.extend([Text(heading, style="bold underline"), *laid.lines, Text("")])
        hidden.extend(h for h in laid.hidden if h not in hidden)
        shortened = shortened or laid.shortened

    exports = report.exports
    if exports:
        outcomes = [e.outcome for e in exports]
        section(
            "Exports",
            [
                Column("received", [human_time(e.received_at) for e in exports]),
                Column("export", [export_label(e) for e in exports]),
                _names("download", [e.file_name or "-" for e in exports], drop=1),
                Column("outcome", outcomes, styles=[OUTCOME_STYLES[o] for o in outcomes]),
                Column("files", [str(e.files) for e in exports], right=True, drop=3),
                Column(
                    "rows",
                    [_count(e.rows) if e.rows is not None else "-" for e in exports],
                    right=True,
                    drop=2,
                ),
                Column(
                    "size",
                    [format_size(e.bytes) if e.bytes is not None else "-" for e in exports],
                    right=True,
                    drop=4,
                ),
                Column("delivered", [human_time(e.delivered_at) for e in exports], drop=6),
                Column(
                    "duration",
                    [
                        format_duration(e.duration_seconds)
                        if e.duration_seconds is not None
                        else "-"
                        for e in exports
                    ],
                    right=True,
                    drop=7,
                ),
                _names("destinations", [", ".join(e.destinations) or "-" for e in exports], drop=5),
            ],
            notes=[f"↳ {error_cell(e)}" if e.error else "" for e in exports],
        )
    else:
        lines += [Text("No exports were received in this period."), Text("")]

    files = [file_cells(e, f) for e in exports for f in e.file_details]
    if files:
        section(
            "Files",
            [
                Column("export", [cells[0] for cells in files]),
                _names("file", [cells[2] for cells in files]),
                Column("type", [cells[3] for cells in files], drop=2),
                Column("rows", [cells[4] for cells in files], right=True),
                Column("size", [cells[5] for cells in files], right=True, drop=1),
                _names("delivered to", [cells[6] for cells in files], drop=3),
                _names("download", [cells[1] for cells in files], drop=4),
            ],
        )

    if report.destinations:
        cells = [destination_cells(total) for total in report.destinations]
        section(
            "Destinations",
            [
                Column("monitor", [c[0] for c in cells], drop=2),
                _names("destination", [c[1] for c in cells]),
                Column("files", [c[2] for c in cells], right=True),
                Column("size", [c[3] for c in cells], right=True, drop=1),
                Column("failed", [c[4] for c in cells], right=True),
                Column("last delivery", [c[5] for c in cells], drop=3),
            ],
        )

    lines += _paragraph(report.summary.line(), width, wide, style="bold")
    return lines + _notes(hidden, shortened, "--wide", width)
