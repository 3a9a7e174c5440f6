"""Removing old downloads and old ledger records (the gem kept everything forever).

What goes, for a cut-off moment ``now - older_than``:

* under ``<root>/downloads`` only: files of exports delivered before the cut-off
  (their download and the files unpacked from it), and files no export refers
  to any more that were last modified before it (leftovers of crashed runs, of
  exports pruned from the ledger earlier); then folders left empty;
* in the ledger: what :meth:`Ledger.prune` deletes (delivered exports created
  before the cut-off with their files and deliveries, settled mails, finished
  runs, resolved alerts).

Never touched: anything outside the downloads folder (symbolic links are
removed as links, never followed), and the files, and the folders holding
them, of every export that is not delivered or was delivered after the
cut-off.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from exportmon.config.schema import MonitorConfig
from exportmon.errors import UsageError
from exportmon.ledger import Ledger, to_text
from exportmon.log import get_logger

log = get_logger(__name__)


@dataclass
class PrunedPath:
    path: str
    #: ``file`` (also a symbolic link) or ``dir``.
    kind: str
    bytes: int = 0


@dataclass
class PruneResult:
    monitor: str
    dry_run: bool
    cutoff: str
    removed: list[PrunedPath] = field(default_factory=list)
    bytes_freed: int = 0
    #: Deleted (or, in a dry run, deletable) ledger records per table.
    ledger_rows: dict[str, int] = field(default_factory=dict)
    #: Files left alone because their export is not delivered (or too recently).
    kept: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def prune(
    monitor: MonitorConfig,
    ledger: Ledger,
    older_than_seconds: float,
    *,
    dry_run: bool = False,
    records: bool = True,
    now: datetime | None = None,
) -> PruneResult:
    """Remove downloads (and, with ``records``, ledger rows) older than ``older_than_seconds``.

    ``dry_run`` reports the same result and changes nothing. ``run`` with
    ``keep_downloads`` calls this with ``records=False``.
    """
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    cutoff = moment - timedelta(seconds=older_than_seconds)
    result = PruneResult(monitor=monitor.name, dry_run=dry_run, cutoff=to_text(cutoff))
    downloads = monitor.dirs.downloads
    if downloads.is_dir():
        _check_inside_root(monitor, downloads)
        _prune_downloads(ledger, str(downloads.resolve()), cutoff, result)
    if records:
        result.ledger_rows = ledger.prune(result.cutoff, dry_run=dry_run)
    if not result.removed and not any(result.ledger_rows.values()):
        return result
    verb = "would free" if dry_run else "freed"
    log.info(
        "prune older than %s: %d files, %s %d bytes, %d ledger records",
        result.cutoff,
        sum(1 for p in result.removed if p.kind == "file"),
        verb,
        result.bytes_freed,
        sum(result.ledger_rows.values()),
    )
    return result


def _check_inside_root(monitor: MonitorConfig, downloads: Path) -> None:
    root = str(Path(monitor.dirs.root).resolve())
    if not _inside(str(downloads.resolve()), root):
        raise UsageError(
            f"{downloads} leads outside the monitor's folder {root}: not pruning it",
            hint="remove old files there yourself, or make downloads a real folder",
        )


def _referenced(ledger: Ledger, cutoff: str) -> tuple[set[str], set[str]]:
    """Paths of exports that may go (delivered before ``cutoff``) and of those that stay."""
    old: set[str] = set()
    keep: set[str] = set()
    for stored in ledger.stored_paths(cutoff):
        (old if stored.prunable else keep).add(_normal(stored.path))
    # A path shared with an export that stays, stays.
    return old - keep, keep


def _normal(path: str) -> str:
    """``path`` absolute with its folders' symbolic links resolved (not the file's own)."""
    absolute = os.path.abspath(path)
    return os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))


def _prune_downloads(ledger: Ledger, downloads: str, cutoff: datetime, result: PruneResult) -> None:
    old, keep = _referenced(ledger, to_text(cutoff))
    # A folder holding a file that stays stays too, with everything in it: the
    # unpacked files of an export that is still being worked on live there.
    keep_dirs = {
        os.path.dirname(path)
        for path in keep
        if _inside(path, downloads) and os.path.dirname(path) != downloads
    }
    limit = cutoff.timestamp()
    gone: set[str] = set()
    for folder, dirnames, filenames in os.walk(downloads, topdown=False, followlinks=False):
        entries = list(filenames) + [d for d in dirnames if os.path.islink(os.path.join(folder, d))]
        for name in entries:
            path = os.path.join(folder, name)
            try:
                info = os.lstat(path)
            except OSError:
                continue
            protected = path in keep or any(_inside(path, d) for d in keep_dirs)
            if protected:
                result.kept += 1
                continue
            if path not in old and info.st_mtime >= limit:
                continue
            if _remove(path, dry_run=result.dry_run, result=result):
                result.removed.append(PrunedPath(path, "file", info.st_size))
                result.bytes_freed += info.st_size
                gone.add(path)
        if folder == downloads or any(_inside(d, folder) for d in keep_dirs):
            continue
        try:
            left = [os.path.join(folder, n) for n in os.listdir(folder)]
        except OSError:
            continue
        if all(entry in gone for entry in left) and _remove_dir(folder, result):
            result.removed.append(PrunedPath(folder, "dir"))
            gone.add(folder)


def _remove(path: str, *, dry_run: bool, result: PruneResult) -> bool:
    if dry_run:
        return True
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        result.errors.append(f"cannot remove {path}: {exc.strerror}")
        log.warning("cannot remove %s: %s", path, exc.strerror)
        return False
    return True


def _remove_dir(path: str, result: PruneResult) -> bool:
    if result.dry_run:
        return True
    try:
        os.rmdir(path)
    except OSError as exc:
        result.errors.append(f"cannot remove folder {path}: {exc.strerror}")
        return False
    return True
