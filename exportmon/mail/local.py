"""Reading export mails from local stores: Maildir, mbox, a directory of ``.eml`` files.

For testing, for exports that arrive by another route (a mail server's delivery
to a Maildir, a mail client's export), and for ``exportmon fetch --eml FILE``.

* **Maildir** (``kind = "maildir"``): a mail's key is its file name without the
  ``:2,<flags>`` info part. Files are only read, never renamed (no flag changes);
  archiving moves a delivered mail into the Maildir++ folder named by
  ``source.archive`` (``.Archive/cur``).
* **mbox** (``kind = "mbox"``): read from the byte offset reached last time, so a
  growing mbox is read once; a mail's key is its offset. The file is never
  changed: mails are ``kept``, not archived. A last mail not yet followed by a
  blank line may still be being written and waits for the next poll.
* **dir** (``kind = "dir"``): every ``*.eml`` file directly in the directory; its
  key is the file name. Archiving moves it into the sub-directory named by
  ``source.archive``, or into that folder itself when it is an absolute path.
* :class:`EmlFiles`: the files given to ``fetch --eml``, keyed by a digest of
  their content so the same file given twice is taken once; never moved.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from exportmon.errors import ArchiveError, MailError
from exportmon.files.names import UnsafeName, safe_file_name
from exportmon.log import get_logger
from exportmon.mail.source import (
    MAX_MAIL_BYTES,
    ArchiveOutcome,
    Intake,
    MailLocation,
    MailSource,
    PolledMail,
    known_uids,
)

if TYPE_CHECKING:
    from exportmon.config.schema import MonitorConfig
    from exportmon.ledger import Ledger, Mail

log = get_logger(__name__)

#: How often a local store is checked for changes while waiting.
WATCH_INTERVAL = 0.5


def _read(path: Path, intake: Intake, location: MailLocation) -> bytes | None:
    """The bytes of one mail file, or None (recorded as failed) when it is too large."""
    try:
        size = path.stat().st_size
        if size > MAX_MAIL_BYTES:
            intake.too_large(location, size)
            return None
        return path.read_bytes()
    except OSError as exc:
        raise MailError(f"cannot read mail file {path}: {exc.strerror}") from None


def _archive_parts(archive: str) -> list[str]:
    parts = []
    for part in archive.replace("\\", "/").split("/"):
        if part.strip():
            try:
                parts.append(safe_file_name(part))
            except UnsafeName:
                continue
    return parts


class _LocalSource(MailSource):
    """What the local stores share: a path, change watching by modification times."""

    kind = ""

    def __init__(self, monitor: MonitorConfig) -> None:
        super().__init__(monitor)
        self.path = Path(monitor.source.path or "")
        self.key = f"{self.kind}:{self.path}"
        self.mailbox = ""

    def _stamp(self) -> tuple[int, ...]:
        stamps: list[int] = []
        for path in self._watched():
            try:
                info = path.stat()
                stamps.extend((info.st_mtime_ns, info.st_size, info.st_ino))
            except OSError:
                stamps.append(-1)
        return tuple(stamps)

    def _watched(self) -> list[Path]:
        return [self.path]

    def wait_for_change(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout)
        before = self._stamp()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, WATCH_INTERVAL))
            if self._stamp() != before:
                return True

    def _check_dir(self, *parts: str) -> None:
        for part in ("", *parts):
            if not (self.path / part).is_dir():
                raise MailError(
                    f"{self.kind} {self.path} not found (no {part or 'directory'})",
                    hint="check source.path",
                )


class _FileStore(_LocalSource):
    """A store of one file per mail (Maildir, directory): keys from file names."""

    def __init__(self, monitor: MonitorConfig) -> None:
        super().__init__(monitor)
        archive = monitor.source.archive or ""
        self.archive_folder = _archive_parts(archive)
        #: ``kind = "dir"`` with an absolute ``archive``: that folder, not one inside.
        self.archive_path = Path(archive) if os.path.isabs(archive) else None
        self.moves_mail = bool(self.archive_folder)

    def _files(self) -> dict[str, Path]:
        """Each mail's key and file."""
        raise NotImplementedError

    def _move(self, path: Path) -> Path:
        """Move a mail file into the archive folder; the folder it went to."""
        raise NotImplementedError

    def poll(self, ledger: Ledger, *, dry_run: bool = False) -> list[PolledMail]:
        intake = Intake(self.monitor, ledger, dry_run=dry_run)
        seen = known_uids(ledger, self.key)
        for key, path in sorted(self._files().items()):
            if key in seen:
                continue
            location = MailLocation(self.key, "", None, key)
            raw = _read(path, intake, location)
            if raw is not None:
                intake.take(location, raw)
        return intake.results

    def archive(self, mail: Mail) -> ArchiveOutcome:
        if not self.moves_mail:
            return "kept"
        path = self._files().get(mail.uid or "")
        if path is None:
            return "gone"
        try:
            folder = self._move(path)
        except OSError as exc:
            raise ArchiveError(f"cannot archive {path.name}: {exc.strerror}") from None
        log.info("moved mail %r to %s", mail.subject, folder)
        return "archived"


