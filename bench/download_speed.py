"""Download throughput and peak memory of exportmon's downloader, next to curl.

Run from the repository root:

    .venv/bin/python bench/download_speed.py              # 1 GB over HTTP and HTTPS
    .venv/bin/python bench/download_speed.py --size 200MB

Serves one file of random bytes from the test suite's web server on 127.0.0.1
(plain HTTP uses sendfile; HTTPS uses the trustme test CA), downloads it with
``curl -o`` and with ``exportmon.download.download`` (each in its own child
process, so peak RSS is measured per download), alternating over ``--rounds``
rounds and keeping each tool's best (the machine may be busy), and prints
seconds, MB/s, the exportmon/curl throughput ratio, CPU seconds and peak RSS.
Both write to the same disk. The test server runs in this process, so on a
2-CPU machine it takes one core and the client gets the other.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from exportmon.units import parse_size  # noqa: E402
from servers.tlsca import LocalCA  # noqa: E402
from servers.web import WebServer  # noqa: E402

CHILD = """
import sys
from pathlib import Path
from exportmon.download import DownloadSettings, download
settings = DownloadSettings(ca_file=sys.argv[3] or None, allow_hosts=("127.0.0.1",), max_bytes=None)
download(sys.argv[1], Path(sys.argv[2]), file_name="export.bin", settings=settings)
"""


#: Runs a command and reports its own peak RSS and CPU time (a forked child would
#: otherwise inherit this process's high-water mark).
MEASURE = """
import os, resource, subprocess, sys, time
started = time.perf_counter()
subprocess.run(sys.argv[1:], check=True)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(time.perf_counter() - started, usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime)
"""


def timed(command: list[str]) -> tuple[float, int, float]:
    """Wall seconds, peak RSS (bytes) and CPU seconds of ``command``."""
    output = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], check=True, capture_output=True, text=True
    ).stdout.split()
    return float(output[0]), int(output[1]), float(output[2])


def make_file(path: Path, size: int) -> None:
    block = os.urandom(4 * 1024 * 1024)
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            handle.write(block[: min(len(block), size - written)])
            written += min(len(block), size - written)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many, alternating")
    args = parser.parse_args()
    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="exportmon-speed-"))
    try:
        source = work / "export.bin"
        make_file(source, size)
        (work / "tls").mkdir()
        ca = LocalCA(work / "tls")
        print(f"{'':18}{'seconds':>9}{'MB/s':>8}{'vs curl':>9}{'CPU s':>8}{'peak RSS':>10}")
        for scheme, server in (("http", WebServer()), ("https", WebServer(ca.server))):
            server.start()
            try:
                url = server.add("/export.bin", source)
                ca_file = str(ca.ca_file) if scheme == "https" else ""
                curl = ["curl", "-sS", "-o", str(work / "curl.bin"), url]
                if ca_file:
                    curl[2:2] = ["--cacert", ca_file]
                commands = {
                    "curl": curl,
                    "exportmon": [sys.executable, "-c", CHILD, url, str(work / "x"), ca_file],
                }
                best: dict[str, tuple[float, int, float]] = {}
                for _ in range(args.rounds):  # alternate, keep the best: the box may be busy
                    for tool, command in commands.items():
                        figures = timed(command)
                        if tool not in best or figures[0] < best[tool][0]:
                            best[tool] = figures
                        for leftover in (work / "curl.bin", work / "x" / "export.bin"):
                            leftover.unlink(missing_ok=True)
                for tool, (seconds, peak, cpu) in best.items():
                    ratio = best["curl"][0] / seconds
                    print(
                        f"{scheme + ' ' + tool:18}{seconds:>9.2f}{size / seconds / 1e6:>8.0f}"
                        f"{ratio:>8.2f}x{cpu:>8.2f}{peak / 1e6:>8.0f}MB"
                    )
            finally:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
