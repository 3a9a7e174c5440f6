"""Run exportmon's benchmarks and print a table per benchmark.

    .venv/bin/python -m bench                      # all of them (about 15 minutes)
    .venv/bin/python -m bench --quick              # small sizes, one round: a smoke test
    .venv/bin/python -m bench csv download         # some of them
    .venv/bin/python -m bench --markdown           # tables for the README

Exits 1 when a goal is missed (not with ``--quick``, whose sizes are too
small for them). Needs the benchmark tools: ``pip install -e '.[bench]'`` (csvkit and
the test tools) and, as root, ``apt-get install miller unzip curl``; Dovecot for
``poll``, ``latency`` and ``e2e`` (as the tests); OpenSSH (server and client) and root
for ``sftp``. Each tool runs in its own process;
tools take turns for ``--rounds`` rounds and the tables show the best and the median
(the machine may be busy). Not tests: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import (
    csv_rewrite,
    download_speed,
    end_to_end,
    graph_poll,
    latency,
    poll_cost,
    sftp_upload,
    unzip_speed,
)

BENCHMARKS = {
    module.NAME: module
    for module in (
        csv_rewrite,
        download_speed,
        unzip_speed,
        poll_cost,
        graph_poll,
        latency,
        end_to_end,
        sftp_upload,
    )
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__.splitlines()[0], epilog=None
    )
    parser.add_argument(
        "names", nargs="*", choices=[[], *BENCHMARKS], help="benchmarks to run (default: all)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes and one round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument(
        "--dir", type=Path, default=Path("/tmp/exportmon-bench"), help="where inputs are kept"
    )
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    for module in BENCHMARKS.values():
        module.add_arguments(parser)
    options = parser.parse_args(argv)
    if options.quick:
        options.rounds = 1
        options.csv_sizes, options.rss_size = "20MB", "20MB"
        options.download_size = options.unzip_size = options.sftp_size = "50MB"
        options.big = 2_000
        options.graph_big = 2_000
        options.e2e_size, options.e2e_exports = "20MB", 10
        options.latency_mails, options.latency_once = 3, 1
    names = options.names or list(BENCHMARKS)
    tables = []
    for name in names:
        started = time.perf_counter()
        print(f"{name}: running", file=sys.stderr)
        for table in BENCHMARKS[name].run(options):
            tables.append(table)
            print(table.markdown() if options.markdown else table.text(), flush=True)
            print(flush=True)
        print(f"{name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if options.quick:
        print("--quick: sizes too small for the goals (start-up dominates); a smoke test only")
        return 0
    missed = [text for table in tables for text, met in table.goals if not met]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
