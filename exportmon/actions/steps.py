"""Running one step of an export and recording its failure, once, in the ledger."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TypeVar

from exportmon.config.schema import MonitorConfig
from exportmon.errors import ExportmonError
from exportmon.ledger import Export, Ledger, to_text
from exportmon.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")

#: How to retry a failure that no later run retries by itself.
RETRY_FAILED = "exportmon run --once --retry-failed"


def not_retried(error: ExportmonError) -> str:
    """The one line of a failure no run retries by itself, saying how to retry it; it is
    recorded so, and so shown wherever the failure is (log, status, --json, report)."""
    if error.hint:
        return f"{error.message} ({error.hint}, then {RETRY_FAILED})"
    return f"{error.message} (once the cause is fixed: {RETRY_FAILED})"


def retry_time(monitor: MonitorConfig, error: ExportmonError) -> str | None:
    """When a failed export may be retried automatically: never for permanent errors."""
    if not error.retryable or monitor.retry_after is None:
        return None
    return to_text(datetime.now(timezone.utc) + timedelta(seconds=monitor.retry_after))


def as_exportmon_error(error: Exception) -> ExportmonError:
    """``error`` as an :class:`ExportmonError`: itself, or an "internal error" naming it
    (its traceback logged at DEBUG)."""
    if isinstance(error, ExportmonError):
        return error
    log.debug("internal error", exc_info=error)
    return ExportmonError(
        f"internal error {type(error).__name__}: {error}",
        hint="please report it with the output of -v",
    )


def attempt(
    monitor: MonitorConfig, ledger: Ledger, export: Export, step: str, work: Callable[[], T]
) -> T | None:
    """Run ``work`` (one step of ``export``); on an exportmon error record it and return None.

    The error is logged here, with the export it concerns, once per problem: at
    ERROR when the export fails at this step for the first time, at INFO ("still
    failing") when an automatic retry of an export already failing there fails
    again. A permanent failure (not ``retryable``) is always an ERROR: it is only
    tried again on request. The caller goes on with other exports.

    Whatever goes wrong while working on one export is that export's failure: any
    other exception (a bug, since input problems are raised as exportmon errors) is
    recorded the same way as an "internal error", its traceback logged at DEBUG, and
    retried by the same policy. Only stop requests (``BaseException``) propagate.
    """
    try:
        return work()
    except Exception as raised:
        error = as_exportmon_error(raised)
        retry_at = retry_time(monitor, error)
        message = error.one_line() if retry_at is not None else not_retried(error)
        # A permanent failure is retried only when asked (--retry-failed): say it
        # at ERROR every time, never as "still failing".
        again = export.error is not None and export.error_step == step and error.retryable
        failed = ledger.fail_export(export.id, step, message, retry_at)
        label = f"export {export.export_id}" if export.export_id else "export"
        what = export.file_name or export.key
        if again:
            log.info(
                "%s (%s) still failing at %s (%d attempts): %s",
                label,
                what,
                step,
                failed.attempts,
                message,
            )
        else:
            log.error("%s (%s) failed at %s: %s", label, what, step, message)
        return None


@contextlib.contextmanager
def monitor_ledger(monitor: MonitorConfig, *, dry_run: bool = False) -> Iterator[Ledger]:
    """The monitor's ledger, its state folder created; a dry run creates nothing.

    A dry run of a monitor that never ran gets a throw-away ledger, so that
    looking changes nothing on disk.
    """
    path = monitor.dirs.ledger
    if dry_run and not path.exists():
        with (
            tempfile.TemporaryDirectory(prefix="exportmon-dry-run-") as scratch,
            Ledger.open(Path(scratch) / "ledger.sqlite") as ledger,
        ):
            yield ledger
        return
    if not dry_run:
        monitor.dirs.create()
    with Ledger.open(path) as ledger:
        yield ledger
