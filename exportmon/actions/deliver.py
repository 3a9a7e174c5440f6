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
A refused login or a server still unreachable after its retries ends that
destination's batch at once (the remaining files wait for the next attempt), so a
dead server costs one round of retries, not one per file. Other destinations go
on either way; an export is delivered when every destination has it.

Completion signals (:mod:`exportmon.deliver.signals`) follow the data: a file's
trigger right after the file, the export's trigger and manifest once every file of
the export is at that destination. They are recorded like file deliveries (without
a file), so a crash between the data and a signal writes the signal on the next
run, and a signal is never written before the data it announces.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from exportmon.actions.status_tracking import track_export
from exportmon.atomic import sha256_file
from exportmon.config.schema import DestinationConfig, MonitorConfig
from exportmon.crashpoints import crash_point
from exportmon.deliver import Destination, Outgoing, Placed, choose_target, delivery_order
from exportmon.deliver.kinds import open_destination
from exportmon.deliver.signals import (
    Announced,
    Signal,
    export_name,
    export_signals,
    file_trigger,
)
from exportmon.errors import AuthError, ConnectionFailed, DeliveryError, ExportmonError
from exportmon.files.names import export_type
from exportmon.ledger import Export, File, Ledger
from exportmon.log import get_logger
from exportmon.progress import ProgressFactory

log = get_logger(__name__)

#: How long a destination found unreachable (a refused login, a dead server) is not
#: tried again for the next exports of the same run: one round of retries per batch,
#: not one per export. Short, so a watcher tries again soon for new exports.
UNREACHABLE_FOR = 60.0
_unreachable: dict[str, tuple[float, ExportmonError]] = {}


@dataclass(frozen=True)
class Delivered:
    """One file at one destination."""

    item: Outgoing
    destination: str
    placed: Placed
    #: It was already there (delivered earlier, or completed after a crash).
    earlier: bool = False


@dataclass
class Batch:
    """Files delivered to one destination together: those of one export (or of none,
    for files outside any ledger), in delivery order."""

    items: Sequence[tuple[Outgoing, File | None]]
    #: The export the files belong to: its ledger row keys the signals' records.
    export: Export | None = None
    #: What ``{export}`` stands for in signal names (default: from ``export``).
    name: str | None = None
    #: The first failure stops the rest (``order`` is set).
    keep_order: bool = False
    #: The ledger of the batch's monitor, when it is not the one given for all batches.
    ledger: Ledger | None = None

    @property
    def export_label(self) -> str:
        if self.name:
            return self.name
        if self.export is not None:
            return export_name(self.export.file_name, self.export.key)
        return "export"


@dataclass
class Outcome:
    """What one batch did at one destination."""

    destination: Destination
    delivered: list[Delivered] = field(default_factory=list)
    failures: list[ExportmonError] = field(default_factory=list)
    #: Files not tried: the destination refused the login or could not be reached.
    skipped: int = 0
    #: The triggers and manifests written (or found written).
    signals: list[Delivered] = field(default_factory=list)

    def error(self) -> ExportmonError | None:
        """The failures at this destination as one error (the first one's kind and
        hint), or ``None``: one line per export and destination."""
        if not self.failures:
            return None
        first = self.failures[0]
        more = len(self.failures) - 1 + self.skipped
        if not more:
            return first
        combined = copy.copy(first)
        combined.message = f"{first.message}; {more} more file(s) not delivered there"
        combined.args = (combined.message,)
        return combined


def destinations(configs: Sequence[DestinationConfig]) -> list[Destination]:
    """The destinations of a monitor's ``[[deliver]]`` entries (or its old ``[deliver]``
    table, see :attr:`MonitorConfig.destinations`), in the order written.

    Nothing is connected yet; passwords are resolved here.
    """
    return [open_destination(config) for config in configs]


def without_secrets(config: DestinationConfig) -> DestinationConfig:
    """``config`` with its passwords, tokens and passphrases left out: for opening a
    destination only to name or describe it (nothing is looked up or run)."""
    return dataclasses.replace(
        config, password=None, password_env=None, password_command=None,
        token=None, token_env=None, token_command=None, ssh_key_passphrase=None,
        ssh_key_passphrase_env=None, ssh_key_passphrase_command=None,
    )  # fmt: skip


