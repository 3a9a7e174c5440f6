"""Following a receiving system's processing of what it was sent (HTTPS ``status_url``).

An HTTPS destination with ``status_url`` records each file it sent as *submitted*,
with the reference from the answer, in the same ledger transaction that records the
upload done (:meth:`Ledger.finish_delivery`): from then on the file is never sent
again, whatever happens to the process. :func:`track_export` then polls the status of
an export's submitted deliveries:

* a delivery is polled when ``status_interval`` has passed since its upload or its
  last poll. One call polls each due delivery once and returns: ``run --once``
  polls what is due and moves on, leaving the rest to later runs (a cron run never
  waits up to ``status_timeout`` inside itself); the watcher's cycles poll them as
  they come due. The export stays ``unpacked`` (pending) meanwhile, and counts as
  delivered only when every submitted delivery is decided;
* once ``status_done`` holds (no ``status_done``: at the first answer), the delivery
  is ``failed`` when ``status_fail`` holds, ``warned`` (delivered with warnings, a
  WARNING line) when ``status_warn`` does, else ``done``;
* when ``status_timeout`` has passed since the upload and ``status_done`` still does
  not hold, it is ``timeout``;
* ``failed`` and ``timeout`` are delivery failures of the export (one line with the
  counts, alerted like any other) that no run retries by itself: the file was
  accepted, and sending it again is for a person to decide. ``run --once
  --retry-failed`` does: it sends the file again, as a new delivery (a new
  ``Idempotency-Key``), tracked like the first. An answer that cannot be had or
  read (a 500, a broken connection, an answer without the fields) is logged as a
  WARNING and asked for again at the next poll, until ``status_timeout``.

Every poll records the answer's fields (:meth:`Ledger.record_status`), which
``status``, ``report`` and alerts show (:func:`counts_text`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import PurePosixPath
from typing import Any

from exportmon.config.schema import DestinationConfig, MonitorConfig
from exportmon.crashpoints import crash_point
from exportmon.deliver.conditions import Condition, parse_answer, parse_condition
from exportmon.deliver.https import HttpsDestination, label_of
from exportmon.deliver.kinds import kind_of, open_destination
from exportmon.deliver.urls import parse_destination_url
from exportmon.errors import DeliveryError, ExportmonError
from exportmon.ledger import Delivery, Export, Ledger, from_text
from exportmon.log import get_logger, printable
from exportmon.signals import checkpoint
from exportmon.units import format_duration, plural

log = get_logger(__name__)

#: Short names of the counts receiving systems commonly report (Blackboard's).
COUNT_NAMES = {
    "completedCount": "completed",
    "errorCount": "errors",
    "warningCount": "warnings",
    "queuedCount": "queued",
}


def tracked(config: DestinationConfig) -> bool:
    """Whether the destination reports on its processing (HTTPS with ``status_url``)."""
    return bool(config.status_url) and kind_of(config) in ("https", "http")


def track_export(
    monitor: MonitorConfig,
    ledger: Ledger,
    export: Export,
    failures: list[ExportmonError],
    *,
    now: datetime | None = None,
) -> int:
    """Poll the due submitted deliveries of ``export`` once each (see the module
    docstring); append the processing failures to ``failures`` and return how many
    deliveries are still waiting for their receiving system."""
    waiting = 0
    found = ledger.processing_deliveries(export_row=export.id, latest=True)
    for config in monitor.destinations if found else ():
        if not tracked(config):
            continue
        try:
            destination = open_destination(config)
        except ExportmonError as exc:
            # Its uploads failed the same way, and said so, unless all were done before.
            if all(exc.one_line() != seen.one_line() for seen in failures):
                failures.append(exc)
            continue
        assert isinstance(destination, HttpsDestination)
        for delivery in found:
            if delivery.destination != destination.label:
                continue
            status: str | None = delivery.status
            if status == "submitted":
                checkpoint()
                status = poll_delivery(ledger, destination, config, delivery, now=now)
            if status == "submitted":
                waiting += 1
            elif status in ("failed", "timeout"):
                current = ledger.delivery(delivery.id) or delivery
                failure = DeliveryError(
                    current.error or f"{delivery.target}: {status}",
                    hint="fix what the receiving system's logs report"
                    " (a retry sends the file again)",
                    retryable=False,
                )
                # Raised first (the caller raises failures[0] and logs the rest), so
                # the export is not retried by itself: that would send the file again.
                if failures:
                    log.error("%s", failures[0].one_line())
                failures.insert(0, failure)
    return waiting


def due(delivery: Delivery, config: DestinationConfig, now: datetime) -> bool:
    """Whether ``status_interval`` has passed since the upload or the last poll."""
    at = _due_at(delivery, config.status_interval or 0.0)
    return at is None or now >= at


def _due_at(delivery: Delivery, interval: float) -> datetime | None:
    """When ``delivery`` is next polled: ``interval`` after the upload or the last poll
    (``None``: neither is recorded, so at once)."""
    last = delivery.polled_at or delivery.submitted_at or delivery.finished_at
    return from_text(last) + timedelta(seconds=interval) if last else None


def next_poll(monitor: MonitorConfig, ledger: Ledger, now: datetime | None = None) -> float | None:
    """Seconds until a submitted delivery of ``monitor`` is due for its next poll (0:
    one is due now), or ``None`` when none is waiting: what a watcher waits at most
    before its next cycle, so polls keep to ``status_interval`` whatever
    ``poll_interval`` is."""
    intervals = {
        label_of(parse_destination_url(config.url)): config.status_interval or 0.0
        for config in monitor.destinations
        if tracked(config)
    }
    if not intervals:
        return None
    waiting = ledger.processing_deliveries(status="submitted", latest=True)
    moment = now or datetime.now(timezone.utc)
    soonest: datetime | None = None
    for delivery in waiting:
        interval = intervals.get(delivery.destination)
        if interval is None:
            continue  # a destination no longer configured: nothing polls it
        due_at = _due_at(delivery, interval) or moment
        soonest = due_at if soonest is None else min(soonest, due_at)
    if soonest is None:
        return None
    return max(0.0, (soonest - moment).total_seconds())


def poll_delivery(
    ledger: Ledger,
    destination: HttpsDestination,
    config: DestinationConfig,
    delivery: Delivery,
    *,
    now: datetime | None = None,
) -> str:
    """Ask for the status of one submitted delivery if it is due, record what the
    answer says, and return the delivery's processing status afterwards."""
    moment = now or datetime.now(timezone.utc)
    if not due(delivery, config, moment):
        return "submitted"
    submitted = from_text(delivery.submitted_at or delivery.finished_at or delivery.started_at)
    verdict = judge_status(
        destination, config, delivery.reference, delivery.target, submitted=submitted, now=moment
    )
    record_verdict(ledger, delivery.id, verdict)
    return verdict.status


