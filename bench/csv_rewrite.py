"""Benchmark: exportmon's CSV rewrite against a plain csv.reader → csv.writer loop.

    .venv/bin/python bench/csv_rewrite.py [--mb 80] [--dir /tmp]

Generates an export-like CSV (quoted values with commas and embedded newlines,
empty values, numbers) of about ``--mb`` MB once, then times each variant a few
times and prints the best wall time and MB/s. Not a test: numbers depend on the
machine.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from pathlib import Path

from exportmon.files.csv_rewrite import Dialect, rewrite_csv


def generate(path: Path, megabytes: int) -> None:
    rng = random.Random(7)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "Widget",
        "Data",
        "Center,",
        "Inc.",
        "Houston",
        "TX",
        "street",
        "fax",
    ]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["ITRP ID", "Source", "Source ID", "Name", "Remarks", "Amount", "City"])
        row = 0
        while handle.tell() < megabytes * 1_000_000:
            row += 1
            remarks = " ".join(rng.choices(words, k=rng.randint(0, 12)))
            if row % 7 == 0:
                remarks += "\nEmail: someone@example.com"
            writer.writerow(
                [
                    row,
                    "",
                    "",
                    " ".join(rng.choices(words, k=3)),
                    remarks,
                    rng.random() * 1000,
                    rng.choice(words),
                ]
            )


def plain_loop(source: Path, target: Path) -> None:
    with (
        open(source, newline="", encoding="utf-8") as reader_file,
        open(target, "w", newline="", encoding="utf-8") as writer_file,
    ):
        writer = csv.writer(writer_file, lineterminator="\n")
        for row in csv.reader(reader_file):
            writer.writerow(row)


def best_times(runs: int, variants: dict) -> dict[str, float]:
    """The best of ``runs`` wall times per variant, the variants taking turns (fairer on a
    busy machine than running each one in a block)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(runs):
        for name, work in variants.items():
            start = time.perf_counter()
            work()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=80)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    source = args.dir / f"exportmon-bench-{args.mb}mb.csv"
    if not source.exists():
        generate(source, args.mb)
    size = source.stat().st_size / 1e6
    target = args.dir / "exportmon-bench-out.csv"
    variants = {
        "stdlib csv.reader -> csv.writer loop": lambda: plain_loop(source, target),
        "rewrite_csv plain (minimal, ',')": lambda: rewrite_csv(source, target, Dialect()),
        "rewrite_csv plain ('|', \\r\\n)": lambda: rewrite_csv(
            source, target, Dialect(col_sep="|", row_sep="\r\n")
        ),
        "rewrite_csv gem preset (|, ##\\n, :)": lambda: rewrite_csv(
            source, target, Dialect(col_sep="|", row_sep="##\n", quote_char=":", quoting="gem")
        ),
        "rewrite_csv replace_newlines": lambda: rewrite_csv(
            source, target, Dialect(replace_newlines=" ")
        ),
    }
    print(f"input {source} ({size:.1f} MB), best of {args.runs} runs")
    baseline = None
    for name, seconds in best_times(args.runs, variants).items():
        baseline = baseline or seconds
        print(f"{name:45s} {seconds:6.2f} s  {size / seconds:6.1f} MB/s  x{baseline / seconds:.2f}")
    target.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