def destination_label(config: DestinationConfig) -> str | None:
    """The ledger's name of a ``[[deliver]]`` entry (``local:/srv/in``), found without
    looking up a secret; ``None`` when it cannot be opened here."""
    try:
        return open_destination(without_secrets(config)).label
    except (ExportmonError, ImportError):
        return None


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
        if discard is not None and not isinstance(exc, AuthError):  # no second refused login
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


def unreachable(error: ExportmonError) -> bool:
    """Whether ``error`` means no further file can reach that destination now: a
    refused login, or a server still unreachable after its retries."""
    return isinstance(error, AuthError | ConnectionFailed)


def announced(done: Delivered, file: File | None) -> Announced:
    """What a signal says about a delivered file."""
    item = done.item
    kind = (file.export_type if file else None) or item.type or export_type(item.name)
    return Announced(
        target=done.placed.target,
        bytes=item.bytes,
        rows=file.rows if file else None,
        sha256=item.sha256 or sha256_file(item.source),
        type=kind,
    )


def place_signal(
    destination: Destination,
    signal: Signal,
    *,
    ledger: Ledger | None = None,
    export_row: int | None = None,
) -> Delivered:
    """Write ``signal`` at ``destination`` (temporary name, then rename), once.

    Recorded in ``ledger`` as a delivery without a file when ``export_row`` is given:
    one already done is not repeated, one cut short is checked at its target (its
    content is deterministic) and completed or written again.
    """
    size, digest = len(signal.content), signal.sha256
    record = None
    if ledger is not None and export_row is not None:
        found = [
            d
            for d in ledger.deliveries(export_row=export_row, destination=destination.label)
            if d.file_id is None and d.target == signal.target
        ]
        if any(d.state == "done" for d in found):
            placed = Placed(signal.target, destination.location(signal.target), size)
            return Delivered(_signal_item(signal), destination.label, placed, earlier=True)
        if found:
            record = found[-1]
            if destination.holds(signal.target, size, digest):
                ledger.finish_delivery(record.id, bytes=size, sha256=digest)
                placed = Placed(signal.target, destination.location(signal.target), size)
                return Delivered(_signal_item(signal), destination.label, placed, earlier=True)
        else:
            record = ledger.start_delivery(
                destination=destination.label,
                source_path=signal.marker,
                target=signal.target,
                export_row=export_row,
            )
    with tempfile.TemporaryDirectory(prefix="exportmon-signal-") as scratch:
        staged = Path(scratch) / "signal"
        staged.write_bytes(signal.content)
        item = Outgoing(staged, signal.target, size, digest)
        try:
            placed = destination.put(item, signal.target)
        except ExportmonError as exc:
            if ledger is not None and record is not None:
                ledger.fail_delivery(record.id, exc.one_line())
            discard = getattr(destination, "discard", None)
            if discard is not None and not isinstance(exc, AuthError):
                discard(signal.target)
            raise
    crash_point("deliver.placed")
    if ledger is not None and record is not None:
        ledger.finish_delivery(record.id, bytes=size, sha256=digest)
    return Delivered(_signal_item(signal), destination.label, placed)


def _signal_item(signal: Signal) -> Outgoing:
    return Outgoing(Path(signal.marker), signal.target, len(signal.content), signal.sha256)


def deliver_batches(
    destination: Destination,
    batches: Sequence[Batch],
    *,
    config: DestinationConfig | None = None,
    ledger: Ledger | None = None,
    progress: ProgressFactory | None = None,
    connected: bool = False,
) -> list[Outcome]:
    """Deliver each batch (already in delivery order) over one connection (one
    login) to ``destination``, with the completion signals ``config`` asks for.

    Within a batch with ``keep_order`` the first failure stops the rest, so files
    later in the order wait for the retry; otherwise every file is tried. A refused
    login or an unreachable server (:func:`unreachable`) stops every batch still
    ahead: their files count as skipped. One :class:`Outcome` per batch.
    ``connected``: the caller keeps the destination open (and closes it) itself,
    to use the same login for more batches later.
    """
    outcomes = [Outcome(destination) for _ in batches]
    moment = datetime.now(timezone.utc)
    with contextlib.nullcontext() if connected else destination:
        for index, (batch, outcome) in enumerate(zip(batches, outcomes, strict=True)):
            _deliver_batch(
                destination, batch, outcome, config, batch.ledger or ledger, progress, moment
            )
            if any(unreachable(failure) for failure in outcome.failures):
                for later, rest in zip(batches[index + 1 :], outcomes[index + 1 :], strict=True):
                    rest.skipped = len(later.items)
                break
    return outcomes


