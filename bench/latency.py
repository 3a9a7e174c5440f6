"""Latency: from the APPEND of an export mail to the delivered file, watching vs polling.

Runs as root (Dovecot drops to nobody). The test suite's Dovecot (IMAPS) runs on
127.0.0.1, its HTTPS server serves a ``--latency-size`` export-like CSV file (default
1 MB) and its FTP server receives it, both in processes of their own. The monitor
rewrites the file to ``|`` ``:`` ``##\\n`` and delivers it to a local folder and then
to FTP.

* ``exportmon run``: the watcher (a child process) waits with IMAP IDLE. After one
  mail to warm it up, ``--latency-mails`` export mails (default 20, each linking to its
  own copy of the file) are appended one at a time over an IMAP connection opened
  beforehand, each after a random pause of 0.5-1.5 s once the previous one is
  delivered. The clock starts just before the APPEND command and stops when the file
  is visible under its final name (checked every 2 ms): in the local folder, and on
  the FTP server (its home folder is on this machine).
* ``run --once``: one cron-style run with one new mail waiting, from the start of the
  process until the file is visible locally (``--latency-once`` runs, default 5).
* ``polling loop``: what a cron setup running ``run --once`` every
  ``--poll-interval`` seconds (default 60) gets. By default computed: a mail waits
  for the next run, uniformly between 0 and the interval, then that run takes as long
  as measured above. With ``--poll-loop-mails N`` it is measured instead: a loop
  starts ``run --once`` every interval and N mails are appended at random moments.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.csv_rewrite import generate
from bench.end_to_end import DIALECT, FTP_PASSWORD_ENV
from bench.harness import PYTHON, REPO, Row, Run, Table, work_dir
from bench.serving import ftp_server, mail_server, web_server
from exportmon.units import parse_size

sys.path.insert(0, str(REPO / "tests"))

from fetchkit import config_data, export_mail, imap_table, write_config

from servers.dovecot import MailUser

NAME = "latency"
#: How long a mail may take before the benchmark gives up.
TIMEOUT = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--latency-mails", type=int, default=20, help="mails measured (20)")
    parser.add_argument("--latency-size", default="1MB", help="size of the export (1MB)")
    parser.add_argument("--latency-once", type=int, default=5, help="run --once runs (5)")
    parser.add_argument(
        "--poll-interval", type=float, default=60.0, help="the polling loop's interval (60 s)"
    )
    parser.add_argument(
        "--poll-loop-mails",
        type=int,
        default=0,
        help="measure the polling loop with this many mails (default 0: compute it)",
    )


class Bench:
    """The servers, the monitor and the mails of one latency benchmark."""

    def __init__(
        self,
        scratch: Path,
        user: MailUser,
        web: dict[str, Any],
        ftp: dict[str, Any],
        ftp_home: Path,
    ) -> None:
        self.scratch = scratch
        self.user = user
        self.web = web
        self.ftp_home = ftp_home
        self.delivered = scratch / "delivered"
        self.env = dict(os.environ, PYTHONPATH=str(REPO), **{FTP_PASSWORD_ENV: ftp["password"]})
        data = config_data(
            scratch / "state",
            imap_table(user),
            ca_file=web["ca_file"],
            csv=dict(DIALECT),
            deliver={
                "to": str(self.delivered),
                "ftp_url": ftp["url"],
                "ftp_dir": "latency",
                "ftp_user": ftp["user"],
                "ftp_password_env": FTP_PASSWORD_ENV,
            },
        )
        self.config = write_config(scratch / "monitors", data, "777")
        self.sent = 0

    def mail(self) -> tuple[bytes, str]:
        """The next export mail and the name of the file it delivers."""
        self.sent += 1
        name = f"latency-{self.sent:04d}.csv"
        link = f"{self.web['base_url']}/e/{name}"
        return export_mail(link, token=f"latency-{self.sent}"), name

    def visible(self, name: str) -> tuple[Path, Path]:
        return self.delivered / name, self.ftp_home / "latency" / name

    def command(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "exportmon", "-q", "-c", str(self.config), *args]


def wait_until(condition: Callable[[], bool], started: float) -> float:
    """Seconds from ``started`` (a ``perf_counter``) until ``condition()`` holds."""
    while not condition():
        if time.perf_counter() - started > TIMEOUT:
            raise SystemExit(f"latency: nothing delivered within {TIMEOUT:.0f} s")
        time.sleep(0.002)
    return time.perf_counter() - started


def reap(process: subprocess.Popen[bytes]) -> Run:
    """Wait for ``process`` and return its peak RSS and CPU time (wall time 0)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return Run(0.0, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime)


def measure_watcher(bench: Bench, mails: int, log: Path) -> tuple[list[float], list[float], Run]:
    """Latencies (local folder, FTP) of ``mails`` mails with ``run`` watching."""
    rng = random.Random(5)
    with open(log, "wb") as stderr:
        watcher = subprocess.Popen(bench.command("run"), stderr=stderr, env=bench.env)
    local_times: list[float] = []
    ftp_times: list[float] = []
    try:
        with bench.user.imap() as client:
            for number in range(mails + 1):
                time.sleep(rng.uniform(0.5, 1.5))
                message, name = bench.mail()
                local, remote = bench.visible(name)
                started = time.perf_counter()
                client.append("INBOX", message)
                local_seconds = wait_until(local.exists, started)
                ftp_seconds = wait_until(remote.exists, started)
                if number:  # the first one warms the watcher up
                    local_times.append(local_seconds)
                    ftp_times.append(ftp_seconds)
                    print(
                        f"  mail {number}/{mails}: {local_seconds:.3f} s, FTP {ftp_seconds:.3f} s",
                        file=sys.stderr,
                    )
    finally:
        watcher.send_signal(signal.SIGTERM)
        usage = reap(watcher)
    if watcher.returncode != 0:
        raise SystemExit(f"exportmon run ended with {watcher.returncode}: see {log}")
    return local_times, ftp_times, usage


