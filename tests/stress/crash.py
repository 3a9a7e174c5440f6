"""Crash safety: SIGKILL ``exportmon run --once`` at random moments until all is done,
then prove that every export was delivered exactly once.

The world (:class:`CrashWorld`): an IMAP mailbox over TLS with an archive folder,
filled batch by batch with export mails of three kinds — a link to a zip of four
CSV files, a link to one CSV file, and a mail carrying two CSV attachments (two
exports in one mail) — plus now and then an ordinary mail that must be left
alone. Links point at the HTTPS fixture, which sends slowly
(``delay_per_chunk``); the FTPS fixture receives slowly (``slow_uploads``), so
kills land mid-transfer. Every export goes through the ``[csv]`` rewrite with
``sub_dirs`` and is delivered to three destinations: a local folder
(``overwrite = "replace"``), the FTPS server (``replace``) and an
``archive_dir`` (always time-stamped). With ``sftp`` (a
:class:`servers.sshd.SshServer`) the files also go to a folder on a real OpenSSH
server, checked like the local folder (inodes included). With ``blackboard`` (a
:class:`servers.blackboard.BlackboardServer`), the same destinations are written as
``[[deliver]]`` entries plus the Blackboard endpoint with status tracking, and the
crash points include ``status.polled``.

The driver (:func:`crash_loop`) runs ``python -m exportmon -c CONFIG run --once``
as a child and kills it, over and over, in one of two ways:

* after a random delay, drawn over the duration of an uninterrupted run over one
  mail (start-up and poll, measured with nothing to do, plus the mean work of one
  mail, measured on a first batch of one mail of each kind, run without kills), so
  kills land in every phase in proportion to its length:
  start-up and IMAP fetch, download, unzip and rewrite, local write, FTP upload,
  archiving, ledger writes;
* at a named crash point (``EXPORTMON_TEST_KILL_AT``, see
  :mod:`exportmon.crashpoints`), for the short moments between two durable steps
  that a random delay rarely hits: after a rename and before the ledger write,
  after the FTP upload and before its rename, after the archive move, inside a
  ledger transaction.

When everything appended so far is done, the next batch is appended, until
``mails`` mails are in the mailbox. The kills are spread evenly over them: a mail
should take ``kills / mails`` kills before it is done. So the part of a mail's work
that a delay after the start-up is drawn over adapts: it shrinks while mails get
done with fewer kills (runs are killed earlier in their work, and more often) and
grows back when they take more, never below a tenth, so that every run still makes
progress; the share of kills in the start-up stays as measured. Only if every mail
is done before ``kills`` kills were made are more mails appended (the figures count
them). Killing stops once at least ``kills`` kills were made and every mail was
appended; then runs go on unkilled until a run exits 0 with nothing left to do.

:class:`FolderCrashWorld` and :func:`folder_crash_loop` do the same for a drop-folder
monitor (``kind = "folder"``): Blackboard snapshot files dropped in batches, delivered
in type order and archived with a time stamp (``python -m tests.stress crash
--folder``).

Invariants (:meth:`CrashWorld.check`), at the destinations themselves and in the
mailbox, not in exportmon's own records:

after every kill (safety)
    * a file under its final name at any destination is an expected file with
      the expected SHA-256 (nothing partial or foreign under a final name);
    * nothing is delivered twice: in the ``archive_dir`` (time-stamped, so each
      delivery is a new file) no file appears twice; on the FTPS server no final
      name is the target of more than one successful ``RNTO`` (a crash between
      the rename and the ledger write must end in a *verified no-op*, not a second
      upload); in the local folder (``replace``) a file once seen keeps its inode
      (a second delivery would rename a new file over it);
    * a mail in the archive folder is there once, and every file of every export
      it carries is complete at all three destinations (no mail archived early);
    * with the Blackboard endpoint: every data set it holds is an expected file,
      whole, and no file makes two data sets (the endpoint honours
      ``Idempotency-Key``, so a resend after a kill must repeat its first key).

at the end (completeness), in addition
    * every expected file is at every destination (nothing lost), and no
      ``.in_progress`` or ``.part`` file is left at any destination;
    * every export mail is in the archive folder exactly once; the inbox holds
      exactly the ordinary mails, unread and untouched;
    * the ledger passes ``PRAGMA integrity_check``; every export is ``delivered``,
      every export mail ``archived``, every ordinary mail ``ignored``; every
      delivery row is ``done``, one per file and destination.

The expected bytes of every delivered file come from an independent oracle:
Python's :mod:`csv` module reading the original CSV and writing it with ``;``.
"""

from __future__ import annotations

import csv
import email
import hashlib
import io
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import make_msgid
from pathlib import Path
from typing import Any

from fetchkit import config_data, export_mail, imap_table, plain_mail, write_config

from exportmon.crashpoints import ENVIRONMENT

#: The crash points the driver aims at, and the n of ``point:n`` is drawn from 1..this.
#: The first pass is enough for most: a restarted run resumes where the last one was
#: killed, so its first pass is a later moment of the work. A run passes many ledger
#: transactions before any work is done, hence the wide range there. ``imap.copied``
#: is left out: Dovecot has MOVE, so this world never copies.
POINT_PASSES = {
    "imap.fetched": 1,
    "download.saved": 1,
    "unpack.staged": 1,
    "unpack.placed": 1,
    "atomic.rename": 1,
    "deliver.started": 1,
    "ftp.uploaded": 1,
    "deliver.placed": 1,
    "export.delivered": 1,
    "archive.moved": 1,
    "ledger.commit": 20,
}
#: With an HTTPS destination (``CrashWorld(blackboard=...)``), also: after a status
#: answer and before it is recorded. ``deliver.placed`` is then also the moment after
#: the upload's answer and before its reference is recorded.
HTTPS_POINT_PASSES = {"status.polled": 2}
#: With an SFTP destination (``CrashWorld(sftp=...)``): after an upload, before its rename.
SFTP_POINT_PASSES = {"sftp.uploaded": 2}
STAMPED = re.compile(r"^(?P<stem>.+)\.\d{8}T\d{6}Z(?:-\d+)?(?P<suffix>\.[^./]+)$")
LEFTOVER_SUFFIXES = (".in_progress", ".part")
COL_SEP = ";"


