"""CSV rewrite throughput, memory and install size: exportmon's engines next to cp, a
plain csv module loop, csvkit's csvformat and Miller.

The inputs are generated export-like CSVs (12 columns, empty values, quoted values with
commas, quotes, ``:`` and embedded ``\\n``/``\\r\\n``, non-ASCII text) of each of
``--csv-sizes`` (default 60 MB and 200 MB), made once and kept in ``--dir``. The job
is the gem's: ``|`` between values, ``:`` as quote character, ``##\\n`` after each
record. Tools take turns for
``--rounds`` rounds. Every tool writes to disk; exportmon also fsyncs (it renames a
complete file into place), the others do not.

Rows:

* ``cp``: the disk's limit.
* ``stdlib loop``: ``csv.reader`` → ``csv.writer`` with the target dialect, the
  baseline of the goals.
* ``csvkit csvformat -D '|' -Q : -M '##\\n'``.
* ``Miller``: it cannot set the quote character nor the CSV line ending, so it writes
  ``|`` with ``"`` quotes and ``\\n``: close to the job, not the same output.
* ``exportmon plain`` (minimal quoting), ``gem`` (``--preset itrp-gem``: empty values
  quoted) and ``replace_newlines`` (gem plus ``<newline>`` for line breaks in values),
  each through :func:`~exportmon.files.csv_rewrite.rewrite_csv` in a small driver
  process (the CLI adds about 0.4 s of start-up, see ``exportmon CLI gem``).
* ``exportmon gem, reference engine``: the pure-Python engine
  (``EXPORTMON_CSV_ENGINE=python``) the compiled one must match byte for byte (checked
  after the runs).
* ``exportmon value hook``: gem with a Python value hook (``value.strip()``).

Peak RSS of the exportmon rows is also measured on a ``--rss-size`` file (default 1 GB,
made by repeating the data of the first file) to show that memory does not grow with
the file, and the size of a fresh virtualenv with ``pip install .`` (``du``) against
the figure before the compiled engine replaced polars.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.harness import PYTHON, REPO, Row, Table, Tool, compare, python_tool, require, work_dir
from exportmon.units import parse_size

NAME = "csv"

GEM_JOB = {"col_sep": "|", "quote_char": ":", "row_sep": "##\n"}
DIALECTS = {
    "plain": dict(GEM_JOB),
    "gem": dict(GEM_JOB, quoting="gem"),
    "replace_newlines": dict(GEM_JOB, quoting="gem", replace_newlines="<newline>"),
    "value hook": dict(GEM_JOB, quoting="gem", value_hook="bench.hooks:strip"),
}

#: ``du -s`` of a fresh virtualenv with ``pip install .`` when polars was the fast engine
#: (measured on this machine at commit a88587f: 236 MB, of which polars 181 MB).
INSTALL_BEFORE = 236e6

_DRIVER = """
import json, os, sys
from pathlib import Path
source, target, options, engine = sys.argv[1:5]
os.environ["EXPORTMON_CSV_ENGINE"] = "python" if engine == "reference" else "c"
from exportmon.files.csv_rewrite import Dialect, rewrite_csv
result = rewrite_csv(Path(source), Path(target), Dialect(**json.loads(options)))
print(json.dumps({"engine": result.engine, "sha256": result.sha256, "records": result.records}))
"""

_STDLIB_LOOP = """
import csv, sys
with open(sys.argv[1], newline="", encoding="utf-8") as source, \\
        open(sys.argv[2], "w", newline="", encoding="utf-8") as target:
    writer = csv.writer(target, delimiter="|", quotechar=":", lineterminator="##\\n")
    for row in csv.reader(source):
        writer.writerow(row)