def measure_once(bench: Bench, runs: int) -> list[Run]:
    """``run --once`` with one new mail waiting: start of the process to the file visible."""
    results = []
    for _ in range(runs):
        message, name = bench.mail()
        bench.user.append(message)
        local, _ = bench.visible(name)
        started = time.perf_counter()
        process = subprocess.Popen(
            bench.command("run", "--once"), stderr=subprocess.DEVNULL, env=bench.env
        )
        seconds = wait_until(local.exists, started)
        usage = reap(process)
        if process.returncode != 0:
            raise SystemExit(f"exportmon run --once ended with {process.returncode}")
        results.append(Run(seconds, usage.peak_rss, usage.cpu_seconds))
    return results


def measure_polling_loop(bench: Bench, mails: int, interval: float) -> list[float]:
    """Latencies of ``mails`` mails appended at random moments while a loop runs ``run --once``."""
    stop = threading.Event()

    def loop() -> None:
        start = time.monotonic()
        while not stop.is_set():
            subprocess.run(bench.command("run", "--once"), env=bench.env, check=False)
            stop.wait(interval - (time.monotonic() - start) % interval)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    rng = random.Random(6)
    times = []
    try:
        for number in range(mails):
            time.sleep(rng.uniform(0, interval))
            message, name = bench.mail()
            local, _ = bench.visible(name)
            started = time.perf_counter()
            bench.user.append(message)
            times.append(wait_until(local.exists, started))
            print(f"  polling loop, mail {number + 1}/{mails}: {times[-1]:.1f} s", file=sys.stderr)
    finally:
        stop.set()
        thread.join()
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def spread(values: list[float]) -> str:
    return f"p90 {percentile(values, 0.9):.3f} s, max {max(values):.3f} s"


def run(options: argparse.Namespace) -> list[Table]:
    folder = work_dir(options, "latency")
    size = parse_size(options.latency_size)
    export = folder / f"export-{size}.csv"
    generate(export, size)
    total = options.latency_mails + 1 + options.latency_once + options.poll_loop_mails
    files = {f"/e/latency-{n:04d}.csv": export for n in range(1, total + 1)}

    with (
        mail_server("exportmon-bench-latency-") as (dovecot, scratch),
        web_server(scratch / "web-tls", files) as web,
        ftp_server(scratch / "ftp") as ftp,
    ):
        bench = Bench(scratch, dovecot.add_user(), web, ftp, scratch / "ftp")
        local, remote, watcher = measure_watcher(
            bench, options.latency_mails, folder / "watcher.log"
        )
        once = measure_once(bench, options.latency_once)
        looped = (
            measure_polling_loop(bench, options.poll_loop_mails, options.poll_interval)
            if options.poll_loop_mails
            else []
        )

    interval = options.poll_interval
    once_seconds = [r.seconds for r in once]
    # A mail waits for the next run (uniform over the interval), then that run's time.
    computed = [
        Run(min(once_seconds), 0, 0.0),
        Run(interval / 2 + statistics.median(once_seconds), 0, 0.0),
        Run(interval + max(once_seconds), 0, 0.0),
    ]
    computed_p90 = 0.9 * interval + statistics.median(once_seconds)
    watcher_rss = [Run(seconds, watcher.peak_rss, 0.0) for seconds in local]
    rows = [
        Row("exportmon run (IDLE), local folder", watcher_rss, note=spread(local)),
        Row("exportmon run (IDLE), FTP", [Run(s, 0, 0.0) for s in remote], note=spread(remote)),
        Row("run --once, start to file", once, note=spread(once_seconds)),
        Row(
            f"polling loop every {interval:g} s (computed)",
            computed,
            note=f"p90 {computed_p90:.1f} s, max {computed[-1].seconds:.1f} s",
        ),
    ]
    if looped:
        rows.append(
            Row(
                f"polling loop every {interval:g} s (measured)",
                [Run(s, 0, 0.0) for s in looped],
                note=f"{len(looped)} mails; {spread(looped)}",
            )
        )
    table = Table(
        f"Latency from APPEND to the delivered file, a {size / 1e6:,.0f} MB CSV rewritten "
        f"(IDLE: median of {len(local)} mails; run --once: {len(once)} runs)",
        rows,
        notes=[
            f"best and median are the lowest and the median latency. The watcher's peak RSS is "
            f"in its row; it used {watcher.cpu_seconds:.1f} CPU-s in all. The computed polling "
            f"loop: a mail waits for the next run (uniformly 0-{interval:g} s), then the run "
            "takes the run --once time above; its best, median and max are those of that sum",
        ],
    )
    median = statistics.median(local)
    loop_median = (
        statistics.median(looped) if looped else interval / 2 + statistics.median(once_seconds)
    )
    table.notes.append(
        f"the polling loop's median latency is {loop_median / median:,.0f}x the watcher's"
    )
    table.goal(f"median latency with run watching < 1 s ({median:.3f} s)", median < 1.0)
    return [table]