class MaildirSource(_FileStore):
    """A Maildir (``new/``, ``cur/``, ``tmp/``)."""

    kind = "maildir"

    def _watched(self) -> list[Path]:
        return [self.path / "new", self.path / "cur"]

    def _files(self) -> dict[str, Path]:
        self._check_dir("new", "cur")
        files: dict[str, Path] = {}
        for sub in ("new", "cur"):
            with os.scandir(self.path / sub) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or not entry.is_file():
                        continue
                    files.setdefault(entry.name.split(":", 1)[0], Path(entry.path))
        return files

    def _move(self, path: Path) -> Path:
        # Maildir++: a sub-folder is a hidden directory whose levels are joined by dots.
        folder = self.path / ("." + ".".join(p.replace(".", "_") for p in self.archive_folder))
        for sub in ("cur", "new", "tmp"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        name = path.name if ":" in path.name else path.name + ":2,"
        os.replace(path, folder / "cur" / name)
        return folder


class DirSource(_FileStore):
    """A directory of ``.eml`` files."""

    kind = "dir"

    def _files(self) -> dict[str, Path]:
        self._check_dir()
        with os.scandir(self.path) as entries:
            return {
                entry.name: Path(entry.path)
                for entry in entries
                if entry.name.lower().endswith(".eml")
                and not entry.name.startswith(".")
                and entry.is_file()
            }

    def _move(self, path: Path) -> Path:
        folder = self.archive_path or self.path.joinpath(*self.archive_folder)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / path.name
        counter = 1
        while target.exists():
            target = folder / f"{path.stem}-{counter}{path.suffix}"
            counter += 1
        os.replace(path, target)
        return folder


class MboxSource(_LocalSource):
    """An mbox file, read incrementally and never changed."""

    kind = "mbox"

    def poll(self, ledger: Ledger, *, dry_run: bool = False) -> list[PolledMail]:
        try:
            info = self.path.stat()
        except OSError as exc:
            raise MailError(
                f"mbox {self.path} cannot be read: {exc.strerror}", hint="check source.path"
            ) from None
        state = ledger.mailbox_state(self.key, "")
        offset = state.last_uid if state else 0
        # The generation counts rewrites of the file; offsets are keys within one.
        generation = (state.uidvalidity or 1) if state else 1
        extra = _extra(state.extra if state else None)
        relocating = False
        if state is not None and (
            extra.get("inode") != info.st_ino
            or info.st_size < offset
            or extra.get("tail") != _tail_digest(self.path, offset)
        ):
            log.warning("mbox %s was replaced or rewritten: reading it again", self.path)
            offset, relocating, generation = 0, True, generation + 1
        intake = Intake(self.monitor, ledger, dry_run=dry_run, relocating=relocating)
        if info.st_size == offset and not relocating:
            return []
        end = offset
        seen = known_uids(ledger, self.key, "", generation)
        for start, stop, raw in _mbox_messages(self.path, offset):
            end = stop
            if str(start) in seen:
                continue
            location = MailLocation(self.key, "", generation, str(start))
            if raw is None:
                intake.too_large(location, None)
            else:
                intake.take(location, raw)
        if not dry_run and (end != offset or state is None or relocating):
            extra = {"inode": info.st_ino, "tail": _tail_digest(self.path, end)}
            ledger.save_mailbox_state(self.key, "", generation, end, extra)
        return intake.results


def _tail_digest(path: Path, offset: int) -> str | None:
    """A digest of the 4 KiB before ``offset``: changes when what was read is rewritten."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, offset - 4096))
            return hashlib.sha256(handle.read(min(offset, 4096))).hexdigest()
    except OSError:
        return None


def _extra(text: str | None) -> dict[str, object]:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _mbox_messages(path: Path, offset: int) -> Iterator[tuple[int, int, bytes | None]]:
    """``(start, end, raw)`` of each complete mail after ``offset`` (raw None: too large).

    A mail starts at a ``From `` line at the start of the file or after an empty
    line; ``>From `` lines are unescaped (mboxrd). The last mail counts only when
    the file ends with an empty line, since it may still be being written.
    """
    with open(path, "rb") as handle:
        handle.seek(offset)
        start: int | None = None
        lines: list[bytes] = []
        size = 0
        too_large = False
        previous_blank = True
        position = offset
        for line in iter(handle.readline, b""):
            if line.startswith(b"From ") and previous_blank:
                if start is not None:
                    yield start, position, None if too_large else _join(lines)
                start, lines, size, too_large = position, [], 0, False
            elif start is not None:
                if line.startswith(b">") and line.lstrip(b">").startswith(b"From "):
                    line = line[1:]
                size += len(line)
                if size > MAX_MAIL_BYTES:
                    too_large, lines = True, []
                elif not too_large:
                    lines.append(line)
            previous_blank = line in (b"\n", b"\r\n")
            position += len(line)
        if start is not None and previous_blank:
            yield start, position, None if too_large else _join(lines)


def _join(lines: list[bytes]) -> bytes:
    # The blank line before the next "From " belongs to the mbox, not the mail.
    if lines and lines[-1] in (b"\n", b"\r\n"):
        lines = lines[:-1]
    return b"".join(lines)


class EmlFiles(MailSource):
    """The ``.eml`` files named on the command line (``fetch --eml FILE``)."""

    def __init__(self, monitor: MonitorConfig, paths: list[Path]) -> None:
        super().__init__(monitor)
        self.paths = [Path(p) for p in paths]
        self.key = "eml"
        self.mailbox = ""
        self._taken = False

    def poll(self, ledger: Ledger, *, dry_run: bool = False) -> list[PolledMail]:
        intake = Intake(self.monitor, ledger, dry_run=dry_run)
        if self._taken:
            return []
        for path in self.paths:
            location = MailLocation(self.key, "", None, str(path))
            raw = _read(path, intake, location)
            if raw is None:
                continue
            digest = hashlib.sha256(raw).hexdigest()[:32]
            location = MailLocation(self.key, "", None, digest)
            if intake.known(location) is not None:
                log.info("%s was taken before; skipping it", path)
                continue
            intake.take(location, raw)
        self._taken = True
        return intake.results