def _deliver_batch(
    destination: Destination,
    batch: Batch,
    outcome: Outcome,
    config: DestinationConfig | None,
    ledger: Ledger | None,
    progress: ProgressFactory | None,
    moment: datetime,
) -> None:
    export_row = batch.export.id if batch.export is not None else None
    label = batch.export_label
    for position, (item, file) in enumerate(batch.items):
        try:
            done = deliver_one(
                destination, item, ledger=ledger, file=file, progress=progress, moment=moment
            )
            outcome.delivered.append(done)
            trigger = file_trigger(config, label, announced(done, file)) if config else None
            if trigger is not None:
                outcome.signals.append(
                    place_signal(destination, trigger, ledger=ledger, export_row=export_row)
                )
        except ExportmonError as exc:
            outcome.failures.append(exc)
            if unreachable(exc):
                outcome.skipped = len(batch.items) - position - 1
                return
            if batch.keep_order:
                return
    if config is None or outcome.failures or len(outcome.delivered) != len(batch.items):
        return
    pairs = zip(outcome.delivered, batch.items, strict=True)
    announce = [announced(done, file) for done, (_, file) in pairs]
    crash_point("deliver.signals")
    try:
        for signal in export_signals(config, label, announce, export_id=_export_id(batch)):
            outcome.signals.append(
                place_signal(destination, signal, ledger=ledger, export_row=export_row)
            )
    except ExportmonError as exc:
        outcome.failures.append(exc)


def _export_id(batch: Batch) -> int | None:
    return batch.export.export_id if batch.export is not None else None


def deliver_items(
    destination: Destination,
    items: Sequence[tuple[Outgoing, File | None]],
    *,
    ledger: Ledger | None = None,
    progress: ProgressFactory | None = None,
    keep_order: bool = True,
    config: DestinationConfig | None = None,
    export: Export | None = None,
) -> tuple[list[Delivered], list[ExportmonError]]:
    """Deliver ``items`` (already in delivery order) over one connection to
    ``destination``: one :class:`Batch` of :func:`deliver_batches`. Returns what was
    delivered and the failures."""
    batch = Batch(items, export=export, keep_order=keep_order)
    outcome = deliver_batches(destination, [batch], config=config, ledger=ledger, progress=progress)
    return outcome[0].delivered, outcome[0].failures


