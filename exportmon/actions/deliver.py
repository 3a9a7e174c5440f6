"""The step unpacked → delivered: every file of an export to every destination, once.

Destinations are the monitor's ``[[deliver]]`` entries (a folder, FTP/FTPS, SFTP
or HTTPS, see :mod:`exportmon.deliver.kinds`); the old ``[deliver]`` table gives
``to``, ``ftp_url`` and ``archive_dir`` as entries. Files go in each destination's
``order`` (export types first, in that order), then alphabetically. Each delivery
is recorded in the ledger before its first byte moves (:meth:`Ledger.start_delivery`)
and when its rename is done (:meth:`Ledger.finish_delivery`), so a restarted process
knows exactly what
reached where:

* a file already delivered to a destination is skipped;
* a delivery cut short by a crash, or one that failed, is checked at its recorded
  target: a complete file there (same size and same SHA-256) counts as delivered,
  otherwise the file is delivered again to the *same* target, so nothing is
  delivered twice and no partial upload is left behind, also with
  ``overwrite = "timestamp"``.

When a file fails at a destination, the other files are still delivered there,
unless that destination's ``order`` is set: then the files after it wait for the retry at
that destination, so a consumer never gets sites before their organizations.
Other destinations go on either way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from exportmon.actions.status_tracking import track_export
from exportmon.config.schema import DestinationConfig, MonitorConfig
from exportmon.crashpoints import crash_point
from exportmon.deliver import Destination, Outgoing, Placed, choose_target, delivery_order
from exportmon.deliver.kinds import open_destination
from exportmon.errors import DeliveryError, ExportmonError
from exportmon.ledger import Export, File, Ledger
from exportmon.log import get_logger
from exportmon.progress import ProgressFactory

log = get_logger(__name__)


@dataclass(frozen=True)
class Delivered:
    """One file at one destination."""

    item: Outgoing
    destination: str
    placed: Placed
    #: It was already there (delivered earlier, or completed after a crash).
    earlier: bool = False


def destinations(configs: Sequence[DestinationConfig]) -> list[Destination]:
    """The destinations of a monitor's ``[[deliver]]`` entries (or its old ``[deliver]``
    table, see :attr:`MonitorConfig.destinations`), in the order written.

    Nothing is connected yet; passwords are resolved here.
    """
    return [open_destination(config) for config in configs]


def deliver_one(
    destination: Destination,
    item: Outgoing,
    *,
    ledger: Ledger | None = None,
    file: File | None = None,
    progress: ProgressFactory | None = None,
    moment: datetime | None = None,
) -> Delivered:
    """Deliver ``item`` to ``destination``, recorded in ``ledger`` when its ``file`` record
    is given; a delivery already done (or completed by an earlier, interrupted run) is
    not repeated. Raises an :class:`ExportmonError` after recording the failure."""
    tracked = ledger is not None and file is not None
    resumed = None
    if tracked:
        assert ledger is not None and file is not None
        done = ledger.delivered(file.id, destination.label)
        if done is not None and (done.sha256 is None or done.sha256 == item.sha256):
            placed = Placed(done.target, destination.location(done.target), done.bytes or 0)
            return Delivered(item, destination.label, placed, earlier=True)
        unfinished = ledger.unfinished_delivery(file.id, destination.label)
        if unfinished is not None:
            target = unfinished.target
            if destination.holds(target, item.bytes, item.sha256):
                ledger.finish_delivery(unfinished.id, bytes=item.bytes, sha256=item.sha256)
                log.info("%s was complete at %s after an interruption", target, destination.display)
                placed = Placed(target, destination.location(target), item.bytes)
                return Delivered(item, destination.label, placed, earlier=True)
            resumed = unfinished
    if resumed is not None:
        target = resumed.target
        keep = destination.overwrite == "keep" and destination.exists(target)
    else:
        target, keep = choose_target(destination, item.name, moment)
    record = resumed
    if tracked and record is None:
        assert ledger is not None and file is not None
        record = ledger.start_delivery(
            destination=destination.label,
            source_path=item.source,
            target=target,
            file_id=file.id,
            export_row=file.export_row,
        )
    crash_point("deliver.started")
    bind = getattr(destination, "bind_delivery", None)
    if bind is not None:
        # HTTPS: the record's id goes into the Idempotency-Key, the same on a resend.
        bind(record, interrupted=resumed is not None and resumed.state == "started")
    try:
        if keep:
            log.warning(
                '%s already exists at %s; kept it (overwrite = "keep")', target, destination.display
            )
            placed = Placed(target, destination.location(target), 0, kept=True)
        else:
            placed = destination.put(item, target, progress=progress)
    except ExportmonError as exc:
        if ledger is not None and record is not None:
            ledger.fail_delivery(record.id, exc.one_line())
        discard = getattr(destination, "discard", None)
        if discard is not None:
            discard(target)
        raise
    crash_point("deliver.placed")
    if ledger is not None and record is not None:
        ledger.finish_delivery(
            record.id,
            bytes=placed.bytes,
            sha256=None if placed.kept else item.sha256,
            reference=placed.reference,
            submitted=placed.submitted,
        )
    return Delivered(item, destination.label, placed)


def deliver_items(
    destination: Destination,
    items: Sequence[tuple[Outgoing, File | None]],
    *,
    ledger: Ledger | None = None,
    progress: ProgressFactory | None = None,
    keep_order: bool = True,
) -> tuple[list[Delivered], list[ExportmonError]]:
    """Deliver ``items`` (already in delivery order) over one connection to ``destination``.

    With ``keep_order`` the first failure stops the rest, so files later in the
    order wait for the retry; otherwise every file is tried. Returns what was
    delivered and the failures.
    """
    delivered: list[Delivered] = []
    failures: list[ExportmonError] = []
    moment = datetime.now(timezone.utc)
    with destination:
        for item, file in items:
            try:
                delivered.append(
                    deliver_one(
                        destination,
                        item,
                        ledger=ledger,
                        file=file,
                        progress=progress,
                        moment=moment,
                    )
                )
            except ExportmonError as exc:
                failures.append(exc)
                if keep_order:
                    break
    return delivered, failures


def deliver_export(
    monitor: MonitorConfig,
    ledger: Ledger,
    export: Export,
    *,
    progress: ProgressFactory | None = None,
) -> Export:
    """Deliver the files of an unpacked export to every configured destination.

    Once every file reached every destination the export becomes ``delivered`` and
    its mail is settled (:meth:`Ledger.advance_export`); one log line per destination
    says ``Copied N file(s) from '<download>' to '<destination>'``. Without a
    destination a warning is logged and the export stays ``unpacked``. Raises the
    first delivery error (others are logged); what was delivered stays recorded.
    """
    if export.state == "delivered":
        return export
    if export.state != "unpacked":
        raise DeliveryError(
            f"export {export.id} is {export.state}, not unpacked: nothing to deliver yet",
            retryable=False,
        )
    if not monitor.destinations:
        log.warning(
            "no destination configured ([[deliver]] url): '%s' stays undelivered",
            export.download_path,
        )
        return export
    files = ledger.files(export.id)
    outgoing = [
        (Outgoing.from_path(Path(f.path), f.name, f.sha256, f.export_type), f) for f in files
    ]
    failures: list[ExportmonError] = []
    for config in monitor.destinations:
        try:
            destination = open_destination(config)
        except ExportmonError as exc:
            failures.append(exc)
            continue
        items = delivery_order(outgoing, config.order, name=lambda pair: pair[0].name)
        delivered, failed = deliver_items(
            destination,
            items,
            ledger=ledger,
            progress=progress,
            keep_order=bool(config.order),
        )
        if failed:
            # The first failure is raised (and logged by the caller), later ones logged
            # here: as errors the first time, as notes while a retry still fails.
            level = logging.INFO if export.error_step == "deliver" else logging.ERROR
            for failure in failed if failures else failed[1:]:
                log.log(level, "delivery to %s failed: %s", destination.display, failure.one_line())
            failures.extend(failed)
            continue
        log.info(
            "Copied %d file(s) from '%s' to '%s'",
            len(delivered),
            export.download_path,
            destination.display,
        )
    # Receiving systems that report on their processing (HTTPS status_url).
    waiting = track_export(monitor, ledger, export, failures)
    if failures:
        raise failures[0]
    if waiting:
        if export.error is not None:
            # Every upload went through: the earlier failure is over; it waits now.
            export = ledger.advance_export(export.id, "unpacked")
        return export
    # Settles the mail too, in the same transaction.
    export = ledger.advance_export(export.id, "delivered")
    crash_point("export.delivered")
    return export


def settle_exports(ledger: Ledger, export_rows: set[int]) -> list[Export]:
    """Mark delivered each export whose every file has a completed delivery somewhere,
    and settle its mail; return the exports that became delivered.

    For the standalone ``push-ftp``, which delivers files one pipeline at a time.
    """
    settled = []
    for row in sorted(export_rows):
        export = ledger.export(row)
        if export is None or export.state == "delivered":
            continue
        files = ledger.files(row)
        if not files or any(not ledger.deliveries(file_id=f.id, state="done") for f in files):
            continue
        settled.append(ledger.advance_export(row, "delivered"))
    return settled
