"""What every benchmark shares: running tools as child processes, measuring them, tables.

Each tool runs as its own child process, wrapped by a small Python process that reports
the child's wall time, CPU time and peak RSS (``getrusage(RUSAGE_CHILDREN)`` in the
wrapper, so the benchmark's own memory is never counted). Tools take turns round after
round (:func:`compare`), so a busy machine slows them all alike, and a table shows each
tool's best and median time, throughput, peak RSS and its ratio to a baseline.

A benchmark module has ``NAME``, ``add_arguments(parser)`` and ``run(options) ->
list[Table]``; ``python -m bench`` runs them all (see ``bench/__main__.py``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: Runs argv[2:] with stdout to argv[1] (or inherited when empty) and prints its wall
#: time, peak RSS in bytes and CPU seconds.
_WRAPPER = """
import resource, subprocess, sys, time
out = open(sys.argv[1], "wb") if sys.argv[1] else None
started = time.perf_counter()
code = subprocess.run(sys.argv[2:], stdout=out).returncode
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(code, seconds, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime, file=sys.stderr)
"""


@dataclass(frozen=True)
class Run:
    """One run of one tool."""

    seconds: float
    peak_rss: int
    cpu_seconds: float


@dataclass(frozen=True)
class Tool:
    """A command to measure; ``stdout`` is a file its output goes to."""

    command: Sequence[str | os.PathLike[str]]
    stdout: Path | None = None
    env: Mapping[str, str] | None = None


class ToolFailed(Exception):
    pass


def measure(tool: Tool) -> Run:
    """Run ``tool`` once in a child process and measure it."""
    env = dict(os.environ, **(tool.env or {}))
    done = subprocess.run(
        [PYTHON, "-c", _WRAPPER, str(tool.stdout or ""), *map(str, tool.command)],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    *_, last = done.stderr.strip().splitlines() or [""]
    fields = last.split()
    if len(fields) != 4 or fields[0] != "0":
        raise ToolFailed(f"{' '.join(map(str, tool.command))} failed:\n{done.stderr[-2000:]}")
    return Run(float(fields[1]), int(fields[2]), float(fields[3]))


def compare(
    tools: Mapping[str, Tool],
    rounds: int,
    *,
    after_each: Callable[[str], None] | None = None,
    progress: bool = True,
) -> dict[str, list[Run]]:
    """Every tool ``rounds`` times, taking turns; ``after_each(name)`` cleans up.

    After each run the page cache is written out (``sync``, not timed), so that no tool
    pays for writing out what the one before it left in memory.
    """
    runs: dict[str, list[Run]] = {name: [] for name in tools}
    for round_number in range(rounds):
        for name, tool in tools.items():
            if progress:
                print(f"  round {round_number + 1}/{rounds}: {name}", file=sys.stderr)
            runs[name].append(measure(tool))
            if after_each is not None:
                after_each(name)
            os.sync()
    return runs


@dataclass
class Row:
    tool: str
    runs: list[Run]
    #: Bytes processed per run, for MB/s.
    size: int | None = None
    note: str = ""
    #: The row this one's ratio is taken against, if not the table's baseline.
    versus: str | None = None

    @property
    def best(self) -> float:
        return min(run.seconds for run in self.runs)

    @property
    def median(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def peak_rss(self) -> int:
        return max(run.peak_rss for run in self.runs)

    @property
    def cpu(self) -> float:
        return min(run.cpu_seconds for run in self.runs)


@dataclass
class Table:
    """One benchmark's results: rows, the row others are compared to, and goal checks."""

    title: str
    rows: list[Row]
    baseline: str | None = None
    #: "speed" (baseline seconds / seconds, higher is faster) or "cost" (seconds /
    #: baseline seconds, for the poll benchmark).
    ratio: str = "speed"
    notes: list[str] = field(default_factory=list)
    goals: list[tuple[str, bool]] = field(default_factory=list)

    def row(self, tool: str) -> Row:
        return next(row for row in self.rows if row.tool == tool)

    def ratio_of(self, tool: str, baseline: str | None = None) -> float:
        row = self.row(tool)
        base = self.row(baseline or row.versus or self.baseline or self.rows[0].tool)
        if self.ratio == "cost":
            return row.best / base.best
        return base.best / row.best

    def goal(self, text: str, met: bool) -> None:
        self.goals.append((text, met))

    def _cells(self, row: Row) -> list[str]:
        mbps = f"{row.size / row.best / 1e6:,.0f}" if row.size else ""
        ratio = f"{self.ratio_of(row.tool):.2f}x" if self.baseline or row.versus else ""
        return [
            row.tool,
            f"{row.best:.3f}" if row.best < 1 else f"{row.best:.2f}",
            f"{row.median:.3f}" if row.median < 1 else f"{row.median:.2f}",
            mbps,
            f"{row.peak_rss / 1e6:,.0f} MB" if row.peak_rss else "",
            f"{row.cpu:.2f}" if row.cpu else "",
            ratio,
            row.note,
        ]

    _HEADERS = ("tool", "best s", "median s", "MB/s", "peak RSS", "CPU s", "ratio", "")

    def text(self) -> str:
        cells = [list(self._HEADERS)] + [self._cells(row) for row in self.rows]
        widths = [max(len(line[i]) for line in cells) for i in range(len(self._HEADERS))]
        lines = [f"== {self.title}"]
        for line in cells:
            lines.append(
                "  ".join(
                    cell.ljust(width) if i in (0, 7) else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(line, widths, strict=True))
                ).rstrip()
            )
        if ratio := self._ratio_sentence():
            lines.append(f"ratio: {ratio}")
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"goal {'met' if met else 'NOT met'}: {text}" for text, met in self.goals]
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(h or "note" for h in self._HEADERS) + " |")
        lines.append("|" + "---|" * len(self._HEADERS))
        lines += [
            "| " + " | ".join(cell.replace("|", "\\|") for cell in self._cells(row)) + " |"
            for row in self.rows
        ]
        lines.append("")
        if ratio := self._ratio_sentence():
            lines.append(f"Ratio: {ratio}.")
        lines += [f"{note}" for note in self.notes]
        lines += [f"- {'met' if met else '**not met**'}: {text}" for text, met in self.goals]
        return "\n".join(lines)

    def _ratio_sentence(self) -> str | None:
        words = "seconds divided by the seconds of" if self.ratio == "cost" else "speed relative to"
        if self.baseline:
            return f"{words} {self.baseline}"
        if any(row.versus for row in self.rows):
            return f"{words} the row named in the note"
        return None


def python_tool(code: str, *args: object, env: Mapping[str, str] | None = None) -> Tool:
    """A Python snippet run by this interpreter (the repository importable)."""
    return Tool([PYTHON, "-c", code, *map(str, args)], env={"PYTHONPATH": str(REPO), **(env or {})})


def require(program: str, hint: str) -> str | None:
    """The path of ``program``, or None after saying how to get it."""
    path = shutil.which(program) or shutil.which(program, path=str(Path(PYTHON).parent))
    if path is None:
        print(f"  {program} not found ({hint}): its row is left out", file=sys.stderr)
    return path


def work_dir(options: argparse.Namespace, name: str) -> Path:
    folder = Path(options.dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder
