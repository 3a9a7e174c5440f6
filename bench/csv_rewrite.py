"""CSV rewrite throughput and memory: exportmon's engines next to cp, a plain csv module
loop, csvkit's csvformat and Miller.

The input is a generated export-like CSV (12 columns, empty values, quoted values with
commas, quotes, ``:`` and embedded ``\\n``/``\\r\\n``, non-ASCII text) of ``--csv-size``
(default 200 MB), made once and kept in ``--dir``. The job is the gem's: ``|`` between
values, ``:`` as quote character, ``##\\n`` after each record. Tools take turns for
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
* ``exportmon gem, reference engine``: the ``csv`` module engine the fast one must
  match byte for byte (checked after the runs), i.e. the figure before the fast engine.
* ``exportmon value hook``: gem with a Python value hook (``value.strip()``).

Peak RSS of the exportmon rows is also measured on a ``--rss-size`` file (default 1 GB,
made by repeating the data of the first file) to show that memory does not grow with
the file.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sys
from pathlib import Path

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

_DRIVER = """
import json, sys
from pathlib import Path
from exportmon.files import csv_fast
from exportmon.files.csv_rewrite import Dialect, rewrite_csv
source, target, options, engine = sys.argv[1:5]
if engine == "reference":
    csv_fast.supports = lambda *args: False
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
    parser.add_argument("--csv-size", default="200MB", help="input size (default 200MB)")
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
    size = parse_size(options.csv_size)
    source = folder / f"export-{size}.csv"
    generate(source, size)
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
    _goals(table)
    if options.quick:
        return [table]
    memory = _memory_check(options, folder, source, out)
    peak = max(row.peak_rss for row in memory.rows)
    table.goal(f"peak RSS < 150 MB on the big file ({peak / 1e6:.0f} MB)", peak < 150e6)
    return [table, memory]


def _check_outputs(table: Table, out: Path, engines: dict[str, dict]) -> None:
    same = engines["gem"]["sha256"] == engines["reference"]["sha256"]
    same_plain = _sha256(out / "plain.csv") == _sha256(out / "stdlib.csv")
    table.notes.append(
        f"output of the fast gem engine {'identical to' if same else 'DIFFERS from'} the "
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
    return Table(
        f"CSV rewrite of a {big_size / 1e9:.1f} GB file: memory does not grow with the file "
        "(one run each)",
        [Row(name, tool_runs, big_size) for name, tool_runs in runs.items()],
    )


def _goals(table: Table) -> None:
    names = [row.tool for row in table.rows]
    for dialect in ("plain", "gem", "replace_newlines"):
        name = f"exportmon {dialect}"
        table.goal(
            f"{name} >= 4x the stdlib loop ({table.ratio_of(name):.2f}x)",
            table.ratio_of(name) >= 4,
        )
        if "csvkit csvformat" in names:
            versus = table.ratio_of(name, "csvkit csvformat")
            table.goal(f"{name} >= 6x csvkit ({versus:.2f}x)", versus >= 6)
    hook = table.ratio_of("exportmon value hook")
    table.goal(f"value hook >= 0.7x the stdlib loop ({hook:.2f}x)", hook >= 0.7)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)
