"""Running one step of an export and recording its failure, once, in the ledger."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar

from exportmon.config.schema import MonitorConfig
from exportmon.errors import ExportmonError
from exportmon.ledger import Export, Ledger, to_text
from exportmon.log import get_logger

log = get_logger(__name__)

T = TypeVar("T")


def retry_time(monitor: MonitorConfig, error: ExportmonError) -> str | None:
    """When a failed export may be retried automatically: never for permanent errors."""
    if not error.retryable or monitor.retry_after is None:
        return None
    return to_text(datetime.now(timezone.utc) + timedelta(seconds=monitor.retry_after))


def attempt(
    monitor: MonitorConfig, ledger: Ledger, export: Export, step: str, work: Callable[[], T]
) -> T | None:
    """Run ``work`` (one step of ``export``); on an exportmon error record it and return None.

    The error is logged once here, with the export it concerns; the caller goes on
    with other exports. Other exceptions are bugs and propagate.
    """
    try:
        return work()
    except ExportmonError as error:
        message = error.one_line()
        ledger.fail_export(export.id, step, message, retry_time(monitor, error))
        label = f"export {export.export_id}" if export.export_id else "export"
        log.error("%s (%s) failed at %s: %s", label, export.file_name or export.key, step, message)
        return None