def deliver_export(
    monitor: MonitorConfig,
    ledger: Ledger,
    export: Export,
    *,
    progress: ProgressFactory | None = None,
) -> Export:
    """Deliver the files of an unpacked export to every configured destination.

    Once every file (and every completion signal) reached every destination the
    export becomes ``delivered`` and its mail is settled
    (:meth:`Ledger.advance_export`); one log line per destination says ``Copied N
    file(s) from '<download>' to '<destination>'``. Without a destination a warning
    is logged and the export stays ``unpacked``. A destination that fails does not
    hold back the others; each failing destination is one error: the first is
    raised (the caller logs it), the others are logged here the same way. What was
    delivered stays recorded.
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
    errors: list[ExportmonError] = []
    for config in monitor.destinations:
        try:
            destination = open_destination(config)
        except ExportmonError as exc:
            errors.append(exc)
            continue
        known = _still_unreachable(destination, files, ledger)
        if known is not None:
            errors.append(known)
            continue
        items = delivery_order(
            outgoing, config.order, name=lambda pair: pair[0].name, type=lambda pair: pair[0].type
        )
        batch = Batch(items, export=export, keep_order=bool(config.order))
        outcome = deliver_batches(
            destination, [batch], config=config, ledger=ledger, progress=progress
        )[0]
        error = outcome.error()
        if error is not None:
            errors.append(error)
            cause = next((f for f in outcome.failures if unreachable(f)), None)
            if cause is not None:
                _unreachable[destination.label] = (time.monotonic() + UNREACHABLE_FOR, cause)
            continue
        _unreachable.pop(destination.label, None)
        log.info(
            "Copied %d file(s) from '%s' to '%s'",
            len(outcome.delivered),
            export.download_path,
            destination.display,
        )
    # Receiving systems that report on their processing (HTTPS status_url).
    waiting = track_export(monitor, ledger, export, errors)
    if errors:
        # The first is raised (and logged by the caller); the others are logged here
        # in the same words: as errors the first time, as notes while a retry fails.
        level = logging.INFO if export.error_step == "deliver" else logging.ERROR
        label = f"export {export.export_id}" if export.export_id else "export"
        what = export.file_name or export.key
        verb = "still failing" if level == logging.INFO else "failed"
        for error in errors[1:]:
            log.log(level, "%s (%s) %s at deliver: %s", label, what, verb, error.one_line())
        raise errors[0]
    if waiting:
        if export.error is not None:
            # Every upload went through: the earlier failure is over; it waits now.
            export = ledger.advance_export(export.id, "unpacked")
        return export
    # Settles the mail too, in the same transaction.
    export = ledger.advance_export(export.id, "delivered")
    crash_point("export.delivered")
    return export


def _still_unreachable(
    destination: Destination, files: list[File], ledger: Ledger
) -> ExportmonError | None:
    """The error of a destination found unreachable moments ago in this run, when
    this export still has files for it; ``None``: try it."""
    known = _unreachable.get(destination.label)
    if known is None or time.monotonic() >= known[0]:
        return None
    if all(ledger.delivered(f.id, destination.label) is not None for f in files):
        return None
    again = copy.copy(known[1])
    again.message = f"not tried again for this export: {known[1].message}"
    again.args = (again.message,)
    return again


def settle_exports(
    ledger: Ledger, export_rows: set[int], monitor: MonitorConfig | None = None
) -> list[Export]:
    """Mark delivered each export that has reached every destination of ``monitor``
    (matched by their ledger labels; the export's trigger and manifest included), and
    settle its mail; return the exports that became delivered.

    For the standalone ``push-ftp``, which delivers files one pipeline at a time. A
    delivery to a destination that is not one of the monitor's is recorded under
    its own label and settles nothing. A monitor without destinations (a pipeline
    that always names them) settles an export once each file reached one somewhere.
    """
    required = []
    for config in monitor.destinations if monitor else []:
        label = destination_label(config)
        if label is None:
            return []  # a destination that cannot be named here: `run` settles it
        required.append((label, config))
    settled = []
    for row in sorted(export_rows):
        export = ledger.export(row)
        if export is None or export.state == "delivered":
            continue
        files = ledger.files(row)
        if not files:
            continue
        if not required:
            if any(not ledger.deliveries(file_id=f.id, state="done") for f in files):
                continue
        elif not all(_complete(ledger, export, files, label, c) for label, c in required):
            continue
        settled.append(ledger.advance_export(row, "delivered"))
    return settled


def _complete(
    ledger: Ledger, export: Export, files: list[File], label: str, config: DestinationConfig
) -> bool:
    """Whether every file of ``export`` and its export-level signals are at ``label``."""
    done = []
    for file in files:
        delivery = ledger.delivered(file.id, label)
        if delivery is None:
            return False
        done.append(delivery)
    if config.trigger != "export" and config.manifest is None:
        return True
    signals = {
        d.target
        for d in ledger.deliveries(export_row=export.id, destination=label, state="done")
        if d.file_id is None
    }
    placeholder = [
        Announced(d.target, d.bytes or 0, f.rows, d.sha256 or "", f.export_type)
        for d, f in zip(done, files, strict=True)
    ]
    name = export_name(export.file_name, export.key)
    wanted = export_signals(config, name, placeholder, export_id=export.export_id)
    return all(signal.target in signals for signal in wanted)
