"""Unzipping an export: exportmon's safe extraction next to Info-ZIP's ``unzip -o``.

The archive holds four CSV files of export-like data, ``--unzip-size`` uncompressed in
total (default 1 GB), deflated as exports come. ``unzip -o -q -d DIR`` and exportmon's
:func:`~exportmon.files.unzip.unzip` (a driver process: every entry checked, sizes
counted while inflating, CRC checked, SHA-256 of every file, fsync, extraction into a
staging folder renamed into place) take turns; both write to the same disk.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import zipfile
from pathlib import Path

from bench.csv_rewrite import generate
from bench.harness import PYTHON, REPO, Row, Table, Tool, compare, require, work_dir
from exportmon.units import parse_size

NAME = "unzip"
ENTRIES = ("organizations", "people", "sites", "requests")

_DRIVER = """
import sys
from pathlib import Path
from exportmon.files.unzip import ZipLimits, unzip
files = unzip(Path(sys.argv[1]), output_dir=Path(sys.argv[2]), limits=ZipLimits())
print(sum(f.bytes for f in files))
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--unzip-size", default="1GB", help="uncompressed size (default 1GB)")


def make_archive(folder: Path, size: int) -> Path:
    archive = folder / f"export-{size}.zip"
    if archive.exists():
        return archive
    source = folder / f"part-{size // len(ENTRIES)}.csv"
    generate(source, size // len(ENTRIES))
    print(f"  zipping {archive}", file=sys.stderr)
    temp = archive.with_suffix(".tmp")
    with zipfile.ZipFile(temp, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zipped:
        for number, kind in enumerate(ENTRIES):
            zipped.write(source, f"5-20240101-000000-{kind}.csv")
            print(f"    {number + 1}/{len(ENTRIES)}", file=sys.stderr)
    temp.replace(archive)
    source.unlink()
    return archive


def run(options: argparse.Namespace) -> list[Table]:
    folder = work_dir(options, "unzip")
    archive = make_archive(folder, parse_size(options.unzip_size))
    with zipfile.ZipFile(archive) as zipped:
        size = sum(info.file_size for info in zipped.infolist())
    tools = {}
    if unzip := require("unzip", "apt-get install unzip"):
        tools["unzip -o"] = Tool([unzip, "-o", "-q", archive, "-d", folder / "unzip"])
    tools["exportmon unzip"] = Tool(
        [PYTHON, "-c", _DRIVER, archive, folder / "exportmon"],
        stdout=folder / "exportmon.txt",
        env={"PYTHONPATH": str(REPO)},
    )

    def clean(_: str) -> None:
        for leftover in (folder / "unzip", folder / "exportmon"):
            shutil.rmtree(leftover, ignore_errors=True)

    runs = compare(tools, options.rounds, after_each=clean)
    table = Table(
        f"Unzip of a {archive.stat().st_size / 1e6:,.0f} MB zip, {size / 1e6:,.0f} MB "
        f"uncompressed in {len(ENTRIES)} CSV files (best of {options.rounds} alternating runs)",
        [Row(name, tool_runs, size) for name, tool_runs in runs.items()],
        baseline="unzip -o" if "unzip -o" in tools else None,
        notes=["MB/s of uncompressed output; exportmon also hashes and fsyncs every file"],
    )
    row = table.row("exportmon unzip")
    if table.baseline:
        ratio = table.ratio_of("exportmon unzip")
        table.goal(f"exportmon >= 0.9x unzip -o ({ratio:.2f}x)", ratio >= 0.9)
    table.goal(f"exportmon peak RSS < 100 MB ({row.peak_rss / 1e6:.0f} MB)", row.peak_rss < 100e6)
    return [table]