"""

_WORDS = [
    *("alpha", "beta", "gamma", "delta", "Widget", "Data", "Center,", "Inc.", "Houston"),
    *("TX", "street", "fax", "Zürich", '"quoted"', "09:00", "x|y", "São", "Paulo,"),
    *("Brasil", "12.5", "-3", "naïve", "café", "Ærø"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--csv-sizes", default="60MB,200MB", help="input sizes (default 60MB,200MB)"
    )
    parser.add_argument("--rss-size", default="1GB", help="size of the memory check (1GB)")


def generate(path: Path, size: int) -> None:
    """An export-like CSV of about ``size`` bytes (deterministic)."""
    if path.exists() and path.stat().st_size >= size:
        return
    print(f"  generating {path} ({size / 1e6:.0f} MB)", file=sys.stderr)
    rng = random.Random(7)
    temp = path.with_suffix(".tmp")
    with open(temp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(
            [
                *("ITRP ID", "Source", "Source ID", "Disabled", "Name", "Address", "City"),
                *("State", "Zip", "Country", "Time Zone", "Remarks"),
            ]
        )
        number = 0
        while handle.tell() < size:
            rows = []
            for _ in range(1000):
                number += 1
                remarks = " ".join(rng.choices(_WORDS, k=rng.randint(0, 14)))
                if number % 7 == 0:
                    remarks += "\nEmail: someone@example.com"
                if number % 50 == 0:
                    remarks += "\r\nSecond line, with a comma"
                rows.append(
                    [
                        number,
                        "" if number % 3 else "import",
                        "" if number % 3 else f"X{number}",
                        number % 2,
                        " ".join(rng.choices(_WORDS, k=3)),
                        f"{rng.randint(1, 9999)} {rng.choice(_WORDS)} Lane",
                        rng.choice(_WORDS),
                        "TX",
                        rng.randint(10000, 99999),
                        "" if number % 5 == 0 else "US",
                        "Central Time (US & Canada)",
                        remarks,
                    ]
                )
            writer.writerows(rows)
    temp.replace(path)


def repeat(source: Path, path: Path, size: int) -> None:
    """``source``'s records over and over up to ``size`` bytes (its header once)."""
    if path.exists() and path.stat().st_size >= size:
        return
    print(f"  making {path} ({size / 1e6:.0f} MB)", file=sys.stderr)
    body = source.read_bytes()
    body = body[body.index(b"\n") + 1 :]
    temp = path.with_suffix(".tmp")
    with open(source, "rb") as head, open(temp, "wb") as out:
        out.write(head.readline())
        while out.tell() < size:
            out.write(body)
    temp.replace(path)


def _exportmon(source: Path, target: Path, dialect: str, engine: str, report: Path) -> Tool:
    options = json.dumps(DIALECTS[dialect])
    return Tool(
        [PYTHON, "-c", _DRIVER, source, target, options, engine],
        stdout=report,
        env={"PYTHONPATH": str(REPO)},
    )


def run(options: argparse.Namespace) -> list[Table]:
    folder = work_dir(options, "csv")
    sizes = [parse_size(text) for text in options.csv_sizes.split(",")]
    tables = []
    source = folder / f"export-{sizes[-1]}.csv"
    for size in sizes:
        source = folder / f"export-{size}.csv"
        generate(source, size)
        tables.append(_speed(options, folder, source, goal=8 if size >= 150e6 else 4))
    if options.quick:
        return tables
    # The memory check runs on the largest file generated above.
    memory = _memory_check(options, folder, source, folder / "out")
    _install_size(memory, folder)
    tables.append(memory)
    return tables


def _speed(options: argparse.Namespace, folder: Path, source: Path, goal: float) -> Table:
    size = source.stat().st_size
    out = folder / "out"
    out.mkdir(exist_ok=True)

    tools: dict[str, Tool] = {"cp": Tool(["cp", source, out / "cp.csv"])}
    tools["stdlib loop"] = python_tool(_STDLIB_LOOP, source, out / "stdlib.csv")
    if csvformat := require("csvformat", "pip install -e '.[bench]'"):
        tools["csvkit csvformat"] = Tool(
            [csvformat, "-D", "|", "-Q", ":", "-M", "##\n", source], stdout=out / "csvkit.csv"
        )
    if mlr := require("mlr", "apt-get install miller"):
        tools['Miller (| " \\n)'] = Tool(
            [
                *(mlr, "--csv", "--implicit-csv-header", "--headerless-csv-output"),
                *("--ofs", "|", "cat", source),
            ],
            stdout=out / "miller.csv",
        )
    reports = {}
    for dialect in ("plain", "gem", "replace_newlines"):
        reports[dialect] = out / f"{dialect}.json"
        tools[f"exportmon {dialect}"] = _exportmon(
            source, out / f"{dialect}.csv", dialect, "fast", reports[dialect]
        )
    reports["reference"] = out / "reference.json"
    tools["exportmon gem, reference engine"] = _exportmon(
        source, out / "reference.csv", "gem", "reference", reports["reference"]
    )
    reports["value hook"] = out / "hook.json"
    tools["exportmon value hook"] = _exportmon(
        source, out / "hook.csv", "value hook", "fast", reports["value hook"]
    )
    tools["exportmon CLI gem"] = Tool(
        [
            *(PYTHON, "-m", "exportmon", "-q", "rewrite-csv", "--output-dir", out / "cli"),
            *("--preset", "itrp-gem", "--col-sep", "|", "--quote-char", ":", "--row-sep"),
            *(r"##\n", source),
        ],
        stdout=out / "cli.txt",
        env={"PYTHONPATH": str(REPO)},
    )

    runs = compare(tools, options.rounds)
    table = Table(
        f"CSV rewrite, {size / 1e6:.0f} MB export-like CSV to | : ##\\n "
        f"(best of {options.rounds} alternating runs)",
        [Row(name, tool_runs, size) for name, tool_runs in runs.items()],
        baseline="stdlib loop",
    )
    engines = {name: json.loads(path.read_text()) for name, path in reports.items()}
    table.notes.append(
        "engines: " + ", ".join(f"{name} {report['engine']}" for name, report in engines.items())
    )
    _check_outputs(table, out, engines)
    _goals(table, goal)
    return table


