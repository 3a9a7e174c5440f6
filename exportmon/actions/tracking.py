"""Recording the work of the standalone pipeline commands in the ledger they belong to.

``exportmon unzip``, ``rewrite-csv`` and ``push-ftp`` act on file paths. When a
path lies inside a monitor's state folder (``paths.find_monitor_root``), the work
is recorded in that monitor's ledger, so that a pipeline run by hand counts like
``run`` does: the export advances, deliveries are recorded, and once every file
of an export is delivered its mail is settled (and a later ``fetch`` archives it).
Outside any monitor, the commands just do the work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from exportmon.paths import find_monitor_root

if TYPE_CHECKING:  # the ledger is opened only for paths inside a monitor folder
    from exportmon.config.schema import MonitorConfig
    from exportmon.ledger import Export, File, Ledger

T = TypeVar("T")


@dataclass
class Owner:
    """The monitor state folder a path belongs to."""

    root: Path
    ledger: Ledger
    #: Its config, when one of the loaded configs uses that folder.
    monitor: MonitorConfig | None


class Owners:
    """Finds (and keeps open) the ledgers of the monitor folders that paths lie in."""

    def __init__(self, monitors: list[MonitorConfig]) -> None:
        self._monitors = {}
        for monitor in monitors:
            if monitor.root:
                self._monitors[Path(monitor.root).resolve()] = monitor
        self._owners: dict[Path, Owner] = {}

    def of(self, path: Path) -> Owner | None:
        """The owner of ``path``, or ``None`` outside every monitor folder."""
        root = find_monitor_root(Path(path))
        if root is None:
            return None
        root = root.resolve()
        if root not in self._owners:
            from exportmon.ledger import Ledger

            self._owners[root] = Owner(
                root, Ledger.open(root / "ledger.sqlite"), self._monitors.get(root)
            )
        return self._owners[root]

    def close(self) -> None:
        for owner in self._owners.values():
            owner.ledger.close()
        self._owners.clear()

    def __enter__(self) -> Owners:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def path_keys(path: Path) -> list[str]:
    """The spellings a path may have been recorded under (absolute, then resolved)."""
    absolute = str(Path(path).absolute())
    resolved = str(Path(path).resolve())
    return [absolute] if absolute == resolved else [absolute, resolved]


def file_record(ledger: Ledger, path: Path) -> File | None:
    """The ledger's record of the deliverable file at ``path``."""
    return _first(ledger.file_by_path, path)


def export_of_download(ledger: Ledger, path: Path) -> Export | None:
    """The export whose download is ``path``."""
    return _first(ledger.export_by_download, path)


def _first(lookup: Callable[[str], T | None], path: Path) -> T | None:
    for key in path_keys(path):
        found = lookup(key)
        if found is not None:
            return found
    return None
