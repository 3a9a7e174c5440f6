"""End to end: export mails through ``exportmon run --once`` to FTP, next to a shell pipeline.

``--e2e-exports`` export mails (default 50; every other one links to a zip of three CSV
files, the others to a CSV file) whose CSV files hold ``--e2e-size`` of export-like data
in total (default 500 MB, uncompressed; the zips are about a fifth of their contents)
are put in a fresh Dovecot mailbox (IMAPS) for every run. The exports are served by the
test suite's HTTPS server and received by its FTP server, each in a process of its own.
Two tools do the same job in turns, to the same CSV dialect (``|`` between values,
``:`` as quote character, ``##\\n`` after each record, minimal quoting: what csvkit can
write):

* ``shell pipeline``: ``bench/pipeline.sh``, for each export link ``curl --cacert``,
  ``unzip -o``, csvkit ``csvformat`` and ``curl -T`` to FTP, one file after the other.
  It is given the links: it does not read the mailbox nor archive mails.
* ``exportmon run --once``: the CLI with a monitor config, as cron runs it: reads the
  mailbox, downloads, unzips, rewrites and uploads every file (to a temporary name,
  checked and renamed), records it all in its ledger and archives the mails.

After every run the delivered files are counted (and, for exportmon, the mails checked
archived); after the first round both tools' files are compared byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import sys
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.csv_rewrite import generate
from bench.harness import PYTHON, REPO, Row, Table, Tool, compare, require, work_dir
from bench.serving import ftp_server, mail_server, web_server
from exportmon.units import parse_size

sys.path.insert(0, str(REPO / "tests"))

from fetchkit import config_data, export_mail, imap_table, write_config

from servers.dovecot import MailUser

NAME = "e2e"
PIPELINE = Path(__file__).with_name("pipeline.sh")
ZIP_ENTRIES = (("organizations", 1), ("people", 2), ("sites", 3))
DIALECT = {"col_sep": "|", "quote_char": ":", "row_sep": "##\n"}
FTP_PASSWORD_ENV = "BENCH_FTP_PASSWORD"


@dataclass(frozen=True)
class ExportFile:
    """One export as served: the file its link names and the CSV files it holds."""

    name: str
    path: str
    csv_names: list[str]
    csv_bytes: int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--e2e-size", default="500MB", help="CSV data in all exports (500MB)")
    parser.add_argument("--e2e-exports", type=int, default=50, help="export mails (default 50)")


def make_exports(folder: Path, total: int, count: int) -> list[ExportFile]:
    """The exports of the benchmark (made once and kept in ``folder``)."""
    folder = folder / f"exports-{total}-{count}"
    manifest = folder / "manifest.json"
    if manifest.exists():
        return [ExportFile(**item) for item in json.loads(manifest.read_text())]
    folder.mkdir(parents=True, exist_ok=True)
    pool = folder / "pool"
    pool.mkdir(exist_ok=True)
    rng = random.Random(8)
    weights = [rng.uniform(0.3, 1.7) for _ in range(count)]
    exports = []
    for number, weight in enumerate(weights):
        size = int(total * weight / sum(weights))
        stamp = f"20240101-{number:06d}"
        if number % 2:
            name = f"777-{stamp}.zip"
            parts = sum(share for _, share in ZIP_ENTRIES)
            entries = []
            for kind, share in ZIP_ENTRIES:
                entry = pool / f"777-{stamp}-{kind}.csv"
                generate(entry, size * share // parts)
                entries.append(entry)
            print(f"  zipping {name}", file=sys.stderr)
            with zipfile.ZipFile(folder / name, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
                for entry in entries:
                    zf.write(entry, entry.name)
            csv_names = [entry.name for entry in entries]
            csv_bytes = sum(entry.stat().st_size for entry in entries)
            for entry in entries:
                entry.unlink()
        else:
            name = f"{stamp}-requests.csv"
            generate(folder / name, size)
            csv_names = [name]
            csv_bytes = (folder / name).stat().st_size
        exports.append(ExportFile(name, str(folder / name), csv_names, csv_bytes))
    pool.rmdir()
    manifest.write_text(json.dumps([asdict(export) for export in exports]))
    return exports


def write_monitor(
    folder: Path, user: MailUser, ca_file: str, ftp: dict[str, Any], state: Path
) -> tuple[Path, dict[str, Any]]:
    data = config_data(
        state,
        imap_table(user),
        ca_file=ca_file,
        csv=dict(DIALECT),
        deliver={
            "ftp_url": ftp["url"],
            "ftp_dir": "exportmon",
            "ftp_user": ftp["user"],
            "ftp_password_env": FTP_PASSWORD_ENV,
        },
    )
    return write_config(folder, data, "777"), data


def run(options: argparse.Namespace) -> list[Table]:
    folder = work_dir(options, "e2e")
    exports = make_exports(folder, parse_size(options.e2e_size), options.e2e_exports)
    csv_bytes = sum(export.csv_bytes for export in exports)
    expected = sorted(name for export in exports for name in export.csv_names)
    csvformat = require("csvformat", "pip install -e '.[bench]'")
    for program, package in (("curl", "curl"), ("unzip", "unzip")):
        if require(program, f"apt-get install {package}") is None:
            raise SystemExit(f"e2e needs {program}")

    files = {f"/e/{export.name}": Path(export.path) for export in exports}
    with mail_server("exportmon-bench-e2e-") as (dovecot, scratch):
        ftp_home = scratch / "ftp"
        with web_server(scratch / "web-tls", files) as web, ftp_server(ftp_home) as ftp:
            mails = [
                export_mail(f"{web['base_url']}/e/{export.name}", token=f"e2e-{n}")
                for n, export in enumerate(exports)
            ]
            links = scratch / "links.txt"
            links.write_text("".join(f"{web['base_url']}/e/{e.name}\n" for e in exports))
            netrc = scratch / "netrc"
            netrc.write_text(f"machine 127.0.0.1 login {ftp['user']} password {ftp['password']}\n")
            netrc.chmod(0o600)
            state = scratch / "state"

            def fresh_mailbox() -> MailUser:
                user = dovecot.add_user()
                user.bulk_append(mails)
                shutil.rmtree(state, ignore_errors=True)
                write_monitor(scratch / "monitors", user, web["ca_file"], ftp, state)
                return user

            users = [fresh_mailbox()]
            config = scratch / "monitors" / "777.toml"
            tools = {}
            if csvformat:
                tools["shell pipeline"] = Tool(
                    [
                        *("sh", PIPELINE, links, web["ca_file"], f"{ftp['url']}/pipeline"),
                        *(netrc, scratch / "pipeline-work", csvformat),
                    ]
                )
            tools["exportmon run --once"] = Tool(
                [PYTHON, "-m", "exportmon", "-q", "-c", config, "run", "--once"],
                env={"PYTHONPATH": str(REPO), FTP_PASSWORD_ENV: ftp["password"]},
            )
            digests: dict[str, dict[str, str]] = {}

            def check_and_clean(name: str) -> None:
                target = ftp_home / ("pipeline" if name == "shell pipeline" else "exportmon")
                found = sorted(path.name for path in target.iterdir())
                if found != expected:
                    raise SystemExit(f"{name} delivered {len(found)} of {len(expected)} files")
                if name not in digests:
                    digests[name] = {path.name: _digest(path) for path in target.iterdir()}
                shutil.rmtree(target)
                shutil.rmtree(scratch / "pipeline-work", ignore_errors=True)
                if name.startswith("exportmon"):
                    user = users.pop()
                    archived = len(user.list_uids("Archive"))
                    if archived != len(mails) or user.list_uids("INBOX"):
                        raise SystemExit(f"exportmon archived {archived} of {len(mails)} mails")
                    users.append(fresh_mailbox())

            runs = compare(tools, options.rounds, after_each=check_and_clean)

    zips = sum(1 for export in exports if export.name.endswith(".zip"))
    table = Table(
        f"End to end: {len(exports)} export mails ({zips} zips of 3 CSV files, "
        f"{len(exports) - zips} CSV files; {csv_bytes / 1e6:,.0f} MB of CSV) to FTP, "
        f"CSV to | : ##\\n (best of {options.rounds} alternating runs)",
        [Row(name, tool_runs, csv_bytes) for name, tool_runs in runs.items()],
        baseline="shell pipeline" if "shell pipeline" in tools else None,
        notes=[
            "MB/s of CSV data delivered. The pipeline is given the links (it reads no mail "
            "and archives none); exportmon also reads and archives the mails, uploads to a "
            "temporary name and renames, hashes and fsyncs, and records every step in its "
            "ledger. csvformat turns a line break \\r\\n inside a value into \\n (it reads "
            "in universal newlines mode); exportmon keeps it, as the csv module does",
        ],
    )
    if len(digests) == 2:
        same = digests["shell pipeline"] == digests["exportmon run --once"]
        table.goal(
            "exportmon's files identical to the pipeline's (but for csvformat's \\r\\n)", same
        )
    row = table.row("exportmon run --once")
    if table.baseline:
        ratio = table.ratio_of(row.tool)
        table.goal(f"exportmon wall time <= 1/3 of the pipeline's ({ratio:.2f}x)", ratio >= 3)
    table.goal(f"exportmon peak RSS < 150 MB ({row.peak_rss / 1e6:.0f} MB)", row.peak_rss < 150e6)
    return [table]


def _digest(path: Path) -> str:
    """SHA-256 of a delivered file with ``\\r\\n`` read as ``\\n`` (see the table note)."""
    return hashlib.sha256(path.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
