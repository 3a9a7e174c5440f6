"""Download throughput and peak memory over HTTPS with certificate verification, next to curl.

A file of random bytes (``--download-size``, default 1 GB) is served over HTTPS by the test
suite's web server (trustme CA, 1 MiB writes) running in a process of its own, so that it
does not take CPU from the client's process. ``curl --cacert CA -o FILE`` and exportmon's
:func:`~exportmon.download.download` (a small driver process: verifying TLS, SHA-256 of
the body, fsync and rename) download it in turns; both write to the same disk. The
machine has 2 cores: the server takes one, the client the other.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from bench.harness import PYTHON, REPO, Row, Table, Tool, compare, require, work_dir
from exportmon.units import parse_size

NAME = "download"

_SERVER = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from servers.tlsca import LocalCA
from servers.web import WebServer
ca = LocalCA(Path(sys.argv[2]))
server = WebServer(ca.server)
server.start()
print(server.add("/export.bin", Path(sys.argv[3]), chunk_size=1024 * 1024), ca.ca_file, flush=True)
sys.stdin.read()
server.stop()
"""

_DRIVER = """
import os, sys
from pathlib import Path
from exportmon import download as module
from exportmon.download import DownloadSettings, download
if sys.argv[4] == "no-fsync":  # for comparison only: what durability costs
    module.os = type("NoSync", (), {"__getattr__": lambda _, name: getattr(os, name)})()
    module.os.fsync = module._sync_quietly = module.fsync_dir = lambda fd: None
settings = DownloadSettings(ca_file=sys.argv[3], allow_hosts=("127.0.0.1",), max_bytes=None)
result = download(sys.argv[1], Path(sys.argv[2]), file_name="export.bin", settings=settings)
print(result.sha256)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--download-size", default="1GB", help="file size (default 1GB)")


def make_file(path: Path, size: int) -> None:
    if path.exists() and path.stat().st_size == size:
        return
    block = os.urandom(4 * 1024 * 1024)
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            written += handle.write(block[: min(len(block), size - written)])


def run(options: argparse.Namespace) -> list[Table]:
    folder = work_dir(options, "download")
    size = parse_size(options.download_size)
    source = folder / f"export-{size}.bin"
    make_file(source, size)
    (folder / "tls").mkdir(exist_ok=True)
    server = subprocess.Popen(
        [PYTHON, "-c", _SERVER, REPO / "tests", folder / "tls", source],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        assert server.stdout is not None
        url, ca_file = server.stdout.readline().split()
        tools = {}
        if curl := require("curl", "apt-get install curl"):
            command = [curl, "-sS", "--cacert", ca_file, "-o", folder / "curl.bin", url]
            tools["curl --cacert -o"] = Tool(command)
            tools["curl, then sync FILE"] = Tool(
                ["sh", "-c", '"$@" && sync "$0"', folder / "curl.bin", *command]
            )
        for name, mode in (("exportmon download", "fsync"), ("exportmon, fsync off", "no-fsync")):
            tools[name] = Tool(
                [PYTHON, "-c", _DRIVER, url, folder / "exportmon", ca_file, mode],
                stdout=folder / "exportmon.sha256",
                env={"PYTHONPATH": str(REPO)},
            )

        def clean(_: str) -> None:
            for leftover in (folder / "curl.bin", folder / "exportmon" / "export.bin"):
                leftover.unlink(missing_ok=True)

        runs = compare(tools, options.rounds, after_each=clean)
    finally:
        if server.stdin:
            server.stdin.close()
        server.wait(timeout=30)
    table = Table(
        f"HTTPS download of {size / 1e6:,.0f} MB, verified TLS, written to disk "
        f"(best of {options.rounds} alternating runs)",
        [Row(name, tool_runs, size) for name, tool_runs in runs.items()],
        baseline="curl --cacert -o" if "curl --cacert -o" in tools else None,
        notes=[
            "exportmon also hashes (SHA-256) and fsyncs what it downloads; curl does not. "
            "'curl, then sync FILE' and 'exportmon, fsync off' (comparison only) show what "
            "durability costs on this disk",
        ],
    )
    row = table.row("exportmon download")
    if table.baseline:
        ratio = table.ratio_of("exportmon download")
        table.goal(f"exportmon >= 0.8x curl ({ratio:.2f}x)", ratio >= 0.8)
    table.goal(f"exportmon peak RSS < 100 MB ({row.peak_rss / 1e6:.0f} MB)", row.peak_rss < 100e6)
    print(f"  served from {url}", file=sys.stderr)
    return [table]
