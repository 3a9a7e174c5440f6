"""The drop-folder source (``kind = "folder"``): export files another system writes
into a folder, taken once each when complete, typed by their header row.

Each file becomes a ledger "mail" (source ``folder:<path>``, subject the file name)
with one attachment export carrying a copy of the file in the downloads folder, so
unpacking, rewriting, delivery, alerts, status, reports and exactly-once are those
of mail exports. Archiving moves the original after delivery.

* **Which files:** regular files directly in the folder whose names match
  ``source.patterns`` (any letter case); never dot-files, partial files
  (:data:`PARTIAL_SUFFIXES`), folders, or symbolic links (not even followed to
  look at them), and never a ``trigger`` file.
* **Complete:** with ``trigger = "{name}.done"``, once that file exists and is not
  older than the file (it is removed once the file is taken); otherwise once size
  and modification time have stayed the same for ``settle``, judged from ``stat``
  alone: the modification time must be ``settle`` old, and when this process saw
  the file change, the change must be ``settle`` ago. An empty file is never
  complete. A file that may still be written is never held open; its first bytes
  are read (to find its type) only when ``order`` needs it.
* **Type:** the first ``[[types]]`` rule whose ``header_has`` columns are all in
  the header row (split by ``header_sep``, or the separator the row uses most of
  ``| TAB ; ,``; for a zip, the first member's header) and whose ``name_pattern``
  (a regular expression searched for in the name) matches. With no ``[[types]]``
  the type comes from the name as for mail exports. A file no rule matches is
  reported once (a WARNING, remembered in the ledger) and left in place.
* **Identity:** name, size, modification time (ns) and SHA-256 make the mail's
  key, so a file processed once is never taken again — also when a crash came
  between delivery and archiving — while a file replaced under the same name is a
  new export. SHA-256 sums are remembered per inode and change time in memory.
* **Order:** the files complete in one poll are recorded (and so delivered) in
  the ``order`` of their types (:func:`type_order`), then by modification time; a
  file waits while a file of a type earlier in that order is still being written.
* **Archive:** ``source.archive`` (relative: inside the folder; ``""``: leave the
  files) receives the original as ``NAME.<UTC stamp>.EXT`` by a hard link and an
  unlink of the original (a copy, fsync and rename across file systems), the
  folders fsynced; a file already archived before a crash is not archived twice.
* **Watching:** :meth:`FolderSource.wait_for_change` looks at the folder's
  modification time twice a second and wakes when a settling file may be due.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import hashlib
import io
import os
import re
import stat
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from exportmon.atomic import COPY_BUFFER, atomic_write
from exportmon.errors import ArchiveError, ExportmonError, MailError, UnsafePathError
from exportmon.files.names import (
    UnsafeName,
    export_type,
    safe_file_name,
    timestamped_name,
)
from exportmon.ledger import to_text
from exportmon.log import get_logger
from exportmon.mail.message import FoundExport, MailInfo
from exportmon.mail.source import (
    ArchiveOutcome,
    MailLocation,
    MailSource,
    PolledMail,
    known_uids,
)
from exportmon.paths import download_hint, export_dir
from exportmon.safe_open import folder as open_dir
from exportmon.safe_open import open_nofollow

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig, TypeConfig
    from exportmon.ledger import Ledger, Mail

log = get_logger(__name__)

#: Names of files still being written by common tools: never taken.
PARTIAL_SUFFIXES = (
    ".part",
    ".tmp",
    ".partial",
    ".crdownload",
    ".filepart",
    ".in_progress",
    ".swp",
    "~",
)
#: The separators sniffed in a header row, most likely first when counts tie.
SEPARATORS = ("|", "\t", ";", ",")
#: The most of a file read to find its header row.
HEADER_BYTES = 64 * 1024
#: How often :meth:`FolderSource.wait_for_change` looks at the folder.
WATCH_INTERVAL = 0.5
_STAMP = r"\.\d{8}T\d{6}Z(?:-\d+)?"


@dataclass(frozen=True)
class Snapshot:
    """What ``stat`` says about a file: enough to see it change."""

    size: int
    mtime_ns: int
    ino: int
    dev: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> Snapshot:
        return cls(info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev, info.st_ctime_ns)

    def same_content_as(self, other: Snapshot) -> bool:
        """Whether nothing was written in between (size, mtime and inode equal)."""
        return (self.size, self.mtime_ns, self.ino) == (other.size, other.mtime_ns, other.ino)


@dataclass
class FileState:
    """One entry of the folder and what a poll makes of it (also ``explain``'s answer)."""

    name: str
    #: ``export`` (a candidate), ``ignored`` (dot-file, partial, no pattern), ``link``,
    #: ``folder``, ``other`` (not a regular file), ``trigger``.
    entry: str
    pattern: str | None = None
    snapshot: Snapshot | None = None
    complete: bool = False
    #: Why it is not complete yet (or why it is ignored).
    waiting: str | None = None
    type: str | None = None
    #: Which rule gave the type: ``types[0] users (header_has ...)``, ``file name``.
    rule: str | None = None
    #: Why no rule matched, when none did.
    no_rule: str | None = None
    sha256: str | None = None
    #: ``mail #3 (archived)`` when the same file was taken before.
    processed: str | None = None
    #: Waits for a file of an earlier type that is still being written.
    held_by: str | None = None

    @property
    def takeable(self) -> bool:
        return (
            self.entry == "export"
            and self.complete
            and self.no_rule is None
            and self.processed is None
            and self.held_by is None
        )


def type_order(monitor: MonitorConfig) -> list[str]:
    """The export types files are taken in: the first ``order`` of the destinations
    (``[[deliver]]`` entries where the config has them, else ``[deliver]``)."""
    for destination in getattr(monitor, "destinations", ()):
        if destination.order:
            return list(destination.order)
    return list(monitor.deliver.order)


def identity(name: str, snapshot: Snapshot, sha256: str) -> str:
    """A file's key in the ledger (the mail's uid): name, size, mtime and SHA-256."""
    return f"{name}|{snapshot.size}|{snapshot.mtime_ns}|{sha256}"


def parse_identity(uid: str) -> tuple[str, int, int, str] | None:
    """``(name, size, mtime_ns, sha256)`` of an :func:`identity`, or None."""
    parts = uid.rsplit("|", 3)
    if len(parts) != 4:
        return None
    name, size, mtime, sha256 = parts
    try:
        return name, int(size), int(mtime), sha256
    except ValueError:
        return None


def matching_pattern(name: str, patterns: list[str]) -> str | None:
    """The first of ``patterns`` that ``name`` matches, letter case ignored."""
    folded = name.casefold()
    for pattern in patterns:
        if fnmatch.fnmatchcase(folded, pattern.casefold()):
            return pattern
    return None


def is_partial(name: str) -> bool:
    """Whether ``name`` is a hidden or partial file (still being written by its tool)."""
    return name.startswith(".") or name.casefold().endswith(PARTIAL_SUFFIXES)


def header_columns(line: str, separator: str | None) -> tuple[list[str], str]:
    """The column names of a header row, and the separator used (sniffed when None)."""
    line = line.lstrip("\ufeff").rstrip("\r\n")
    if separator is None:
        counts = [(line.count(sep), -index, sep) for index, sep in enumerate(SEPARATORS)]
        best = max(counts)
        separator = best[2] if best[0] else ","
    columns = [column.strip().strip('"').strip() for column in line.split(separator)]
    return columns, separator


def first_line(data: bytes) -> str:
    """The first line of ``data`` as text (UTF-8, else Latin-1)."""
    line = data.split(b"\n", 1)[0]
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def classify(
    name: str, header: str | None, rules: list[TypeConfig], separator: str | None
) -> tuple[str | None, str | None, str | None]:
    """``(type, rule, no_rule)``: the first rule of ``rules`` that matches the file.

    ``header`` is its header row (None when it has none). Without rules the type
    comes from the name, as for mail exports. ``no_rule`` says why none matched.
    """
    if not rules:
        return export_type(name), "file name", None
    columns, used = header_columns(header, separator) if header is not None else ([], "")
    for index, rule in enumerate(rules):
        if rule.name_pattern is not None and not re.search(rule.name_pattern, name):
            continue
        if rule.header_has and not set(rule.header_has) <= set(columns):
            continue
        how = []
        if rule.header_has:
            how.append("header_has " + ", ".join(rule.header_has))
        if rule.name_pattern is not None:
            how.append(f"name_pattern {rule.name_pattern!r}")
        return rule.name, f"types[{index}] {rule.name} ({'; '.join(how)})", None
    shown = {"\t": "TAB", ",": "comma"}.get(used, used)
    if header is None:
        return None, None, "no [[types]] rule matches its name (and it has no header row)"
    head = ", ".join(columns[:4]) + (", ..." if len(columns) > 4 else "")
    return None, None, f"no [[types]] rule matches its name or header ({shown}: {head})"


class FolderSource(MailSource):
    """``kind = "folder"``: see the module documentation."""

    kind = "folder"

    def __init__(self, monitor: MonitorConfig) -> None:
        super().__init__(monitor)
        config = monitor.source
        self.path = Path(config.path or "")
        self.key = f"folder:{self.path}"
        self.mailbox = ""
        archive = config.archive or ""
        self.archive_dir = Path(archive) if archive else None
        self.moves_mail = self.archive_dir is not None
        self.export_id = config.export_id if config.export_id is not None else monitor.ids[0]
        self.settle = config.settle or 0.0
        #: Per name: the snapshot last seen and, for a file this process saw change,
        #: when (monotonic) it saw the change.
        self._changes: dict[str, tuple[Snapshot, float | None]] = {}
        self._digests: dict[tuple[str, Snapshot], str] = {}
        #: When (monotonic) the next settling file may be complete.
        self._due: float | None = None

    # -- looking at the folder ------------------------------------------------------

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise MailError(
                f"folder {self.path} cannot be read: {exc.strerror}", hint="check source.path"
            ) from None

    def survey(self, ledger: Ledger | None, *, names: list[str] | None = None) -> list[FileState]:
        """Every entry of the folder (or those ``names``) and what a poll makes of it.

        With a ``ledger``, files taken before are marked ``processed``. Reads only
        header rows, and whole files only to compare them with ones taken before.
        """
        fd = self._open()
        try:
            if names is None:
                names = sorted(os.listdir(fd))
                listed = set(names)
                for gone in set(self._changes) - listed:
                    del self._changes[gone]
                for key in [k for k in self._digests if k[0] not in listed]:
                    del self._digests[key]
            trigger = self.monitor.source.trigger
            triggers = {trigger.format(name=n) for n in names} if trigger else set()
            known = self._known(ledger) if ledger is not None else {}
            states = [self._look(fd, name, triggers, known, ledger) for name in names]
        finally:
            os.close(fd)
        self._hold_for_order(states)
        return states

    def _known(self, ledger: Ledger) -> dict[tuple[str, int, int], list[str]]:
        """Files taken before, by name, size and mtime: their SHA-256 sums."""
        known: dict[tuple[str, int, int], list[str]] = {}
        for uid in known_uids(ledger, self.key):
            parsed = parse_identity(uid)
            if parsed is not None:
                name, size, mtime, sha256 = parsed
                known.setdefault((name, size, mtime), []).append(sha256)
        return known

    def _look(
        self,
        fd: int,
        name: str,
        triggers: set[str],
        known: dict[tuple[str, int, int], list[str]],
        ledger: Ledger | None,
    ) -> FileState:
        config = self.monitor.source
        if is_partial(name):
            return FileState(name, "ignored", waiting="a hidden or partial file (never taken)")
        if name in triggers:
            return FileState(
                name, "trigger", waiting="the trigger file of another file (never taken)"
            )
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return FileState(name, "ignored", waiting="gone")
        if stat.S_ISLNK(info.st_mode):
            return FileState(name, "link", waiting="a symbolic link (never followed)")
        if stat.S_ISDIR(info.st_mode):
            return FileState(name, "folder", waiting="a folder (not looked into)")
        if not stat.S_ISREG(info.st_mode):
            return FileState(name, "other", waiting="not a regular file")
        pattern = matching_pattern(name, config.patterns)
        snapshot = Snapshot.of(info)
        if pattern is None:
            shown = ", ".join(config.patterns)
            return FileState(
                name, "ignored", snapshot=snapshot, waiting=f"matches no pattern ({shown})"
            )
        state = FileState(name, "export", pattern, snapshot)
        state.complete, state.waiting = self._completeness(fd, name, snapshot)
        # The header of a file still being written is read only for the order rule.
        if state.complete or type_order(self.monitor):
            header = self._header(fd, name, snapshot)
            rules = self.monitor.types
            state.type, state.rule, state.no_rule = classify(name, header, rules, config.header_sep)
        candidates = known.get((name, snapshot.size, snapshot.mtime_ns))
        if candidates and ledger is not None:
            try:
                state.sha256 = self._digest(fd, name, snapshot)
            except (OSError, UnsafePathError):  # unreadable: taking it says so
                return state
            if state.sha256 in candidates:
                uid = identity(name, snapshot, state.sha256)
                mail = ledger.find_mail(source=self.key, mailbox="", uidvalidity=None, uid=uid)
                state.processed = f"mail #{mail.id} ({mail.state})" if mail else "before"
        return state

    def _completeness(self, fd: int, name: str, snapshot: Snapshot) -> tuple[bool, str | None]:
        trigger = self.monitor.source.trigger
        if snapshot.size == 0:
            return False, "empty: waiting for its content"
        if trigger:
            flag = trigger.format(name=name)
            try:
                info = os.stat(flag, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return False, f"waiting for its trigger file {flag}"
            if not stat.S_ISREG(info.st_mode):
                return False, f"its trigger {flag} is not a regular file"
            if info.st_mtime_ns < snapshot.mtime_ns:
                return False, f"changed after its trigger file {flag}: waiting for a new one"
            return True, None
        now = time.monotonic()
        earlier = self._changes.get(name)
        if earlier is None:
            self._changes[name] = (snapshot, None)  # first look: its mtime tells
        elif not earlier[0].same_content_as(snapshot):
            self._changes[name] = (snapshot, now)  # seen changing: count from now too
        changed_at = self._changes[name][1]
        age = time.time() - snapshot.mtime_ns / 1e9
        if age < 0:  # modified "in the future" (another clock): count what we saw
            if changed_at is None:
                changed_at = now
                self._changes[name] = (snapshot, now)
            age = now - changed_at
        elif changed_at is not None:
            age = min(age, now - changed_at)
        if age >= self.settle:
            return True, None
        wait = self.settle - age
        due = now + wait
        self._due = due if self._due is None else min(self._due, due)
        return False, f"settling: unchanged for {age:.0f} s of {self.settle:g} s"

    def _header(self, fd: int, name: str, snapshot: Snapshot) -> str | None:
        """The file's header row (of its first member for a zip), or None."""
        try:
            handle = open_nofollow(name, os.O_RDONLY, dir_fd=fd)
        except (OSError, UnsafePathError):
            return None
        with os.fdopen(handle, "rb") as file:
            start = file.read(4)
            file.seek(0)
            if start.startswith(b"PK\x03\x04"):
                return _zip_header(file)
            data = file.read(HEADER_BYTES)
        if b"\n" not in data and len(data) < snapshot.size:
            return None
        return first_line(data) if data else None

    def _digest(self, fd: int, name: str, snapshot: Snapshot) -> str:
        """The SHA-256 of ``name``, remembered while its snapshot stays the same."""
        key = (name, snapshot)
        if key not in self._digests:
            self._digests[key] = _sha256_at(fd, name)
        return self._digests[key]

    def _rank(self, kind: str | None) -> int:
        order = type_order(self.monitor)
        return order.index(kind) if kind in order else len(order)

    def _hold_for_order(self, states: list[FileState]) -> None:
        """Hold each complete file while a file of an earlier type is still written."""
        writing = [
            s
            for s in states
            if s.entry == "export" and not s.complete and s.type is not None and s.processed is None
        ]
        for state in states:
            if not (state.entry == "export" and state.complete and state.processed is None):
                continue
            earlier = [w for w in writing if self._rank(w.type) < self._rank(state.type)]
            if earlier:
                state.held_by = f"waits for the {earlier[0].type} file {earlier[0].name}"

    # -- the MailSource interface ---------------------------------------------------

    def poll(self, ledger: Ledger, *, dry_run: bool = False) -> list[PolledMail]:
        self._due = None
        states = self.survey(ledger)
        results: list[PolledMail] = []
        for state in states:
            if state.entry == "export" and state.complete and state.no_rule and not state.processed:
                results.append(self._unknown(ledger, state, dry_run))
        ready = [s for s in states if s.takeable]
        ready.sort(key=lambda s: (self._rank(s.type), s.snapshot.mtime_ns if s.snapshot else 0))
        if self.monitor.source.trigger:
            self._remove_old_triggers(states)
        for state in ready:
            try:
                taken = self._take(ledger, state, dry_run)
            except ExportmonError as exc:  # this file cannot be read: the others go on
                results.append(self._unreadable(ledger, state, exc))
                continue
            if taken is not None:
                results.append(taken)
        return results

    def _unreadable(self, ledger: Ledger, state: FileState, exc: ExportmonError) -> PolledMail:
        """A file that cannot be taken (unreadable, no room for its copy): a failure,
        logged as an error once per version of the file, retried by every poll."""
        assert state.snapshot is not None
        key = f"folder-failed:{state.name}:{state.snapshot.size}:{state.snapshot.mtime_ns}"
        if ledger.notice_once(key):
            log.error("%s", exc.one_line())
        else:
            log.info("still failing: %s", exc.one_line())
        location = MailLocation(self.key, "", None, state.name)
        return PolledMail(location, "failed", self._info(state), exc.one_line())

    def _unknown(self, ledger: Ledger, state: FileState, dry_run: bool) -> PolledMail:
        assert state.snapshot is not None
        reason = f"{state.no_rule}; left in the folder"
        key = f"folder-type:{state.name}:{state.snapshot.size}:{state.snapshot.mtime_ns}"
        if not dry_run and ledger.notice_count(key) == 0:
            ledger.notice_once(key)
            log.warning(
                "%s in %s: %s (add a [[types]] rule or move it away; said once)",
                state.name,
                self.path,
                reason,
            )
        location = MailLocation(self.key, "", None, state.name)
        return PolledMail(location, "ignored", self._info(state), reason)

    def _info(self, state: FileState) -> MailInfo:
        sent = None
        if state.snapshot is not None:
            moment = datetime.fromtimestamp(state.snapshot.mtime_ns / 1e9, timezone.utc)
            sent = to_text(moment)
        return MailInfo(None, (), f"folder {self.path}", state.name, sent)

    def _take(self, ledger: Ledger, state: FileState, dry_run: bool) -> PolledMail | None:
        """Record one complete file with a copy of it; None when it changed meanwhile."""
        assert state.snapshot is not None
        try:
            file_name = safe_file_name(state.name)
        except UnsafeName:
            file_name = "export"
        info = self._info(state)
        found = FoundExport(self.export_id, "attachment", "folder", file_name=file_name)
        if dry_run:
            location = MailLocation(self.key, "", None, state.name)
            return PolledMail(location, "export", info, None, None, [], [found])
        fd = self._open()
        try:
            handle = open_nofollow(state.name, os.O_RDONLY, dir_fd=fd)
            sha256 = state.sha256 or self._digest(fd, state.name, state.snapshot)
        except FileNotFoundError:
            return None
        except UnsafePathError as exc:
            raise MailError(f"cannot read {state.name} in {self.path}: {exc.one_line()}") from None
        except OSError as exc:
            raise MailError(
                f"cannot read {state.name} in {self.path}: {exc.strerror}",
                hint="let exportmon's user read the files of source.path",
            ) from None
        finally:
            os.close(fd)
        with os.fdopen(handle, "rb") as reader:
            if not Snapshot.of(os.fstat(reader.fileno())).same_content_as(state.snapshot):
                return None  # written again since it was looked at: next poll
            return self._record(ledger, state, reader, info, found, sha256)

    def _record(
        self,
        ledger: Ledger,
        state: FileState,
        reader: io.BufferedReader,
        info: MailInfo,
        found: FoundExport,
        sha256: str,
    ) -> PolledMail | None:
        assert state.snapshot is not None and found.file_name is not None
        snapshot = state.snapshot
        downloads = self.monitor.dirs.downloads
        uid = identity(state.name, snapshot, sha256)
        # One transaction, as for attachments: a recorded export always has its file,
        # and the copy is the file that was hashed (else it is left for the next poll).
        try:
            with ledger.atomic():
                mail = ledger.add_mail(
                    source=self.key,
                    mailbox="",
                    uidvalidity=None,
                    uid=uid,
                    message_id=None,
                    sender=info.sender,
                    subject=state.name,
                    sent_at=info.sent_at,
                    state="new",
                    note=state.rule,
                )
                export = ledger.add_export(
                    key=f"{self.key}/{uid}",
                    kind="attachment",
                    mail_id=mail.id,
                    export_id=self.export_id,
                    file_name=found.file_name,
                    export_type=state.type,
                )
                hint = download_hint(None, info.sent_at)
                directory = export_dir(downloads, export.id, self.export_id, hint)
                path = directory / found.file_name
                digest = hashlib.sha256()
                with atomic_write(path, within=downloads) as handle:
                    while block := reader.read(COPY_BUFFER):
                        digest.update(block)
                        handle.write(block)
                    after = Snapshot.of(os.fstat(reader.fileno()))
                    if digest.hexdigest() != sha256 or not after.same_content_as(snapshot):
                        raise _Changed
                export = ledger.advance_export(export.id, "new", download_path=str(path))
        except _Changed:
            log.info("%s changed while it was taken: left for the next poll", state.name)
            return None
        except OSError as exc:
            raise ExportmonError(
                f"cannot copy {state.name} into {downloads}: {exc.strerror}",
                hint="free disk space; the file is taken by the next poll",
            ) from None
        what = f" ({state.type})" if state.type else ""
        log.info("took %s for export %s%s from %s", state.name, self.export_id, what, self.path)
        if self.monitor.source.trigger:
            self._remove_trigger(state.name)
        location = MailLocation(self.key, "", None, uid)
        recorded = ledger.mail(mail.id) or mail
        return PolledMail(location, "export", info, None, recorded, [export], [found])

    def _remove_trigger(self, name: str) -> None:
        trigger = self.monitor.source.trigger
        assert trigger is not None
        flag = trigger.format(name=name)
        try:
            with open_dir(self.path) as fd, contextlib.suppress(FileNotFoundError):
                os.unlink(flag, dir_fd=fd)
                os.fsync(fd)
        except OSError as exc:  # the file is taken all the same; its trigger stays
            log.warning("cannot remove the trigger file %s: %s", flag, exc.strerror)

    def _remove_old_triggers(self, states: list[FileState]) -> None:
        """Remove the trigger of a file already taken (a crash came before its removal)."""
        for state in states:
            if state.entry == "export" and state.processed is not None and state.complete:
                self._remove_trigger(state.name)

    def archive(self, mail: Mail) -> ArchiveOutcome:
        parsed = parse_identity(mail.uid or "")
        if self.archive_dir is None:
            return "kept"
        if parsed is None:
            return "gone"
        name, size, mtime_ns, sha256 = parsed
        try:
            with open_dir(self.path) as fd:
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    return self._moved_before(name, size, mtime_ns, sha256)
                snapshot = Snapshot.of(info)
                if not stat.S_ISREG(info.st_mode) or (snapshot.size, snapshot.mtime_ns) != (
                    size,
                    mtime_ns,
                ):
                    return "gone"  # replaced: the new file is an export of its own
                if self._digest(fd, name, snapshot) != sha256:
                    return "gone"
                with self._archive_folder() as archive_fd:
                    target = self._move(fd, archive_fd, name, snapshot, sha256)
        except UnsafePathError as exc:
            raise ArchiveError(f"cannot archive {name}: {exc.one_line()}") from None
        except OSError as exc:
            raise ArchiveError(f"cannot archive {name}: {exc.strerror}") from None
        if self.monitor.source.trigger:
            self._remove_trigger(name)
        log.info("moved %s to %s", name, self.archive_dir_path() / target)
        return "archived"

    def _moved_before(self, name: str, size: int, mtime_ns: int, sha256: str) -> ArchiveOutcome:
        """``archived`` when the archive holds the file (moved before an interruption)."""
        with self._archive_folder() as archive_fd:
            gone = Snapshot(size, mtime_ns, -1, -1, 0)
            earlier = _archived_copy(archive_fd, name, gone, sha256)
        if earlier is None:
            return "gone"
        log.info("%s is already in %s (moved before an interruption)", name, self.archive_dir)
        return "archived"

    def archive_dir_path(self) -> Path:
        assert self.archive_dir is not None
        return self.archive_dir if self.archive_dir.is_absolute() else self.path / self.archive_dir

    @contextlib.contextmanager
    def _archive_folder(self) -> Iterator[int]:
        """A descriptor of the archive folder, made if missing; inside the drop folder
        (a relative ``archive``) no part of it may be a link."""
        assert self.archive_dir is not None
        if self.archive_dir.is_absolute():
            self.archive_dir.mkdir(parents=True, exist_ok=True)
            with open_dir(self.archive_dir) as fd:
                yield fd
        else:
            parts = [p for p in self.archive_dir.parts if p not in ("", ".")]
            with open_dir(self.path, parts, create=True) as fd:
                yield fd

    def _move(self, fd: int, archive_fd: int, name: str, snapshot: Snapshot, sha256: str) -> str:
        """Move ``name`` into the archive folder under a time-stamped name; the name."""
        earlier = _archived_copy(archive_fd, name, snapshot, sha256)
        if earlier is not None:
            os.unlink(name, dir_fd=fd)  # archived before an interruption: finish the move
            os.fsync(fd)
            return earlier
        for counter in range(100):
            target = timestamped_name(name, counter=counter)
            try:
                os.link(name, target, src_dir_fd=fd, dst_dir_fd=archive_fd, follow_symlinks=False)
            except FileExistsError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EMLINK):
                    raise
                if _exists(archive_fd, target):
                    continue
                _copy_into(fd, archive_fd, name, target)
            os.fsync(archive_fd)
            os.unlink(name, dir_fd=fd)
            os.fsync(fd)
            return target
        raise ArchiveError(f"no free time-stamped name for {name} in {self.archive_dir}")

    def wait_for_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        before = self._folder_stamp()
        while True:
            now = time.monotonic()
            if self._due is not None and now >= self._due:
                self._due = None
                return True
            remaining = deadline - now
            if remaining <= 0:
                return False
            time.sleep(min(remaining, WATCH_INTERVAL))
            if self._folder_stamp() != before:
                return True

    def _folder_stamp(self) -> tuple[int, int]:
        try:
            info = os.stat(self.path)
        except OSError:
            return (-1, -1)
        return (info.st_mtime_ns, info.st_ino)


class _Changed(Exception):
    """The file changed while it was copied (or was taken already): leave it for later."""


def _zip_header(file: io.BufferedReader) -> str | None:
    """The header row of the first file member of the zip ``file``."""
    try:
        with zipfile.ZipFile(file) as archive:
            for member in archive.infolist():
                if member.is_dir():
                    continue
                with archive.open(member) as entry:
                    data = entry.read(HEADER_BYTES)
                return first_line(data) if data else None
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, RuntimeError):
        return None
    return None