def _check_outputs(table: Table, out: Path, engines: dict[str, dict[str, Any]]) -> None:
    same = engines["gem"]["sha256"] == engines["reference"]["sha256"]
    same_plain = _sha256(out / "plain.csv") == _sha256(out / "stdlib.csv")
    table.notes.append(
        f"output of the compiled gem engine {'identical to' if same else 'DIFFERS from'} the "
        f"reference engine's; exportmon plain {'identical to' if same_plain else 'DIFFERS from'}"
        " the stdlib loop's"
    )
    table.goal("gem output byte-identical to the reference engine", same)
    table.goal("plain output byte-identical to the stdlib loop", same_plain)


def _memory_check(options: argparse.Namespace, folder: Path, source: Path, out: Path) -> Table:
    size = parse_size(options.rss_size)
    big = folder / f"export-{size}.csv"
    repeat(source, big, size)
    big_size = big.stat().st_size
    tools = {
        f"exportmon {dialect}": _exportmon(big, out / "big.csv", dialect, "fast", out / "big.json")
        for dialect in ("plain", "gem", "replace_newlines")
    }
    runs = compare(tools, 1, after_each=lambda _: _unlink(out / "big.csv"))
    table = Table(
        f"CSV rewrite of a {big_size / 1e9:.1f} GB file: memory does not grow with the file "
        "(one run each)",
        [Row(name, tool_runs, big_size) for name, tool_runs in runs.items()],
    )
    peak = max(row.peak_rss for row in table.rows)
    table.goal(f"peak RSS <= 60 MB on the big file ({peak / 1e6:.0f} MB)", peak <= 60e6)
    return table


def _install_size(table: Table, folder: Path) -> None:
    """``du -s`` of a fresh virtualenv holding ``pip install .`` of this checkout, as a
    note and a goal of ``table``."""
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        venv = Path(scratch) / "venv"
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run(
            [venv / "bin" / "python", "-m", "pip", "install", "-q", REPO],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        du = subprocess.run(["du", "-sk", venv], check=True, capture_output=True, text=True)
        size = int(du.stdout.split()[0]) * 1024
    saved = INSTALL_BEFORE - size
    table.notes.append(
        f"install (a fresh virtualenv with pip install ., du -s): {size / 1e6:.0f} MB, "
        f"{INSTALL_BEFORE / 1e6:.0f} MB with polars as the fast engine"
    )
    table.goal(f"install >= 150 MB smaller ({saved / 1e6:.0f} MB)", saved >= 150e6)


def _goals(table: Table, goal: float) -> None:
    plain = table.ratio_of("exportmon plain")
    table.goal(f"exportmon plain >= {goal:g}x the stdlib loop ({plain:.2f}x)", plain >= goal)
    plain_time = table.row("exportmon plain").best
    for dialect in ("gem", "replace_newlines"):
        slower = table.row(f"exportmon {dialect}").best / plain_time - 1
        table.goal(
            f"exportmon {dialect} within 20 % of plain ({slower * 100:+.0f} %)", slower <= 0.2
        )
    hook = table.ratio_of("exportmon value hook")
    table.goal(f"value hook >= 0.8x the stdlib loop ({hook:.2f}x)", hook >= 0.8)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
