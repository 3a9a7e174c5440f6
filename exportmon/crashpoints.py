"""Test-only crash points: let a test kill exportmon at an exact moment of its work.

exportmon must survive being killed anywhere (power cut, OOM killer, ``kill -9``).
Killing a process after a random delay proves that for the long phases
(downloads, uploads); the short but dangerous moments between two durable steps
(a file renamed into place but not yet recorded in the ledger, a mail moved but
not yet marked archived) are reached reliably only by name. So the code calls
:func:`crash_point` at those moments, and the crash-safety suite
(``tests/stress/crash.py``) sets::

    EXPORTMON_TEST_KILL_AT=<point>:<n>

to make the process send itself SIGKILL the ``n``-th time it reaches ``<point>``
(``n`` defaults to 1). The variable is read once at import. Unset — always, outside
that suite — :func:`crash_point` is a single ``is None`` check and does nothing.

The points are listed in :data:`POINTS`, in the order an export passes them.
"""

from __future__ import annotations

import os
import signal

#: The environment variable that arms a crash point (test use only).
ENVIRONMENT = "EXPORTMON_TEST_KILL_AT"

#: Every crash point, and the moment it marks.
POINTS = {
    "imap.fetched": "whole mails fetched from the IMAP server, not yet taken into the ledger",
    "download.saved": "a download renamed to its final name, the ledger not yet updated",
    "unpack.staged": "a zip extracted and its CSV files rewritten in the staging folder",
    "unpack.placed": "the unpacked folder renamed into place, its files not yet recorded",
    "atomic.rename": "a complete, fsynced temporary file about to be renamed to its final name",
    "deliver.started": "a delivery recorded in the ledger, no byte sent yet",
    "ftp.uploaded": "a file uploaded as <name>.in_progress and its size checked, not renamed",
    "sftp.uploaded": "an SFTP upload complete under its temporary name, size checked, not renamed",
    "deliver.placed": "a file renamed to its final name at a destination, not yet recorded",
    "deliver.signals": "every file of an export at a destination and recorded, its export "
    "trigger and manifest not yet written",
    "status.polled": "a receiving system's status answer read, not yet recorded",
    "export.delivered": "an export recorded as delivered (its mail settled), not yet archived",
    "imap.copied": "without MOVE: a mail copied to the archive folder, the original not deleted",
    "archive.moved": "a mail moved to the archive folder, the ledger not yet updated",
    "ledger.commit": "a ledger transaction written but not yet committed",
}


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    if name not in POINTS:
        raise SystemExit(f"{ENVIRONMENT}: unknown crash point {name!r}")
    return name, int(count or 1)


_armed = _parse(os.environ.get(ENVIRONMENT))
_passed = 0


def crash_point(name: str) -> None:
    """Die by SIGKILL here if the test armed this point and its count is reached."""
    if _armed is None:
        return
    _maybe_die(name)


def _maybe_die(name: str) -> None:
    global _passed
    point, count = _armed  # type: ignore[misc]
    if name != point:
        return
    _passed += 1
    if _passed >= count:
        os.kill(os.getpid(), signal.SIGKILL)
