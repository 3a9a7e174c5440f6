"""The test suite's servers for the benchmarks: HTTPS and FTP in child processes, Dovecot.

A server in its own process takes no CPU (and no GIL) from the benchmark's process
and is not counted in any tool's peak RSS. :func:`web_server` serves files over HTTPS
with a certificate of a :class:`~servers.tlsca.LocalCA` made in the given folder;
:func:`ftp_server` serves a home folder over plain FTP; :func:`mail_server` starts
Dovecot (a process of its own anyway) in a scratch folder. All stop when their
``with`` block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.harness import PYTHON, REPO

sys.path.insert(0, str(REPO / "tests"))

from servers.dovecot import DovecotServer
from servers.tlsca import LocalCA

_WEB = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from servers.tlsca import LocalCA
from servers.web import WebServer
ca = LocalCA(Path(sys.argv[2]))
server = WebServer(ca.server)
server.start()
for path, file in json.loads(Path(sys.argv[3]).read_text()).items():
    server.add(path, Path(file), chunk_size=1024 * 1024)
print(json.dumps({"base_url": server.base_url, "ca_file": str(ca.ca_file)}), flush=True)
sys.stdin.read()
server.stop()
"""

_FTP = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from servers.ftp import FtpServer
server = FtpServer(Path(sys.argv[2]))
server.start()
info = {"url": f"ftp://{server.host}:{server.port}", "user": server.user}
print(json.dumps({**info, "password": server.password}), flush=True)
sys.stdin.read()
server.stop()
"""


@contextlib.contextmanager
def _server(code: str, *args: object) -> Iterator[dict[str, Any]]:
    process = subprocess.Popen(
        [PYTHON, "-c", code, REPO / "tests", *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("a benchmark server did not start (see its error above)")
        yield json.loads(line)
    finally:
        if process.stdin:
            process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def web_server(tls_dir: Path, files: Mapping[str, Path]) -> Iterator[dict[str, Any]]:
    """Serve ``files`` (URL path -> file) over HTTPS; yields ``base_url`` and ``ca_file``."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    routes = tls_dir / "routes.json"
    routes.write_text(json.dumps({path: str(file) for path, file in files.items()}))
    with _server(_WEB, tls_dir, routes) as info:
        yield info


@contextlib.contextmanager
def ftp_server(home: Path) -> Iterator[dict[str, Any]]:
    """Serve ``home`` over FTP; yields ``url`` (``ftp://host:port``), ``user``, ``password``."""
    with _server(_FTP, home) as info:
        yield info


@contextlib.contextmanager
def mail_server(prefix: str) -> Iterator[tuple[DovecotServer, Path]]:
    """A running Dovecot and a scratch folder (``prefix`` names it) removed afterwards.

    Needs root, like the tests: Dovecot drops to nobody, so the folders are world-readable.
    """
    scratch = Path(tempfile.mkdtemp(prefix=prefix))
    scratch.chmod(0o755)
    for name in ("dovecot", "mail-tls"):
        (scratch / name).mkdir(mode=0o755)
    ca = LocalCA(scratch / "mail-tls")
    dovecot = DovecotServer(scratch / "dovecot", ca.server, ca.ca_file)
    dovecot.start()
    try:
        yield dovecot, scratch
    finally:
        dovecot.stop()
        shutil.rmtree(scratch, ignore_errors=True)
