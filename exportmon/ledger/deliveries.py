"""Deliveries: one file written to one destination.

A delivery is recorded (``started``) before the first byte moves and finished
(``done``) or ``failed`` afterwards, so after a crash the target can be checked
and the delivery completed or redone, never duplicated. Destinations are keyed by
a string that names them (``local:/srv/in``, ``ftp://host/dir``).

Completion signals (trigger files, manifests) are recorded as deliveries without
a file, their ``source_path`` ``signal:<kind>`` (:data:`SIGNAL`): they are retried
and checked like files, but not counted as delivered files or bytes.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exportmon.ledger.counters import raise_counter
from exportmon.ledger.db import Database, check_state, now

DELIVERY_STATES = ("started", "done", "failed")
#: ``source_path`` prefix of a completion signal's delivery (see module docstring).
SIGNAL = "signal:"
_IS_FILE = "source_path NOT LIKE 'signal:%'"
#: What a receiving system said of a delivery it processes later (``status``):
#: ``submitted`` (acknowledged with a reference, being processed), then ``done``,
#: ``warned`` (done, with warnings), ``failed`` (its ``status_fail`` held) or
#: ``timeout`` (``status_done`` never held within ``status_timeout``). NULL for a
#: delivery nobody reports on.
PROCESSING_STATES = ("submitted", "done", "warned", "failed", "timeout")


@dataclass
class Delivery:
    id: int
    file_id: int | None
    export_row: int | None
    destination: str
    source_path: str
    target: str
    state: str
    bytes: int | None
    sha256: str | None
    error: str | None
    started_at: str
    finished_at: str | None
    #: The receiving system's processing reference (HTTPS ``reference``).
    reference: str | None = None
    #: One of :data:`PROCESSING_STATES`, or None (nothing reports on it).
    status: str | None = None
    #: The status answer's fields at the latest poll, as JSON (``{"queuedCount": "0"}``).
    status_fields: str | None = None
    #: When the receiving system acknowledged it (the upload's answer).
    submitted_at: str | None = None
    #: When its status was last asked for.
    polled_at: str | None = None


@dataclass
class DestinationTotals:
    """The deliveries to one destination started in a period."""

    destination: str
    #: Files delivered (``done``).
    files: int
    #: Bytes of the files delivered.
    bytes: int
    #: Deliveries that failed.
    failed: int
    #: When the latest delivery finished.
    last_at: str | None


@dataclass
class DestinationState:
    """One destination over every delivery the ledger holds."""

    destination: str
    files_delivered: int
    bytes_delivered: int
    #: Files (targets) whose latest delivery there failed.
    failing: int
    last_success: str | None
    last_failure: str | None
    last_error: str | None


def _state_and_destination(
    db: sqlite3.Connection, delivery_id: int
) -> tuple[str, str, bool] | None:
    """State, destination and whether it is a file (not a signal) of a delivery."""
    found = db.execute(
        f"SELECT state, destination, {_IS_FILE} FROM deliveries WHERE id = ?", (delivery_id,)
    ).fetchone()
    return (found[0], found[1], bool(found[2])) if found else None


class DeliveryRecords(Database):
    """The ledger's deliveries."""

    def start_delivery(
        self,
        *,
        destination: str,
        source_path: Path | str,
        target: str,
        file_id: int | None = None,
        export_row: int | None = None,
    ) -> Delivery:
        """Record that a file is about to be written to ``target`` at ``destination``.

        Recorded before the first byte moves, so that after a crash the target can
        be checked and the delivery completed or redone, never duplicated.
        """
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO deliveries (file_id, export_row, destination, source_path, target,"
                " started_at) VALUES (?, ?, ?, ?, ?, ?)",
                (file_id, export_row, destination, str(source_path), target, now()),
            )
            delivery_id = cursor.lastrowid
        delivery = self.delivery(int(delivery_id or 0))
        assert delivery is not None
        return delivery

    def finish_delivery(
        self,
        delivery_id: int,
        *,
        bytes: int,
        sha256: str | None = None,
        reference: str | None = None,
        submitted: bool = False,
    ) -> None:
        """Record a delivery complete: the file is at its target, or acknowledged by a
        receiving system (``reference``). With ``submitted`` that system reports later
        how its processing went: the delivery's ``status`` becomes ``submitted``, in
        the same transaction, so it is never sent again and its status is polled."""
        at = now()
        with self._transaction() as db:
            before = _state_and_destination(db, delivery_id)
            db.execute(
                "UPDATE deliveries SET state = 'done', bytes = ?, sha256 = ?, error = NULL,"
                " finished_at = ?, reference = ?, status = ?, submitted_at = ? WHERE id = ?",
                (
                    bytes,
                    sha256,
                    at,
                    reference,
                    "submitted" if submitted else None,
                    at if reference is not None or submitted else None,
                    delivery_id,
                ),
            )
            if before is not None and before[0] != "done" and before[2]:
                raise_counter(db, "destination_files", 1, destination=before[1])
                raise_counter(db, "destination_bytes", bytes, destination=before[1])

    def fail_delivery(self, delivery_id: int, error: str) -> None:
        with self._transaction() as db:
            before = _state_and_destination(db, delivery_id)
            db.execute(
                "UPDATE deliveries SET state = 'failed', error = ?, finished_at = ? WHERE id = ?",
                (error, now(), delivery_id),
            )
            if before is not None:
                raise_counter(db, "destination_failures", 1, destination=before[1])

    def delivery(self, delivery_id: int) -> Delivery | None:
        return self._one(Delivery, "SELECT * FROM deliveries WHERE id = ?", (delivery_id,))

    def deliveries(
        self,
        *,
        file_id: int | None = None,
        export_row: int | None = None,
        destination: str | None = None,
        state: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[Delivery]:
        clauses: list[str] = []
        params: list[Any] = []
        if state is not None:
            check_state(state, DELIVERY_STATES, "delivery")
        for column, op, value in (
            ("file_id", "=", file_id),
            ("export_row", "=", export_row),
            ("destination", "=", destination),
            ("state", "=", state),
            ("started_at", ">=", since),
            ("started_at", "<", until),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._all(Delivery, f"SELECT * FROM deliveries {where} ORDER BY id", params)

    def delivered(self, file_id: int, destination: str) -> Delivery | None:
        """The completed delivery of a file to a destination, if there is one. One the
        receiving system reported ``failed`` or that timed out does not count: only
        ``run --retry-failed`` gets that far, and it sends the file again."""
        return self._one(
            Delivery,
            "SELECT * FROM deliveries WHERE file_id = ? AND destination = ? AND state = 'done'"
            " AND (status IS NULL OR status NOT IN ('failed', 'timeout'))"
            " ORDER BY id DESC LIMIT 1",
            (file_id, destination),
        )

    def unfinished_delivery(self, file_id: int, destination: str) -> Delivery | None:
        """The latest delivery of a file to a destination that did not complete: cut short
        by a crash (``started``) or ``failed``. A retry goes to its target, so that it
        neither delivers the file twice nor leaves a partial upload behind."""
        return self._one(
            Delivery,
            "SELECT * FROM deliveries WHERE file_id = ? AND destination = ?"
            " AND state IN ('started', 'failed') ORDER BY id DESC LIMIT 1",
            (file_id, destination),
        )

    def interrupted_deliveries(self, destination: str | None = None) -> list[Delivery]:
        """Deliveries started but never finished or failed: a crash happened mid-way."""
        if destination is None:
            return self._all(
                Delivery, "SELECT * FROM deliveries WHERE state = 'started' ORDER BY id"
            )
        return self._all(
            Delivery,
            "SELECT * FROM deliveries WHERE state = 'started' AND destination = ? ORDER BY id",
            (destination,),
        )

    # --- processing reported by the receiving system (HTTPS status_url) ----------------

    def record_status(
        self,
        delivery_id: int,
        status: str,
        *,
        fields: str | None,
        error: str | None = None,
    ) -> None:
        """Record a status poll of a submitted delivery: its processing ``status`` (one
        of :data:`PROCESSING_STATES`), the answer's ``fields`` (JSON) and, when it
        failed or timed out, the one-line ``error``. Only a ``submitted`` delivery
        changes: a decided one stays decided."""
        check_state(status, PROCESSING_STATES, "processing")
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = ?, status_fields = coalesce(?, status_fields),"
                " error = ?, polled_at = ? WHERE id = ? AND status = 'submitted'",
                (status, fields, error, now(), delivery_id),
            )

    def processing_deliveries(
        self,
        *,
        export_row: int | None = None,
        destination: str | None = None,
        status: str | None = None,
        latest: bool = False,
    ) -> list[Delivery]:
        """Completed deliveries a receiving system reports on (``status`` set), oldest
        first; narrowed to an export, a destination, a status; with ``latest`` only
        those that are the latest delivery of their file to their destination (not
        superseded by sending the file again)."""
        clauses = ["state = 'done'", "status IS NOT NULL"]
        if latest:
            clauses.append(
                "id = (SELECT max(m.id) FROM deliveries m WHERE m.file_id IS deliveries.file_id"
                " AND m.destination = deliveries.destination)"
            )
        params: list[Any] = []
        if status is not None:
            check_state(status, PROCESSING_STATES, "processing")
        for column, value in (
            ("export_row", export_row),
            ("destination", destination),
            ("status", status),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return self._all(
            Delivery,
            f"SELECT * FROM deliveries WHERE {' AND '.join(clauses)} ORDER BY id",
            params,
        )

    def processing_of_export_id(self, export_id: int | None) -> list[Delivery]:
        """The deliveries of exports of ``export_id`` that a receiving system reports on:
        those still ``submitted``, and every one of the latest such export, oldest first;
        none that a later delivery of the same file there superseded."""
        return self._all(
            Delivery,
            "SELECT d.* FROM deliveries d JOIN exports e ON d.export_row = e.id"
            " WHERE e.export_id IS ? AND d.state = 'done' AND d.status IS NOT NULL"
            " AND d.id = (SELECT max(s.id) FROM deliveries s WHERE s.file_id IS d.file_id"
            "   AND s.destination = d.destination)"
            " AND (d.status = 'submitted' OR d.export_row = (SELECT max(l.export_row)"
            "   FROM deliveries l JOIN exports x ON l.export_row = x.id"
            "   WHERE x.export_id IS ? AND l.state = 'done' AND l.status IS NOT NULL))"
            " ORDER BY d.id",
            (export_id, export_id),
        )

    # --- named reads for reports and metrics ------------------------------------------

    def destination_totals(self, start: str, end: str) -> list[DestinationTotals]:
        """Per destination, the deliveries started in ``[start, end)``."""
        return self._all(
            DestinationTotals,
            f"SELECT destination, coalesce(sum(state = 'done' AND {_IS_FILE}), 0) AS files,"
            f" coalesce(sum(CASE WHEN state = 'done' AND {_IS_FILE} THEN bytes END), 0) AS bytes,"
            " coalesce(sum(state = 'failed'), 0) AS failed, max(finished_at) AS last_at"
            " FROM deliveries WHERE started_at >= ? AND started_at < ?"
            " GROUP BY destination ORDER BY destination",
            (start, end),
        )

    def destination_states(self) -> list[DestinationState]:
        """Per destination: what was delivered there, and what is failing there now."""
        return self._all(
            DestinationState,
            "SELECT d.destination,"
            f" coalesce(sum(d.state = 'done' AND d.{_IS_FILE}), 0) AS files_delivered,"
            f" coalesce(sum(CASE WHEN d.state = 'done' AND d.{_IS_FILE} THEN d.bytes END), 0)"
            " AS bytes_delivered,"
            " (SELECT count(*) FROM deliveries l WHERE l.destination = d.destination"
            "   AND l.state = 'failed' AND l.id = (SELECT max(m.id) FROM deliveries m"
            "   WHERE m.destination = l.destination AND m.file_id IS l.file_id"
            "   AND m.target = l.target)) AS failing,"
            " max(CASE WHEN d.state = 'done' THEN d.finished_at END) AS last_success,"
            " max(CASE WHEN d.state = 'failed' THEN d.finished_at END) AS last_failure,"
            " (SELECT f.error FROM deliveries f WHERE f.destination = d.destination"
            "   AND f.state = 'failed' ORDER BY f.id DESC LIMIT 1) AS last_error"
            " FROM deliveries d GROUP BY d.destination ORDER BY d.destination",
        )
