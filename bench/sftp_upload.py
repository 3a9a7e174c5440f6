"""SFTP upload throughput and peak memory, exportmon next to OpenSSH's ``sftp`` client.

A file of random bytes (``--sftp-size`` or ``EXPORTMON_BENCH_SFTP_SIZE``, default 1 GB)
is uploaded to the test suite's OpenSSH server (``tests/servers/sshd.py``: sshd on
127.0.0.1, a fresh ed25519 host key; it needs root, as the tests do) by ``sftp -b``
and by exportmon's :class:`~exportmon.deliver.sftp.SftpDestination` (a small driver
process: host key checked against known_hosts, upload under the temporary name,
size check, ``posix-rename``), in turns, both with the same ed25519 client key. Both
write to the same disk. The machine has 2 cores: sshd takes one, the client the other.
"""

from __future__ import annotations

import argparse
import os
import sys

from bench.download_speed import make_file
from bench.harness import PYTHON, REPO, Row, Run, Table, Tool, compare, require, work_dir
from exportmon.units import parse_size

sys.path.insert(0, str(REPO / "tests"))

from servers import ServerStartError
from servers.sshd import USER, ClientKeys, SshServer

NAME = "sftp"
#: Sets the size without the command-line option (e.g. from the CI's environment).
SIZE_VARIABLE = "EXPORTMON_BENCH_SFTP_SIZE"

_DRIVER = """
import sys, time
from pathlib import Path
from exportmon.deliver import Outgoing
from exportmon.deliver.sftp import SftpDestination
host, port, user, key, known, source = sys.argv[1:7]
item = Outgoing.from_path(Path(source), "exportmon.bin")
with SftpDestination(host, int(port), "/~/in", user=user, key_file=key, known_hosts=known) as d:
    started = time.perf_counter()
    d.put(item, "exportmon.bin")
    print(time.perf_counter() - started)
"""
#: The driver's own timer: login done, upload, size check and rename.
UPLOAD_ONLY = "exportmon, put() only"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sftp-size",
        default=os.environ.get(SIZE_VARIABLE, "1GB"),
        help=f"SFTP upload size (default 1GB, or ${SIZE_VARIABLE})",
    )


def run(options: argparse.Namespace) -> list[Table]:
    folder = work_dir(options, "sftp")
    size = parse_size(options.sftp_size)
    source = folder / f"upload-{size}.bin"
    make_file(source, size)
    sftp = require("sftp", "apt-get install openssh-client")
    try:
        keys = ClientKeys.create(folder / "keys")
        server = SshServer(keys)
        server.start()
    except ServerStartError as exc:
        raise SystemExit(f"sftp: the OpenSSH test server could not start: {exc}") from None
    try:
        known = folder / "known_hosts"
        known.write_text(server.keyscan())
        inbox = server.user_folder("in")
        tools = {}
        if sftp:
            batch = folder / "batch"
            batch.write_text(f"put {source} in/openssh.bin\n")
            tools["OpenSSH sftp -b"] = Tool(
                [
                    sftp, "-q", "-b", str(batch), "-i", str(keys.ed25519), "-P", str(server.port),
                    "-o", f"UserKnownHostsFile={known}", "-o", "BatchMode=yes",
                    "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
                    f"{USER}@{server.host}",
                ],
                stdout=folder / "sftp.out",  # -b echoes every command
            )  # fmt: skip
        tools["exportmon SftpDestination"] = Tool(
            [
                PYTHON,
                "-c",
                _DRIVER,
                server.host,
                str(server.port),
                USER,
                str(keys.ed25519),
                str(known),
                str(source),
            ],
            stdout=folder / "exportmon.out",
            env={"PYTHONPATH": str(REPO)},
        )
        put_only: list[Run] = []

        def clean(name: str) -> None:
            if name == "exportmon SftpDestination":
                seconds = float((folder / "exportmon.out").read_text())
                put_only.append(Run(seconds, peak_rss=0, cpu_seconds=0.0))
            for leftover in inbox.iterdir():
                if leftover.stat().st_size != size:
                    raise SystemExit(f"sftp: {name} left {leftover} incomplete")
                leftover.unlink()

        runs = compare(tools, options.rounds, after_each=clean)
    finally:
        server.remove()
    table = Table(
        f"SFTP upload of {size / 1e6:,.0f} MB to OpenSSH on 127.0.0.1 "
        f"(best of {options.rounds} alternating runs)",
        [Row(name, tool_runs, size) for name, tool_runs in runs.items()]
        + [Row(UPLOAD_ONLY, put_only, size, note="in-process timer")],
        baseline="OpenSSH sftp -b" if "OpenSSH sftp -b" in tools else None,
        notes=[
            "exportmon uploads under a temporary name, checks the size and renames; "
            "sftp writes the final name directly. exportmon sends 255 KiB write "
            "requests where the server's limits@openssh.com allows. Ciphers as negotiated: "
            "chacha20-poly1305 for OpenSSH, AES-GCM for exportmon (paramiko has no "
            "ChaCha20, and GCM needs no separate MAC pass)",
            "the first two rows include starting the client; for exportmon that is "
            f"Python and importing paramiko (about 0.4 s of CPU). '{UPLOAD_ONLY}' is "
            "the upload alone, after the login (sftp's login is in its row)",
        ],
    )
    row = table.row("exportmon SftpDestination")
    if table.baseline:
        ratio = table.ratio_of("exportmon SftpDestination")
        table.goal(f"exportmon >= 0.8x OpenSSH sftp ({ratio:.2f}x)", ratio >= 0.8)
    table.goal(f"exportmon peak RSS < 100 MB ({row.peak_rss / 1e6:.0f} MB)", row.peak_rss < 100e6)
    return [table]