# --- the expected outcome ------------------------------------------------------------


@dataclass
class ExpectedExport:
    """One export: its key and the files it must become, by relative name."""

    key: str
    kind: str
    #: Relative target (``sites/777-…-sites.csv``) → SHA-256 of the delivered bytes.
    files: dict[str, str]


@dataclass
class ExpectedMail:
    """A mail appended to the inbox; an ordinary mail has no exports."""

    message_id: str
    exports: list[ExpectedExport]

    @property
    def is_export(self) -> bool:
        return bool(self.exports)


def rewritten(data: bytes) -> bytes:
    """The oracle: ``data`` (a CSV file with CRLF rows) rewritten with ``;`` as exportmon's
    ``[csv] col_sep = ";"`` must write it (minimal quoting, line endings kept)."""
    rows = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    out = io.StringIO(newline="")
    csv.writer(out, delimiter=COL_SEP, lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode("utf-8")


def csv_export(rng: random.Random, rows: int) -> bytes:
    """A CSV export with quoted separators, quotes and non-ASCII text in it."""
    words = ["Acme", "Zürich", "O'Brien", "naïve", "Smith, Jr.", 'say "hi"', "Łódź", "plain"]
    lines = ["id,name,note,amount"]
    for number in range(1, rows + 1):
        name = rng.choice(words)
        note = f"{rng.choice(words)} {rng.randrange(10**6)}"
        cells = [str(number), name, note, f"{rng.randrange(10**5) / 100:.2f}"]
        lines.append(",".join(_quoted(cell) for cell in cells))
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def _quoted(cell: str) -> str:
    if any(c in cell for c in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the world -----------------------------------------------------------------------


@dataclass
class RunOutcome:
    """How one child run ended."""

    code: int | None
    seconds: float
    #: ``timer`` (killed by the driver), ``point`` (killed itself at a crash point) or None.
    killed: str | None
    point: str | None
    log: str


@dataclass
class Figures:
    """What a crash loop did and found."""

    runs: int = 0
    kills_timer: int = 0
    kills_point: int = 0
    failed_runs: int = 0
    mails: int = 0
    export_mails: int = 0
    exports: int = 0
    files: int = 0
    deliveries: int = 0
    lost: int = 0
    duplicated: int = 0
    partial: int = 0
    leftovers: int = 0
    archived_early: int = 0
    archived: int = 0
    ordinary_touched: int = 0
    ledger_problems: int = 0
    completed_after_crash: int = 0
    seconds: float = 0.0
    window: float = 0.0
    shortest_window: float = float("inf")
    points: Counter[str] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    @property
    def kills(self) -> int:
        return self.kills_timer + self.kills_point

    def table(self) -> str:
        """The figures as a Markdown table."""
        rows = [
            ("runs of `run --once`", self.runs),
            ("kills (SIGKILL)", self.kills),
            ("… after a random delay", self.kills_timer),
            ("… at a named crash point", self.kills_point),
            ("runs that failed without a kill", self.failed_runs),
            ("mails (export mails)", f"{self.mails} ({self.export_mails})"),
            ("exports", self.exports),
            ("files × destinations", self.deliveries),
            ("lost", self.lost),
            ("duplicated", self.duplicated),
            ("partial", self.partial),
            (".in_progress / .part left", self.leftovers),
            ("mails archived before delivery", self.archived_early),
            ("mails archived", self.archived),
            ("ordinary mails touched", self.ordinary_touched),
            ("ledger problems", self.ledger_problems),
            ("deliveries found complete after a kill", self.completed_after_crash),
        ]
        lines = ["| figure | value |", "|---|---:|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines)

    def details(self) -> str:
        points = ", ".join(f"{name} {count}" for name, count in sorted(self.points.items()))
        phases = ", ".join(f"{name} {count}" for name, count in self.phases.most_common())
        return (
            f"kills at crash points: {points or 'none'}\n"
            f"random kills by the last step logged: {phases or 'none'}\n"
            f"random-delay window {min(self.window, self.shortest_window):.2f} s at its "
            f"shortest, {self.window:.2f} s at the end; {self.seconds:.0f} s in all"
        )


class CrashWorld:
    """A mailbox, an HTTPS export server, an FTPS server, a monitor config: see the module."""

    def __init__(
        self,
        workdir: Path,
        mail_user: Any,
        https_server: Any,
        ftps_server: Any,
        tls_ca: Any,
        *,
        seed: int = 1,
        rows: int = 1500,
        download_rate: int = 150_000,
        upload_rate: int = 150_000,
        blackboard: Any = None,
        sftp: Any = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.mail_user = mail_user
        self.https = https_server
        self.ftps = ftps_server
        self.rng = random.Random(seed)
        self.rows = rows
        self.download_rate = download_rate
        self.mails: list[ExpectedMail] = []
        self.local = self.workdir / "delivered"
        self.archive = self.workdir / "archive-copies"
        self.ftp_dir = self.ftps.home / "in"
        self.state = self.workdir / "state"
        self.logs = self.workdir / "runs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self._inodes: dict[str, int] = {}
        ftps_server.slow_uploads(upload_rate)
        data = config_data(
            self.state,
            imap_table(mail_user),
            ca_file=tls_ca.ca_file,
            sub_dirs=True,
            retry_after="1s",
            csv={"col_sep": COL_SEP},
            deliver={
                "to": str(self.local),
                "ftp_url": f"ftps://127.0.0.1:{ftps_server.port}",
                "ftp_dir": "in",
                "ftp_user": ftps_server.user,
                "ftp_password_env": "EXPORTMON_STRESS_FTP_PASS",
                "ftp_ca_file": str(tls_ca.ca_file),
                "ftp_retries": 1,
                "archive_dir": str(self.archive),
            },
        )
        self.blackboard = blackboard
        self.sftp = sftp
        self.sftp_dir: Path | None = None
        self.env = {"EXPORTMON_STRESS_FTP_PASS": ftps_server.password}
        if blackboard is not None:
            data["deliver"] = self._destinations(data["deliver"], blackboard, tls_ca)
            self.env["EXPORTMON_STRESS_LEARN_PASS"] = blackboard.password
        if sftp is not None:
            # The SFTP server (tests/servers/sshd.py) is a real sshd on this machine:
            # its folder is checked like the local one, inodes included.
            folder = f"crash-{self.rng.randrange(10**9)}"
            self.sftp_dir = sftp.user_folder(folder)
            known_hosts = self.workdir / "known_hosts"
            known_hosts.write_text(sftp.keyscan(hashed=True))
            entries = data["deliver"]
            if isinstance(entries, dict):
                entries = self._destinations_of(entries)
            entries.append(
                {
                    "url": sftp.url(f"/~/{folder}"),
                    "ssh_key": str(sftp.keys.ed25519),
                    "known_hosts": str(known_hosts),
                    "retries": 1,
                }
            )
            data["deliver"] = entries
        self.config = write_config(self.workdir / "monitors", data, "777")

    @staticmethod
    def _destinations(old: dict[str, Any], blackboard: Any, tls_ca: Any) -> list[dict[str, Any]]:
        """The ``[deliver]`` table as ``[[deliver]]`` entries, plus the Blackboard
        endpoint with status tracking (each file processed after one poll)."""
        from servers.blackboard import BASE

        blackboard.honour_idempotency = True
        blackboard.queued = 1
        endpoint = f"https://127.0.0.1:{blackboard.port}{BASE}"
        return [
            *CrashWorld._destinations_of(old),
            {
                "url": endpoint + "/{type}/store",
                "user": blackboard.user,
                "password_env": "EXPORTMON_STRESS_LEARN_PASS",
                "ca_file": str(tls_ca.ca_file),
                "reference": "reference code (?P<ref>[0-9a-f]{32})",
                "status_url": endpoint + "/dataSetStatus/{reference}",
                "status_done": "queuedCount == 0",
                "status_fail": "errorCount > 0",
                "status_interval": "0s",
                "retries": 1,
            },
        ]

    @staticmethod
    def _destinations_of(old: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``[deliver]`` table as the same ``[[deliver]]`` entries."""
        return [
            {"url": old["to"]},
            {
                "url": f"{old['ftp_url']}/{old['ftp_dir']}",
                "user": old["ftp_user"],
                "password_env": old["ftp_password_env"],
                "ca_file": old["ftp_ca_file"],
                "retries": old["ftp_retries"],
            },
            {"url": old["archive_dir"], "archive": True},
        ]

    # -- mails ---------------------------------------------------------------------

    def add_mails(self, count: int) -> list[ExpectedMail]:
        """Append ``count`` mails, cycling through the kinds; an ordinary mail every 7th."""
        added = []
        for _ in range(count):
            number = len(self.mails) + 1
            if number % 7 == 0:
                mail = self._ordinary()
            else:
                kind = ("zip", "csv", "attachments")[number % 3]
                mail = getattr(self, f"_{kind}_mail")(number)
            self.mails.append(mail)
            added.append(mail)
        return added

    def _name(self, number: int, kind: str) -> str:
        return f"777-20261123-{number:06d}-{kind}.csv"

    def _expected(self, name: str, data: bytes) -> tuple[str, str]:
        kind = name.rsplit("-", 1)[1][: -len(".csv")]
        return f"{kind}/{name}", _digest(rewritten(data))

    def _link(self, token: str, name: str, body: bytes) -> str:
        return self.https.add(
            f"/exports/{token}/{name}",
            body,
            chunk_size=16 * 1024,
            delay_per_chunk=16 * 1024 / self.download_rate,
        )

    def _zip_mail(self, number: int) -> ExpectedMail:
        token = f"tok-{number:06d}-zip"
        files = {}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for kind in ("organizations", "sites", "people", "slas"):
                name = self._name(number, kind)
                data = csv_export(self.rng, self.rows)
                archive.writestr(name, data)
                target, digest = self._expected(name, data)
                files[target] = digest
        link = self._link(token, f"777-20261123-{number:06d}-export.zip", buffer.getvalue())
        return self._append(export_mail(link, token=token), [ExpectedExport(token, "zip", files)])

    def _csv_mail(self, number: int) -> ExpectedMail:
        token = f"tok-{number:06d}-csv"
        name = self._name(number, "requests")
        data = csv_export(self.rng, self.rows * 2)
        link = self._link(token, name, data)
        target, digest = self._expected(name, data)
        export = ExpectedExport(token, "csv", {target: digest})
        return self._append(export_mail(link, token=token), [export])

    def _attachments_mail(self, number: int) -> ExpectedMail:
        token = f"tok-{number:06d}-att"
        attachments, exports = [], []
        for kind in ("cis", "contracts"):
            name = self._name(number, kind)
            data = csv_export(self.rng, self.rows // 4)
            attachments.append((name, data))
            target, digest = self._expected(name, data)
            exports.append(ExpectedExport(f"{token}/{name}", "attachment", {target: digest}))
        return self._append(export_mail(None, token=token, attachments=attachments), exports)

    def _ordinary(self) -> ExpectedMail:
        message = plain_mail(subject=f"Lunch #{len(self.mails) + 1}?")
        return self._append(message, [])

    def _append(self, message: bytes, exports: list[ExpectedExport]) -> ExpectedMail:
        parsed = email.message_from_bytes(message)
        message_id = str(parsed["Message-ID"] or make_msgid())
        self.mail_user.append(message)
        return ExpectedMail(message_id.strip(), exports)

    # -- running -----------------------------------------------------------------

    def run(
        self,
        *,
        kill_after: float | None = None,
        kill_at: str | None = None,
        timeout: float = 300.0,
    ) -> RunOutcome:
        """One ``exportmon run --once`` in a child process, killed as asked."""
        return run_once(
            self.config,
            self.logs,
            self.env,
            kill_after=kill_after,
            kill_at=kill_at,
            timeout=timeout,
        )

    def run_logs(self) -> list[str]:
        """The stderr of every run so far, oldest first."""
        return [path.read_text(errors="replace") for path in sorted(self.logs.iterdir())]

    def done(self) -> bool:
        """Whether the ledger shows nothing left to do (every export delivered, every
        export mail archived)."""
        ledger = self.state / "ledger.sqlite"
        if not ledger.exists():
            return False
        with sqlite3.connect(ledger) as db:
            open_exports = db.execute("SELECT count(*) FROM exports WHERE state != 'delivered'")
            open_mails = db.execute("SELECT count(*) FROM mails WHERE state IN ('new','delivered')")
            exports = db.execute("SELECT count(*) FROM exports").fetchone()[0]
            pending = open_exports.fetchone()[0] + open_mails.fetchone()[0]
        wanted = sum(len(m.exports) for m in self.mails)
        return pending == 0 and exports == wanted

    # -- checking ------------------------------------------------------------------

    def check(self, figures: Figures, *, final: bool) -> list[str]:
        """Check the invariants (see the module docs); count what is wrong in ``figures``
        and return one line per problem."""
        problems: list[str] = []
        expected = {
            name: digest
            for mail in self.mails
            for export in mail.exports
            for name, digest in export.files.items()
        }
        places = {
            "local": self._files(self.local),
            "ftp": self._files(self.ftp_dir),
            "archive_dir": self._files(self.archive, stamped=True),
        }
        if self.sftp_dir is not None:
            places["sftp"] = self._files(self.sftp_dir)
        complete: dict[str, set[str]] = {}
        for place, found in places.items():
            complete[place] = set()
            for name, paths in found.items():
                if name.endswith(LEFTOVER_SUFFIXES):
                    if final:
                        figures.leftovers += len(paths)
                        problems.append(f"{place}: left over {name}")
                    continue
                if len(paths) > 1:
                    figures.duplicated += len(paths) - 1
                    problems.append(f"{place}: {name} delivered {len(paths)} times")
                if name not in expected:
                    figures.partial += 1
                    problems.append(f"{place}: unexpected file {name}")
                    continue
                digests = {_file_digest(path) for path in paths}
                if digests != {expected[name]}:
                    figures.partial += 1
                    problems.append(f"{place}: {name} has the wrong bytes")
                    continue
                complete[place].add(name)
            if final:
                for name in sorted(set(expected) - complete[place]):
                    figures.lost += 1
                    problems.append(f"{place}: {name} never delivered")
        if self.blackboard is not None:
            complete["https"] = self._check_https(figures, expected, problems, final=final)
        problems += self._check_local_inodes(figures, places["local"])
        if "sftp" in places:
            problems += self._check_local_inodes(figures, places["sftp"], where="sftp")
        problems += self._check_renames(figures)
        problems += self._check_mailbox(figures, complete, final=final)
        if final:
            problems += self._check_ledger(figures)
            figures.files = len(expected)
            figures.deliveries = sum(len(found) for found in complete.values())
        figures.problems += problems
        return problems

    @staticmethod
    def _files(root: Path, *, stamped: bool = False) -> dict[str, list[Path]]:
        found: dict[str, list[Path]] = {}
        if not root.exists():
            return found
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            if stamped and not name.endswith(LEFTOVER_SUFFIXES):
                match = STAMPED.match(name)
                name = match.group("stem") + match.group("suffix") if match else name
            found.setdefault(name, []).append(path)
        return found

    def _check_https(
        self, figures: Figures, expected: dict[str, str], problems: list[str], *, final: bool
    ) -> set[str]:
        """The Blackboard endpoint's data sets: each an expected file, whole; none twice
        (it honours Idempotency-Key, so a resend after a crash is no new data set, but
        a second upload under a new key would be); every resend of a file repeated the
        key of its first upload. Returns the names it holds."""
        by_digest = {digest: name for name, digest in expected.items()}
        held: Counter[str] = Counter()
        for data_set in list(self.blackboard.data_sets.values()):
            name = by_digest.get(_digest(data_set.body))
            if name is None:
                figures.partial += 1
                problems.append(f"https: data set {data_set.reference} is no expected file")
                continue
            held[name] += 1
        for name, count in sorted(held.items()):
            if count > 1:
                figures.duplicated += count - 1
                problems.append(f"https: {name} uploaded as {count} data sets")
        keys: dict[str, set[str]] = {}
        for upload in list(self.blackboard.uploads):
            name = by_digest.get(_digest(upload.body))
            if name is not None:
                keys.setdefault(name, set()).add(upload.headers.get("Idempotency-Key", ""))
        for name, found in sorted(keys.items()):
            if len(found) > 1:
                figures.duplicated += 1
                problems.append(f"https: {name} was sent under {len(found)} idempotency keys")
        if final:
            for name in sorted(set(expected) - set(held)):
                figures.lost += 1
                problems.append(f"https: {name} never delivered")
        return set(held)

    def _check_local_inodes(
        self, figures: Figures, found: dict[str, list[Path]], where: str = "local"
    ) -> list[str]:
        problems = []
        for name, paths in found.items():
            if name.endswith(LEFTOVER_SUFFIXES):
                continue
            inode = paths[0].stat().st_ino
            seen = self._inodes.setdefault(f"{where}:{name}", inode)
            if seen != inode:
                figures.duplicated += 1
                problems.append(f"{where}: {name} was delivered again (replaced by a new file)")
                self._inodes[f"{where}:{name}"] = inode
        return problems

    def _check_renames(self, figures: Figures) -> list[str]:
        renamed = Counter(
            command.path
            for command in self.ftps.commands_named("RNTO")
            if command.code == 250 and command.path
        )
        problems = []
        for path, count in sorted(renamed.items()):
            if count > 1:
                problems.append(f"ftp: {path} renamed into place {count} times")
        figures.duplicated += sum(count - 1 for count in renamed.values() if count > 1)
        self._renamed = renamed
        return problems

    def _check_mailbox(
        self, figures: Figures, complete: dict[str, set[str]], *, final: bool
    ) -> list[str]:
        problems = []
        archived = Counter(_message_ids(self.mail_user, "Archive"))
        inbox = Counter(_message_ids(self.mail_user, "INBOX"))
        delivered_everywhere = set.intersection(*complete.values()) if complete else set()
        for mail in self.mails:
            times = archived[mail.message_id]
            if times > 1:
                figures.duplicated += times - 1
                problems.append(f"mail {mail.message_id} is {times} times in the archive folder")
            if not mail.is_export:
                if times or (final and inbox[mail.message_id] != 1):
                    figures.ordinary_touched += 1
                    problems.append(f"ordinary mail {mail.message_id} was moved")
                continue
            files = {name for export in mail.exports for name in export.files}
            if times and not files <= delivered_everywhere:
                figures.archived_early += 1
                missing = sorted(files - delivered_everywhere)
                problems.append(f"mail {mail.message_id} archived before {missing} was delivered")
            if final:
                if times != 1 or inbox[mail.message_id]:
                    problems.append(f"export mail {mail.message_id} not archived exactly once")
                else:
                    figures.archived += 1
        if final:
            unread = _unread(self.mail_user)
            if not unread:
                figures.ordinary_touched += 1
                problems.append("an ordinary mail in the inbox was marked read")
        return problems

    def _check_ledger(self, figures: Figures) -> list[str]:
        problems = []
        with sqlite3.connect(self.state / "ledger.sqlite") as db:
            db.row_factory = sqlite3.Row
            integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
            if integrity != "ok":
                problems.append(f"ledger integrity_check: {integrity}")
            for row in db.execute("SELECT key, state FROM exports WHERE state != 'delivered'"):
                problems.append(f"ledger: export {row['key']} is {row['state']}")
            keys = {row["key"] for row in db.execute("SELECT key FROM exports")}
            wanted = {e.key for m in self.mails for e in m.exports}
            if keys != wanted:
                problems.append(f"ledger: exports {sorted(keys ^ wanted)} differ from the mails")
            by_id = {row["message_id"]: row["state"] for row in db.execute("SELECT * FROM mails")}
            for mail in self.mails:
                state = by_id.get(mail.message_id)
                # Ordinary mails do not match source.search, so they are never even read.
                allowed = {"archived"} if mail.is_export else {None, "ignored"}
                if state not in allowed:
                    problems.append(f"ledger: mail {mail.message_id} is {state}")
            for row in db.execute("SELECT id, state FROM deliveries WHERE state != 'done'"):
                problems.append(f"ledger: delivery {row['id']} is {row['state']}")
            if self.blackboard is not None:
                for row in db.execute(
                    "SELECT id, status FROM deliveries WHERE status IS NOT NULL"
                    " AND status != 'done'"
                ):
                    problems.append(f"ledger: delivery {row['id']} is {row['status']} there")
            doubles = db.execute(
                "SELECT file_id, destination, count(*) AS n FROM deliveries WHERE state = 'done'"
                " GROUP BY file_id, destination HAVING n > 1"
            ).fetchall()
            problems += [f"ledger: file {r['file_id']} done {r['n']} times" for r in doubles]
            files = db.execute("SELECT count(*) FROM files").fetchone()[0]
            wanted_files = sum(len(e.files) for m in self.mails for e in m.exports)
            if files != wanted_files:
                problems.append(f"ledger: {files} files recorded, {wanted_files} expected")
        figures.ledger_problems += len(problems)
        return problems


_digests: dict[tuple[str, int, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """SHA-256 of a file, remembered while the file stays the same (inode, size, mtime)."""
    info = path.stat()
    key = (str(path), info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _digests:
        _digests[key] = _digest(path.read_bytes())
    return _digests[key]


def _message_ids(mail_user: Any, mailbox: str) -> list[str]:
    if mailbox not in mail_user.mailboxes():
        return []
    found = []
    for raw in mail_user.fetch_all(mailbox).values():
        value = email.message_from_bytes(raw)["Message-ID"]
        found.append(str(value).strip() if value else "")
    return found


def _unread(mail_user: Any) -> bool:
    """Whether no mail left in the inbox carries the \\Seen flag."""
    return all(b"\\Seen" not in flags for flags in mail_user.flags("INBOX").values())


# --- the driver ----------------------------------------------------------------------


def _phase(log: str) -> str:
    """What a randomly killed run was doing after its start-up, from its last log line."""
    lines = [line for line in log.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    for marker, phase in (
        ("moved mail", "archiving"),
        ("Copied", "delivering"),
        ("Unpacked", "delivering"),
        ("downloaded", "unpacking and rewriting"),
        ("attached file", "unpacking and rewriting"),
        ("resuming export", "unpacking or delivering"),
        ("export mail for export", "IMAP fetch or download"),
    ):
        if marker in last:
            return phase
    return "download (resumed) or IMAP fetch"


def _kill_delay(rng: random.Random, startup: float, work: float, share: float) -> float:
    """A random delay: in the start-up as often as an uninterrupted run over one mail
    spends there, else uniformly over ``share`` of one mail's work after it."""
    if rng.random() < startup / (startup + work):
        return rng.uniform(0.0, startup)
    return startup + rng.uniform(0.0, share * work)


def _adapt(share: float, took: float, pace: float) -> float:
    """The next share of a mail's work in the kill window: smaller when the last batch
    was done with fewer kills per mail than ``pace``, larger when it took more."""
    if took < pace:
        share *= 0.7
    elif took > pace:
        share *= 1.3
    return min(1.0, max(0.1, share))


def run_once(
    config: Path,
    logs: Path,
    extra_env: dict[str, str],
    *,
    kill_after: float | None = None,
    kill_at: str | None = None,
    timeout: float = 300.0,
) -> RunOutcome:
    """``exportmon -c CONFIG run --once`` in a child process, its stderr kept in a new
    numbered file in ``logs``; killed by SIGKILL after ``kill_after`` seconds, or at
    the crash point ``kill_at`` (``name[:n]``). A traceback in its output, or a run
    that outlasts ``timeout`` when no kill was asked for, fails the test."""
    env = {**os.environ, **extra_env, "COLUMNS": "200"}
    env.pop(ENVIRONMENT, None)
    if kill_at is not None:
        env[ENVIRONMENT] = kill_at
    number = len(list(logs.iterdir())) + 1
    log_path = logs / f"run-{number:04d}.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "exportmon", "-c", str(config), "run", "--once"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
        killed = None
        try:
            child.wait(timeout=kill_after if kill_after is not None else timeout)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                child.kill()
                child.wait()
                raise AssertionError(f"run did not end within {timeout} s: {log_path}") from None
            child.send_signal(signal.SIGKILL)
            child.wait()
            killed = "timer"
    seconds = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    if killed is None and child.returncode == -signal.SIGKILL:
        killed = "point"
    if "Traceback (most recent call last)" in text:
        raise AssertionError(f"exportmon printed a traceback:\n{text}")
    point = kill_at.split(":")[0] if killed == "point" and kill_at else None
    return RunOutcome(child.returncode, seconds, killed, point, text)


def _count(
    figures: Figures,
    world: Any,
    outcome: RunOutcome,
    say: Callable[[str], None],
    *,
    startup: float | None = None,
) -> None:
    """Count one run in ``figures``; after a kill, check the safety invariants at once.

    With ``startup`` (the seconds of a run with nothing to do), a kill by timer is
    also counted by the phase it landed in.
    """
    figures.runs += 1
    if outcome.killed == "timer":
        figures.kills_timer += 1
        if startup is not None:
            late = outcome.seconds >= startup
            figures.phases[_phase(outcome.log) if late else "start-up and poll"] += 1
    elif outcome.killed == "point":
        figures.kills_point += 1
        figures.points[outcome.point or "?"] += 1
    elif outcome.code != 0:
        figures.failed_runs += 1
        figures.problems.append(f"run {figures.runs} failed without a kill:\n{outcome.log}")
    figures.completed_after_crash += outcome.log.count("after an interruption")
    if outcome.killed:
        problems = world.check(figures, final=False)
        if problems:
            say(f"after kill {figures.kills}: " + "; ".join(problems))


def crash_loop(
    world: CrashWorld,
    *,
    kills: int,
    mails: int,
    batch: int = 1,
    seed: int = 1,
    point_share: float = 0.5,
    report: Any = None,
) -> Figures:
    """Kill and restart ``exportmon run --once`` until at least ``kills`` kills were made
    and ``mails`` mails appended (in batches) are all done; check the invariants after
    every kill and at the end. Returns the figures; ``figures.problems`` lists every
    invariant that was broken (empty when all is well)."""
    rng = random.Random(seed)
    figures = Figures()
    started = time.monotonic()
    say = report or (lambda text: None)

    # Calibration: one mail of each kind, uninterrupted, then a run with nothing to do.
    world.add_mails(3)
    calibration = world.run()
    idle = world.run()
    figures.runs += 2
    if calibration.code != 0 or idle.code != 0 or not world.done():
        raise AssertionError(f"the uninterrupted first run failed:\n{calibration.log}")
    # A kill is drawn uniformly over an uninterrupted run over one mail: start-up and
    # poll, then (a share of, see the module docs) one mail's work, the mean of the kinds.
    startup = idle.seconds
    work = max(0.1, (calibration.seconds - startup) / 3)
    share = 1.0
    figures.window = startup + work
    world.check(figures, final=False)
    say(
        f"calibration: {calibration.seconds:.2f} s for 3 mails, {startup:.2f} s with nothing "
        f"to do; kills within {figures.window:.2f} s"
    )

    points = dict(POINT_PASSES)
    if world.blackboard is not None:
        points.update(HTTPS_POINT_PASSES)
    if world.sftp is not None:
        points.update(SFTP_POINT_PASSES)
    runs_limit = 30 * (kills + mails)
    stuck = 0
    # The calibration mails took no kills: the kills are spread over the others.
    pace = kills / max(1, mails - len(world.mails))
    batch_started = (0, len(world.mails))  # (kills, mails) when the batch was appended
    while True:
        if world.done():
            stuck = 0
            if len(world.mails) >= mails and figures.kills >= kills:
                break
            took, added = figures.kills - batch_started[0], len(world.mails) - batch_started[1]
            if added:
                share = _adapt(share, took / (added or 1), pace)
                figures.window = startup + share * work
                figures.shortest_window = min(figures.shortest_window, figures.window)
            batch_started = (figures.kills, len(world.mails))
            world.add_mails(batch)
            continue
        killing = figures.kills < kills or len(world.mails) < mails
        kill_after = kill_at = None
        if killing and rng.random() < point_share:
            point = rng.choice(sorted(points))
            kill_at = f"{point}:{rng.randint(1, points[point])}"
        elif killing:
            kill_after = _kill_delay(rng, startup, work, share)
        outcome = world.run(kill_after=kill_after, kill_at=kill_at)
        _count(figures, world, outcome, say, startup=startup)
        if not outcome.killed and outcome.code == 0 and not world.done():
            # A whole run that leaves work undone will not do it next time either.
            stuck += 1
            if stuck >= 3:
                figures.problems.append("runs end without error but leave work undone")
                break
        if figures.runs % 25 == 0:
            say(
                f"{figures.runs} runs, {figures.kills} kills, {len(world.mails)} mails, "
                f"{time.monotonic() - started:.0f} s"
            )
        if figures.runs > runs_limit:
            figures.problems.append(f"no end after {figures.runs} runs")
            break
    world.check(figures, final=True)
    figures.mails = len(world.mails)
    figures.export_mails = sum(1 for mail in world.mails if mail.is_export)
    figures.exports = sum(len(mail.exports) for mail in world.mails)
    figures.seconds = time.monotonic() - started
    return figures


# --- the folder source ----------------------------------------------------------------

#: Blackboard SIS snapshot headers, in the order their files must be delivered.
SNAPSHOT_HEADERS = {
    "users": "EXTERNAL_PERSON_KEY|USER_ID|FIRSTNAME|LASTNAME|EMAIL",
    "courses": "EXTERNAL_COURSE_KEY|COURSE_ID|COURSE_NAME",
    "memberships": "EXTERNAL_COURSE_KEY|EXTERNAL_PERSON_KEY|ROLE",
}
SNAPSHOT_TYPES = [
    {"name": "users", "header_has": ["EXTERNAL_PERSON_KEY", "USER_ID"]},
    {"name": "courses", "header_has": ["EXTERNAL_COURSE_KEY", "COURSE_ID"]},
    {"name": "memberships", "header_has": ["EXTERNAL_COURSE_KEY", "EXTERNAL_PERSON_KEY"]},
]
#: The crash points a folder monitor passes (no download, no FTP).
FOLDER_POINTS = {
    "atomic.rename": 3,
    "unpack.placed": 1,
    "deliver.started": 2,
    "deliver.placed": 2,
    "export.delivered": 1,
    "archive.moved": 1,
    "ledger.commit": 30,
}


class FolderCrashWorld:
    """A drop folder (``kind = "folder"``) that batches of snapshot files (users,
    courses, memberships; ``|``-separated, of random sizes) are dropped into, in
    random order; delivered to a local folder (``replace``) and an ``archive_dir``
    (time-stamped, so a second delivery is a second file); originals archived to a
    processed folder with their time stamp.

    Invariants (:meth:`check`): after every kill, a delivered or archived file has
    the bytes of its original (nothing partial), no file is delivered twice (once in
    ``archive_dir``, the local copy keeps its inode) or archived twice, and no
    original is archived before it reached both destinations; at the end, every
    file is delivered and archived exactly once, the drop folder is empty, and the
    ledger holds one delivered export, one archived mail and one done delivery per
    file and destination. The delivery order within a batch is checked from the
    ledger (users before courses before memberships).
    """

    def __init__(self, workdir: Path, *, seed: int = 1, rows: int = 4000) -> None:
        self.workdir = Path(workdir)
        self.rng = random.Random(seed)
        self.rows = rows
        self.inbox = self.workdir / "outbox"
        self.processed = self.workdir / "processed"
        self.local = self.workdir / "delivered"
        self.copies = self.workdir / "archive-copies"
        self.state = self.workdir / "state"
        self.logs = self.workdir / "runs"
        for folder in (self.inbox, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        #: File name → SHA-256 of its bytes, for every file dropped so far.
        self.files: dict[str, str] = {}
        self.batches: list[list[str]] = []
        self._inodes: dict[str, int] = {}
        source = {
            "kind": "folder",
            "path": str(self.inbox),
            "patterns": ["*.txt"],
            "settle": "1s",
            "archive": str(self.processed),
        }
        data = config_data(
            self.state,
            source,
            ids=(1,),
            allow_hosts=(),
            deliver={
                "to": str(self.local),
                "archive_dir": str(self.copies),
                "order": list(SNAPSHOT_HEADERS),
            },
        )
        data["types"] = SNAPSHOT_TYPES
        self.config = write_config(self.workdir / "monitors", data, "sis")

    def drop_batch(self) -> list[str]:
        """Drop one users, courses and memberships file, in random order, each written
        under a dot-name and renamed into place (as an SFTP server does)."""
        number = len(self.batches) + 1
        kinds = list(SNAPSHOT_HEADERS)
        self.rng.shuffle(kinds)
        names = []
        for kind in kinds:
            name = f"{kind}-{number:04d}.txt"
            rows = [SNAPSHOT_HEADERS[kind]]
            columns = SNAPSHOT_HEADERS[kind].count("|") + 1
            for line in range(self.rng.randint(self.rows // 2, self.rows)):
                rows.append("|".join(f"{kind[0]}{line}-{c}" for c in range(columns)))
            data = ("\n".join(rows) + "\n").encode()
            temp = self.inbox / f".{name}.part"
            temp.write_bytes(data)
            moment = time.time() - 5
            os.utime(temp, (moment, moment))
            os.replace(temp, self.inbox / name)
            self.files[name] = _digest(data)
            names.append(name)
        self.batches.append(names)
        return names

    def run(self, *, kill_after: float | None = None, kill_at: str | None = None) -> RunOutcome:
        """One ``exportmon run --once``, killed as asked."""
        return run_once(self.config, self.logs, {}, kill_after=kill_after, kill_at=kill_at)

    def done(self) -> bool:
        ledger = self.state / "ledger.sqlite"
        if not ledger.exists():
            return False
        with sqlite3.connect(ledger) as db:
            exports = db.execute("SELECT count(*), sum(state != 'delivered') FROM exports")
            total, open_exports = exports.fetchone()
            open_mails = db.execute(
                "SELECT count(*) FROM mails WHERE state IN ('new', 'delivered')"
            ).fetchone()[0]
        return total == len(self.files) and not open_exports and not open_mails

    def check(self, figures: Figures, *, final: bool) -> list[str]:
        problems: list[str] = []
        places = {
            "local": CrashWorld._files(self.local),
            "archive_dir": CrashWorld._files(self.copies, stamped=True),
            "processed": CrashWorld._files(self.processed, stamped=True),
        }
        complete: dict[str, set[str]] = {}
        for place, found in places.items():
            complete[place] = set()
            for relative, paths in found.items():
                name = relative.rsplit("/", 1)[-1]
                if name.endswith(LEFTOVER_SUFFIXES) or name.startswith("."):
                    if final:
                        figures.leftovers += len(paths)
                        problems.append(f"{place}: left over {relative}")
                    continue
                if len(paths) > 1:
                    figures.duplicated += len(paths) - 1
                    problems.append(f"{place}: {relative} {len(paths)} times")
                if name not in self.files:
                    figures.partial += 1
                    problems.append(f"{place}: unexpected file {relative}")
                    continue
                if {_file_digest(path) for path in paths} != {self.files[name]}:
                    figures.partial += 1
                    problems.append(f"{place}: {relative} has the wrong bytes")
                    continue
                complete[place].add(name)
        for relative, paths in places["local"].items():
            inode = paths[0].stat().st_ino
            if self._inodes.setdefault(relative, inode) != inode:
                figures.duplicated += 1
                problems.append(f"local: {relative} was delivered again")
                self._inodes[relative] = inode
        delivered = complete["local"] & complete["archive_dir"]
        for name in sorted(complete["processed"] - delivered):
            figures.archived_early += 1
            problems.append(f"processed: {name} archived before it was delivered")
        if final:
            for place, names in complete.items():
                for name in sorted(set(self.files) - names):
                    figures.lost += 1
                    problems.append(f"{place}: {name} missing")
            left = sorted(os.listdir(self.inbox))
            if left:
                problems.append(f"outbox: {left} left")
            problems += self._check_ledger(figures)
            figures.files = len(self.files)
            figures.deliveries = len(complete["local"]) + len(complete["archive_dir"])
            figures.archived = len(complete["processed"])
        figures.problems += problems
        return problems

    def _check_ledger(self, figures: Figures) -> list[str]:
        problems = []
        with sqlite3.connect(self.state / "ledger.sqlite") as db:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                problems.append("ledger: integrity_check failed")
            states = Counter(db.execute("SELECT state FROM exports").fetchall())
            if states != Counter({("delivered",): len(self.files)}):
                problems.append(f"ledger: exports {dict(states)}")
            mails = Counter(db.execute("SELECT state FROM mails").fetchall())
            if mails != Counter({("archived",): len(self.files)}):
                problems.append(f"ledger: mails {dict(mails)}")
            doubles = db.execute(
                "SELECT file_id, destination FROM deliveries WHERE state = 'done'"
                " GROUP BY 1, 2 HAVING count(*) > 1"
            ).fetchall()
            problems += [f"ledger: file {row[0]} done twice at {row[1]}" for row in doubles]
            done = db.execute("SELECT count(*) FROM deliveries WHERE state = 'done'").fetchone()[0]
            if done != 2 * len(self.files):
                problems.append(f"ledger: {done} deliveries done, {2 * len(self.files)} expected")
            first = {
                name: row_id
                for row_id, name in db.execute(
                    "SELECT min(d.id), e.file_name FROM deliveries d"
                    " JOIN exports e ON d.export_row = e.id GROUP BY e.file_name"
                )
            }
        for batch in self.batches:
            ordered = sorted(batch, key=lambda n: list(SNAPSHOT_HEADERS).index(n.split("-")[0]))
            starts = [first.get(name, 0) for name in ordered]
            if starts != sorted(starts):
                problems.append(f"order: {ordered} delivered out of type order")
        figures.ledger_problems += len(problems)
        return problems


def folder_crash_loop(
    world: FolderCrashWorld, *, kills: int, batches: int, seed: int = 1, report: Any = None
) -> Figures:
    """Kill and restart ``run --once`` on a folder monitor until at least ``kills``
    kills were made and ``batches`` batches dropped are all done (half the kills at a
    named crash point, half after a random delay over an uninterrupted run's
    duration); check the invariants after every kill and at the end."""
    rng = random.Random(seed)
    figures = Figures()
    started = time.monotonic()
    say = report or (lambda text: None)
    world.drop_batch()
    calibration = world.run()
    figures.runs += 1
    if calibration.code != 0 or not world.done():
        raise AssertionError(f"the uninterrupted first run failed:\n{calibration.log}")
    window = calibration.seconds
    figures.window = figures.shortest_window = window
    say(f"calibration: {window:.2f} s for one batch")
    while True:
        if world.done():
            if len(world.batches) >= batches and figures.kills >= kills:
                break
            world.drop_batch()
            continue
        killing = figures.kills < kills
        kill_at = kill_after = None
        if killing and rng.random() < 0.5:
            point = rng.choice(sorted(FOLDER_POINTS))
            kill_at = f"{point}:{rng.randint(1, FOLDER_POINTS[point])}"
        elif killing:
            kill_after = rng.uniform(0.0, window)
        outcome = world.run(kill_after=kill_after, kill_at=kill_at)
        _count(figures, world, outcome, say)
        if figures.runs > 30 * (kills + batches):
            figures.problems.append(f"no end after {figures.runs} runs")
            break
    world.check(figures, final=True)
    figures.mails = figures.export_mails = figures.exports = len(world.files)
    figures.seconds = time.monotonic() - started
    return figures


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.stress crash``: the full-size crash-safety run."""
    import argparse
    import tempfile

    from stress.servers import running_servers

    parser = argparse.ArgumentParser(prog="python -m tests.stress crash", description=__doc__)
    parser.add_argument("--runs", type=int, default=200, help="kills to make at least")
    parser.add_argument("--mails", type=int, default=36, help="mails to append at least")
    parser.add_argument("--batch", type=int, default=1, help="mails appended at a time")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--folder",
        action="store_true",
        help="a drop-folder monitor instead (--mails counts batches of three files)",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    workdir = Path(tempfile.mkdtemp(prefix="exportmon-crash-"))
    print(f"seed {seed}; work folder {workdir}", flush=True)
    if args.folder:
        figures = folder_crash_loop(
            FolderCrashWorld(workdir, seed=seed),
            kills=args.runs,
            batches=args.mails,
            seed=seed,
            report=lambda text: print(text, flush=True),
        )
        return _report(figures, workdir, keep=args.keep)
    with running_servers(workdir) as servers:
        user = servers.dovecot.add_user()
        world = CrashWorld(
            workdir,
            user,
            servers.https_server,
            servers.ftps_server,
            servers.tls_ca,
            seed=seed,
        )
        figures = crash_loop(
            world,
            kills=args.runs,
            mails=args.mails,
            batch=args.batch,
            seed=seed,
            report=lambda text: print(text, flush=True),
        )
    return _report(figures, workdir, keep=args.keep)


def _report(figures: Figures, workdir: Path, *, keep: bool) -> int:
    print()
    print(figures.table())
    print()
    print(figures.details())
    if figures.problems:
        print("\nPROBLEMS:")
        for problem in figures.problems:
            print("  " + problem)
    if not keep and not figures.problems:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if figures.problems else 0