@dataclass
class Verdict:
    """What one status poll found out about one delivered file."""

    #: ``submitted`` (still being processed, or no answer yet), ``done``, ``warned``,
    #: ``failed`` or ``timeout``.
    status: str
    #: The answer's fields; ``None`` when no answer could be read.
    fields: dict[str, Any] | None
    #: The one line of a failure or timeout (or of an answer that could not be read).
    error: str | None = None

    @property
    def decided(self) -> bool:
        return self.status != "submitted"


def record_verdict(ledger: Ledger, delivery_id: int, verdict: Verdict) -> None:
    """Record what a poll found for a submitted delivery (its fields as JSON)."""
    fields = json.dumps(verdict.fields, sort_keys=False) if verdict.fields is not None else None
    ledger.record_status(delivery_id, verdict.status, fields=fields, error=verdict.error)


def judge_status(
    destination: HttpsDestination,
    config: DestinationConfig,
    reference: str | None,
    target: str,
    *,
    submitted: datetime,
    now: datetime,
) -> Verdict:
    """Ask for the status of the file sent to ``target`` (its ``reference``) once, and
    decide from the answer and ``status_done`` / ``status_fail`` / ``status_warn``
    (``status_timeout`` counted from ``submitted``); what it finds is logged."""
    name = PurePosixPath(target).name
    url = destination.status_address(reference, target)
    timed_out = config.status_timeout is not None and now >= submitted + timedelta(
        seconds=config.status_timeout
    )
    done, fail, warn = (
        parse_condition(text) if text else None
        for text in (config.status_done, config.status_fail, config.status_warn)
    )
    where = f"{name} at {destination.display} (reference {reference or '-'})"
    try:
        body = destination.fetch_status(url)
        crash_point("status.polled")
        answer = parse_answer(body)
        fields: dict[str, Any] = dict(answer.fields())
        for condition in (done, fail, warn):
            for field in condition.fields if condition else ():
                fields.setdefault(field, answer.lookup(field))
        finished = done is None or done.holds(answer)
        failing = fail is not None and fail.holds(answer)
        warning = warn is not None and warn.holds(answer)
    except ExportmonError as exc:  # no answer, or none to read (AnswerError): ask again
        if timed_out:
            gave_up = (
                f"{where}: no status within status_timeout ({_span(config.status_timeout)}):"
                f" {exc.one_line()}"
            )
            return Verdict("timeout", None, gave_up)
        log.warning("status of %s: %s; asking again later", where, exc.one_line())
        return Verdict("submitted", None, exc.one_line())
    counts = counts_text(fields) or "no counts"
    if not finished and not timed_out:
        log.info("%s is being processed: %s", where, counts)
        return Verdict("submitted", fields)
    if failing:
        assert fail is not None
        return Verdict("failed", fields, f"{where}: processing failed ({fail.text}): {counts}")
    if not finished:
        late = f"still not processed after status_timeout ({_span(config.status_timeout)})"
        return Verdict("timeout", fields, f"{where}: {late}: {counts}")
    if warning:
        assert warn is not None
        log.warning("%s processed with warnings (%s): %s", where, warn.text, counts)
        return Verdict("warned", fields)
    log.info("%s processed: %s", where, counts)
    return Verdict("done", fields)