def _exists(fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _sha256_at(fd: int, name: str) -> str:
    """The SHA-256 of the file ``name`` in the folder ``fd`` (a link is refused)."""
    digest = hashlib.sha256()
    handle = open_nofollow(name, os.O_RDONLY, dir_fd=fd)
    with os.fdopen(handle, "rb") as file:
        while block := file.read(COPY_BUFFER):
            digest.update(block)
    return digest.hexdigest()


def _archived_copy(archive_fd: int, name: str, snapshot: Snapshot, sha256: str) -> str | None:
    """A time-stamped copy of ``name`` already in the archive (the same inode, or the same
    size, modification time and SHA-256): what an interrupted move left. An earlier
    file of the same name and bytes has another modification time: it does not count."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        stem, suffix = name, ""
    else:
        suffix = "." + suffix
    shape = re.compile(re.escape(stem) + _STAMP + re.escape(suffix) + "$")
    for entry in os.listdir(archive_fd):
        if not shape.match(entry):
            continue
        try:
            info = os.stat(entry, dir_fd=archive_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(info.st_mode) or info.st_size != snapshot.size:
            continue
        if (info.st_ino, info.st_dev) == (snapshot.ino, snapshot.dev):
            return entry
        if info.st_mtime_ns == snapshot.mtime_ns and _sha256_at(archive_fd, entry) == sha256:
            return entry
    return None


def _copy_into(fd: int, archive_fd: int, name: str, target: str) -> None:
    """Copy ``name`` to ``target`` in the archive folder (temporary name, fsync, rename),
    its modification time kept (it is how an interrupted move is recognised)."""
    from exportmon.safe_open import EXCLUSIVE

    temp = f".{target}.part"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp, dir_fd=archive_fd)
    reader = open_nofollow(name, os.O_RDONLY, dir_fd=fd)
    writer = open_nofollow(temp, EXCLUSIVE, 0o644, dir_fd=archive_fd)
    try:
        with os.fdopen(reader, "rb") as source, os.fdopen(writer, "wb") as copy:
            while block := source.read(COPY_BUFFER):
                copy.write(block)
            copy.flush()
            original = os.fstat(source.fileno())
            os.utime(copy.fileno(), ns=(original.st_atime_ns, original.st_mtime_ns))
            os.fsync(copy.fileno())
        os.rename(temp, target, src_dir_fd=archive_fd, dst_dir_fd=archive_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=archive_fd)
        raise
