"""What a no-new-mail IMAP poll costs with 10 and with 20,000 old mails in the mailbox.

Run as root (Dovecot drops to nobody), from the repository root:

    .venv/bin/python bench/poll_cost.py            # 10 vs 20,000 mails
    .venv/bin/python bench/poll_cost.py --big 100000

It starts the test suite's real Dovecot (IMAPS) on 127.0.0.1, fills two accounts
with old mails (half of them ITRP export mails for an export id that is not
monitored, so the server-side search matches them; half ordinary mails), runs a
first fetch on each (which reads them all once and records them), and then times:

* ``poll``: the library call ``fetch(monitor, ledger)`` with nothing new (connect,
  log in, EXAMINE, archive check, due-export check, logout), median of N runs;
* ``one new``: the same with one new (unmonitored) export mail each time, which
  adds one ``UID SEARCH`` limited to UIDs above the last one seen;
* ``cli``: ``exportmon -c <config> fetch`` as a child process, median of N runs
  (mostly Python start-up and imports).

It prints the figures and the ratio big/small for each.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from exportmon.actions.fetch import fetch  # noqa: E402
from exportmon.config.load import load_monitor  # noqa: E402
from exportmon.ledger import Ledger  # noqa: E402
from servers.dovecot import DovecotServer, MailUser  # noqa: E402
from servers.tlsca import LocalCA  # noqa: E402


def old_mail(number: int) -> bytes:
    message = EmailMessage()
    message["Message-ID"] = make_msgid(domain="bench.example")
    message["To"] = "exports@example.com"
    if number % 2:
        message["From"] = "ITRP <noreply@itrp.com>"
        message["Subject"] = f"Export finished - old export {number}"
        message["X-ITRP-ExportID"] = "5"
        message["X-ITRP-Export"] = f"old-token-{number}"
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(f"The export is ready: https://files.example/old/{number}.zip\n")
    else:
        message["From"] = "Colleague <bob@example.com>"
        message["Subject"] = f"Note {number}"
        message.set_content("An ordinary mail. " * 40 + "\n")
    return message.as_bytes()


def write_config(directory: Path, user: MailUser, name: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        f"ids = [777]\nroot = {str(directory / name)!r}\n\n[source]\nkind = 'imap'\n"
        f"host = '{user.host}'\nport = {user.ports.imaps}\nsecurity = 'ssl'\n"
        f"user = '{user.name}'\npassword = '{user.password}'\nca_file = '{user.ca_file}'\n"
        "archive = 'Archive'\n"
    )
    path.chmod(0o600)
    return path


def median_seconds(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(user: MailUser, config_path: Path, runs: int) -> dict[str, float]:
    monitor = load_monitor(config_path)
    monitor.dirs.create()
    with Ledger.open(monitor.dirs.ledger) as ledger:
        started = time.perf_counter()
        first = fetch(monitor, ledger)
        first_seconds = time.perf_counter() - started
        assert not first.failed, first.failures

        def poll() -> None:
            result = fetch(monitor, ledger)
            assert not result.mails and not result.failed

        def poll_one_new() -> None:
            user.append(old_mail(1))
            result = fetch(monitor, ledger)
            assert len(result.mails) == 1 and not result.failed

        figures = {
            "first": first_seconds,
            "poll": median_seconds(poll, runs),
            "one new": median_seconds(poll_one_new, runs),
        }
    command = [sys.executable, "-m", "exportmon", "-q", "-c", str(config_path), "fetch"]
    figures["cli"] = median_seconds(lambda: subprocess.run(command, check=True), max(3, runs // 4))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--big", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="exportmon-bench-"))
    workdir.chmod(0o755)
    (workdir / "tls").mkdir(mode=0o755)
    (workdir / "dovecot").mkdir(mode=0o755)
    server = DovecotServer(workdir / "dovecot", (ca := LocalCA(workdir / "tls")).server, ca.ca_file)
    server.start()
    try:
        results = {}
        for label, count in (("small", args.small), ("big", args.big)):
            user = server.add_user()
            user.bulk_append(old_mail(n) for n in range(count))
            config = write_config(workdir, user, label)
            results[label] = measure(user, config, args.runs)
            print(f"{label}: {count} mails in the mailbox", file=sys.stderr)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    small, big = results["small"], results["big"]
    print(f"{'':28}{args.small:>12,} mails{args.big:>12,} mails{'ratio':>9}")
    for key, label in (
        ("poll", "no-new-mail poll (library)"),
        ("one new", "poll with one new mail"),
        ("cli", "exportmon fetch (process)"),
        ("first", "first fetch (reads all)"),
    ):
        ratio = big[key] / small[key]
        print(f"{label:28}{small[key] * 1000:>15.1f} ms{big[key] * 1000:>15.1f} ms{ratio:>8.2f}x")


if __name__ == "__main__":
    main()
