"""Laying out tables for people, for the width at hand (a terminal; 80 columns in a pipe).

A table is a list of :class:`Column`. Columns that do not fit are left out, the
least important first, and the table says which; numbers and times are never
cut. Text columns are: sentences wrap, up to a few lines, and end in ``…``; names
and paths are shortened in the middle, where ``…`` stands for what is left out.
``wide`` shows every column and all of every text.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.cells import cell_len
from rich.text import Text

GAP = "  "
NOTE_INDENT = "    "
#: Lines a text cell may take before it is shortened.
MAX_LINES = 3
#: Narrowest a text column is made, by default, before other columns are left out.
MIN_TEXT_WIDTH = 16


@dataclass
class Column:
    header: str
    cells: list[str]
    right: bool = False
    #: Left out when the width is short: the highest first; 0 is never left out.
    drop: int = 0
    #: Text that may wrap and be shortened; other cells are shown whole.
    text: bool = False
    #: A Rich style per cell (None for plain).
    styles: list[str | None] = field(default_factory=list)
    #: Narrowest a text column is made before other columns are left out.
    min_width: int = MIN_TEXT_WIDTH
    #: Text too long for the column: wrapped (sentences) or shortened in the middle on
    #: one line (names and paths, whose start and end both matter).
    wrap: bool = True

    @property
    def natural(self) -> int:
        return max([cell_len(self.header), *(cell_len(cell) for cell in self.cells)])

    @property
    def narrowest(self) -> int:
        return min(self.natural, max(self.min_width, cell_len(self.header)))


@dataclass
class Laid:
    """A table laid out: its lines, and what had to give to fit."""

    lines: list[Text]
    hidden: list[str]
    shortened: bool


def lay_out(
    columns: Sequence[Column],
    width: int,
    *,
    wide: bool = False,
    notes: Sequence[str] = (),
    note_style: str | None = None,
) -> Laid:
    """``columns`` as lines of at most ``width`` cells (unless ``wide``).

    ``notes[i]``, when not empty, is a line of text under row ``i`` (an error, say),
    indented and wrapped to the width like the text columns.
    """
    shown = list(columns)
    hidden: list[str] = []

    def needed(cols: list[Column]) -> int:
        return sum(c.narrowest if c.text else c.natural for c in cols) + len(GAP) * (len(cols) - 1)

    while not wide and needed(shown) > width and any(c.drop for c in shown):
        victim = max((c for c in shown if c.drop), key=lambda c: c.drop)
        hidden.insert(0, victim.header)
        shown.remove(victim)
    widths = _widths(shown, width, wide)
    lines: list[Text] = [_header(shown, widths)]
    shortened = False
    rows = len(shown[0].cells) if shown else 0
    for index in range(rows):
        row_lines, cut = _row(shown, widths, index, wide)
        lines += row_lines
        shortened = shortened or cut
        note = notes[index] if index < len(notes) else ""
        if note:
            wrapped, cut = _wrap(note, max(width - len(NOTE_INDENT), MIN_TEXT_WIDTH), wide)
            lines += [Text(NOTE_INDENT + part, style=note_style or "") for part in wrapped]
            shortened = shortened or cut
    return Laid(lines=lines, hidden=hidden, shortened=shortened)


def _widths(shown: list[Column], width: int, wide: bool) -> list[int]:
    widths = [c.narrowest if c.text and not wide else c.natural for c in shown]
    if wide:
        return widths
    spare = width - sum(widths) - len(GAP) * (len(shown) - 1)
    # Share what is left among the text columns that want more, one cell at a time.
    wanting = [i for i, column in enumerate(shown) if column.text]
    while spare > 0 and wanting:
        for index in list(wanting):
            if spare <= 0:
                break
            if widths[index] >= shown[index].natural:
                wanting.remove(index)
                continue
            widths[index] += 1
            spare -= 1
    return widths


def _pad(text: str, width: int, right: bool) -> str:
    room = max(width - cell_len(text), 0)
    return " " * room + text if right else text + " " * room


def _header(shown: list[Column], widths: list[int]) -> Text:
    line = Text()
    for index, (column, width) in enumerate(zip(shown, widths, strict=True)):
        if index:
            line.append(GAP)
        line.append(_pad(column.header, width, column.right), style="bold")
    line.rstrip()
    return line


def _wrap(text: str, width: int, wide: bool) -> tuple[list[str], bool]:
    if wide or cell_len(text) <= width:
        return [text], False
    lines = textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]
    if len(lines) <= MAX_LINES:
        return lines, False
    kept = lines[:MAX_LINES]
    kept[-1] = kept[-1][: width - 1].rstrip() + "…"
    return kept, True


def _middle(text: str, width: int, wide: bool) -> tuple[list[str], bool]:
    if wide or cell_len(text) <= width:
        return [text], False
    head = (width - 1) // 2
    tail = width - 1 - head
    return [text[:head] + "…" + (text[-tail:] if tail else "")], True


def _row(shown: list[Column], widths: list[int], index: int, wide: bool) -> tuple[list[Text], bool]:
    cells: list[list[str]] = []
    cut = False
    for column, width in zip(shown, widths, strict=True):
        if column.text:
            wrapped, shortened = (_wrap if column.wrap else _middle)(
                column.cells[index], width, wide
            )
            cut = cut or shortened
            cells.append(wrapped)
        else:
            cells.append([column.cells[index]])
    lines = []
    for line_no in range(max(len(c) for c in cells)):
        line = Text()
        for position, (column, width, parts) in enumerate(zip(shown, widths, cells, strict=True)):
            if position:
                line.append(GAP)
            part = parts[line_no] if line_no < len(parts) else ""
            style = column.styles[index] if column.styles and line_no == 0 else None
            line.append(_pad(part, width, column.right), style=style)
        line.rstrip()
        lines.append(line)
    return lines, cut