@dataclass
class ProcessingStatus:
    """What a receiving system said of one delivered file (``status --json``)."""

    destination: str
    file: str
    reference: str | None
    #: ``submitted``, ``done``, ``warned``, ``failed`` or ``timeout``.
    status: str
    #: ``queued 12 / errors 0``.
    counts: str
    #: The status answer's fields at the latest poll.
    fields: dict[str, Any]
    submitted_at: str | None
    polled_at: str | None
    error: str | None


def processing_status(ledger: Ledger, export_id: int | None) -> list[ProcessingStatus]:
    """The tracked deliveries of ``export_id`` worth showing: every one still being
    processed, and those of its latest tracked export."""
    shown = []
    for delivery in ledger.processing_of_export_id(export_id):
        fields = _fields(delivery.status_fields)
        shown.append(
            ProcessingStatus(
                destination=printable(delivery.destination),
                file=printable(PurePosixPath(delivery.target).name),
                reference=delivery.reference,
                status=delivery.status or "",
                counts=counts_text(fields),
                fields=fields,
                submitted_at=delivery.submitted_at,
                polled_at=delivery.polled_at,
                error=printable(delivery.error) if delivery.error else None,
            )
        )
    return shown


def waiting_summary(found: list[ProcessingStatus]) -> str | None:
    """For the status table: ``2 files being processed: queued 12 / errors 0`` while
    any is, else ``1 file delivered with warnings: ... / warnings 3`` when the latest
    export's files had warnings (the counts summed); None otherwise."""
    for status, what in (("submitted", "being processed"), ("warned", "delivered with warnings")):
        chosen = [p for p in found if p.status == status]
        if not chosen:
            continue
        totals: dict[str, int] = {}
        for item in chosen:
            for name, value in item.fields.items():
                number = _integer(value)
                if number is not None:
                    totals[name] = totals.get(name, 0) + number
        counts = counts_text(totals)
        return f"{plural(len(chosen), 'file')} {what}" + (f": {counts}" if counts else "")
    return None


def processing_line(delivery: Delivery) -> str:
    """``warned: completed 5 / errors 0 / warnings 2`` for a tracked delivery."""
    counts = counts_text(delivery.status_fields)
    return f"{delivery.status}: {counts}" if counts else str(delivery.status)


def _fields(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def counts_text(fields: Mapping[str, Any] | str | None, *, limit: int = 4) -> str:
    """``queued 12 / errors 0``: the numeric fields of a status answer (or their JSON
    as recorded), known counts by their short names, at most ``limit``."""
    if isinstance(fields, str):
        try:
            fields = json.loads(fields)
        except ValueError:
            return ""
    if not isinstance(fields, Mapping):
        return ""
    shown = []
    for name, value in fields.items():
        number = _integer(value)
        if number is None:
            continue
        label = COUNT_NAMES.get(name) or (name[:-5] if name.endswith("Count") else name)
        shown.append(f"{label} {number}")
    return " / ".join(shown[:limit])


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _span(seconds: float | None) -> str:
    return format_duration(seconds or 0.0)


__all__ = [
    "COUNT_NAMES",
    "Condition",
    "ProcessingStatus",
    "Verdict",
    "counts_text",
    "due",
    "judge_status",
    "next_poll",
    "poll_delivery",
    "processing_line",
    "processing_status",
    "record_verdict",
    "track_export",
    "tracked",
    "waiting_summary",
]
