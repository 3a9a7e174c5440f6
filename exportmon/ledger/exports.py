"""Exports and their files.

Progress of an export is its ``state`` (``new`` → ``downloaded`` → ``unpacked``
→ ``delivered``); a failure does not change the state but sets ``error`` (and
``retry_at`` when it may be retried automatically, ``error_config`` to the
fingerprint of the config it failed under), so a retry resumes from the last
completed step. A file is one deliverable file of an export (the unpacked
and rewritten CSV), recorded once per export and name.

An export has been *superseded* when a later export of the same export id has been
delivered: its failure no longer matters to anyone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exportmon.errors import LedgerError
from exportmon.ledger.counters import count_delivered_export, raise_counter
from exportmon.ledger.db import Database, check_state, marks, now
from exportmon.ledger.mails import settle_mail_in

EXPORT_STATES = ("new", "downloaded", "unpacked", "delivered")

#: SQL condition: the export ``e`` has been superseded (see the module documentation).
SUPERSEDED = (
    "EXISTS (SELECT 1 FROM exports d WHERE d.state = 'delivered'"
    " AND d.export_id IS e.export_id AND d.id > e.id)"
)


@dataclass
class Export:
    id: int
    mail_id: int | None
    export_id: int | None
    key: str
    token: str | None
    kind: str
    link: str | None
    file_name: str | None
    state: str
    error: str | None
    error_step: str | None
    error_at: str | None
    retry_at: str | None
    attempts: int
    download_path: str | None
    bytes: int | None
    sha256: str | None
    files: int | None
    rows: int | None
    created_at: str
    updated_at: str
    downloaded_at: str | None
    unpacked_at: str | None
    delivered_at: str | None
    #: The type a drop-folder source found for the file; None: from the file names.
    export_type: str | None = None
    #: The fingerprint of the config the failure happened under (None: not known).
    error_config: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None and self.state != "delivered"


@dataclass
class File:
    id: int
    export_row: int | None
    path: str
    name: str
    export_type: str | None
    bytes: int | None
    rows: int | None
    sha256: str | None
    rewritten: int
    created_at: str
    updated_at: str


@dataclass
class ExportFigures:
    """What the ledger holds for one export id (None: exports without an id)."""

    export_id: int | None
    exports: int
    delivered: int
    #: Not delivered and not failing.
    pending: int
    last_arrival: str | None
    last_success: str | None
    files_delivered: int
    rows_delivered: int
    bytes_delivered: int


@dataclass
class StalledExports:
    """Exports of one export id received before a moment, neither delivered nor failed."""

    export_id: int | None
    count: int
    oldest: str


class ExportRecords(Database):
    """The ledger's exports and files."""

    def find_export(self, key: str) -> Export | None:
        return self._one(Export, "SELECT * FROM exports WHERE key = ?", (key,))

    def add_export(
        self,
        *,
        key: str,
        kind: str,
        mail_id: int | None = None,
        export_id: int | None = None,
        token: str | None = None,
        link: str | None = None,
        file_name: str | None = None,
        download_path: str | None = None,
        export_type: str | None = None,
    ) -> Export:
        """Record a new export; an export with the same ``key`` is returned as it is.

        ``key`` identifies the export file for deduplication: the token of an ITRP
        export, or the Message-ID plus the attachment name. ``export_type`` is the
        type a drop-folder source found (None: the file names tell).
        """
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO exports (mail_id, export_id, key, token, kind, link, file_name,"
                " download_path, export_type, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (
                    mail_id,
                    export_id,
                    key,
                    token,
                    kind,
                    link,
                    file_name,
                    download_path,
                    export_type,
                    stamp,
                    stamp,
                ),
            )
        export = self.find_export(key)
        assert export is not None
        return export

    def export(self, row_id: int) -> Export | None:
        return self._one(Export, "SELECT * FROM exports WHERE id = ?", (row_id,))

    def export_by_download(self, path: Path | str) -> Export | None:
        return self._one(
            Export,
            "SELECT * FROM exports WHERE download_path = ? ORDER BY id DESC LIMIT 1",
            (str(path),),
        )

    def exports(
        self,
        *states: str,
        mail_id: int | None = None,
        export_id: int | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[Export]:
        """Exports filtered by progress state, mail, export id and creation time."""
        clauses: list[str] = []
        params: list[Any] = []
        if states:
            for state in states:
                check_state(state, EXPORT_STATES, "export")
            clauses.append(f"state IN ({','.join('?' * len(states))})")
            params.extend(states)
        for column, op, value in (
            ("mail_id", "=", mail_id),
            ("export_id", "=", export_id),
            ("created_at", ">=", since),
            ("created_at", "<", until),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._all(Export, f"SELECT * FROM exports {where} ORDER BY id", params)

    def unfinished_exports(self) -> list[Export]:
        """Exports not yet delivered, oldest first (what a restarted run resumes)."""
        return self._all(Export, "SELECT * FROM exports WHERE state != 'delivered' ORDER BY id")

    def due_exports(self, at: str | None = None, *, include_failed: bool = False) -> list[Export]:
        """Unfinished exports to work on now: never failed, due for a retry, or all failed ones."""
        at = at or now()
        if include_failed:
            return self.unfinished_exports()
        return self._all(
            Export,
            "SELECT * FROM exports WHERE state != 'delivered'"
            " AND (error IS NULL OR (retry_at IS NOT NULL AND retry_at <= ?)) ORDER BY id",
            (at,),
        )

    def advance_export(self, row_id: int, state: str, **fields: Any) -> Export:
        """Record that an export completed the step leading to ``state``.

        Clears any earlier error. ``fields`` sets other columns (``download_path``,
        ``bytes``, ``sha256``, ``files``, ``rows``, ``file_name``). An export becoming
        ``delivered`` settles its mail (:meth:`~exportmon.ledger.Ledger.settle_mail`) in
        the same transaction, so no crash can leave a mail whose exports are all
        delivered unsettled, and so never archived.
        """
        check_state(state, EXPORT_STATES, "export")
        allowed = {"download_path", "bytes", "sha256", "files", "rows", "file_name", "link"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not an export field: {', '.join(sorted(unknown))}")
        stamp = now()
        assignments = [
            "state = ?",
            "error = NULL",
            "error_step = NULL",
            "error_at = NULL",
            "retry_at = NULL",
            "error_config = NULL",
            "updated_at = ?",
        ]
        params: list[Any] = [state, stamp]
        timestamp_column = {
            "downloaded": "downloaded_at",
            "unpacked": "unpacked_at",
            "delivered": "delivered_at",
        }.get(state)
        if timestamp_column:
            assignments.append(f"{timestamp_column} = ?")
            params.append(stamp)
        for column, value in fields.items():
            assignments.append(f"{column} = ?")
            params.append(value)
        with self._transaction() as db:
            current = db.execute("SELECT state FROM exports WHERE id = ?", (row_id,)).fetchone()
            if current is None:
                raise LedgerError(f"no export {row_id} in the ledger")
            if EXPORT_STATES.index(state) < EXPORT_STATES.index(current[0]):
                raise LedgerError(f"export {row_id} cannot go back from {current[0]} to {state}")
            db.execute(
                f"UPDATE exports SET {', '.join(assignments)} WHERE id = ?", (*params, row_id)
            )
            if state == "delivered" and current[0] != "delivered":
                count_delivered_export(db, row_id)
            if state == "delivered":
                mail_id = db.execute(
                    "SELECT mail_id FROM exports WHERE id = ?", (row_id,)
                ).fetchone()[0]
                if mail_id is not None:
                    settle_mail_in(db, mail_id)
        export = self.export(row_id)
        assert export is not None
        return export

    def fail_export(
        self,
        row_id: int,
        step: str,
        error: str,
        retry_at: str | None,
        *,
        config: str | None = None,
    ) -> Export:
        """Record that ``step`` of an export failed; ``retry_at`` None means only on
        request, or once the config has changed from ``config`` (its fingerprint)."""
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET error = ?, error_step = ?, error_at = ?, retry_at = ?,"
                " error_config = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (error, step, stamp, retry_at, config, stamp, row_id),
            )
            found = db.execute("SELECT export_id FROM exports WHERE id = ?", (row_id,)).fetchone()
            if found is not None:
                raise_counter(db, "export_failures", 1, export_id=found[0])
        export = self.export(row_id)
        if export is None:
            raise LedgerError(f"no export {row_id} in the ledger")
        return export

    def reset_export(self, row_id: int, state: str = "new") -> None:
        """Send an export back to ``state`` (an explicit re-run asked for by the user)."""
        check_state(state, EXPORT_STATES, "export")
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET state = ?, error = NULL, error_step = NULL, retry_at = NULL,"
                " error_config = NULL, updated_at = ? WHERE id = ?",
                (state, now(), row_id),
            )

    def failed_under_other_config(self, config: str, states: Sequence[str]) -> list[Export]:
        """Failed exports in one of ``states``, not superseded, whose failure was
        recorded under a config fingerprint other than ``config``; oldest first.

        Exports whose failure has no fingerprint (recorded before there were any)
        are not among them: whether their config changed cannot be told.
        """
        for state in states:
            check_state(state, EXPORT_STATES, "export")
        return self._all(
            Export,
            "SELECT * FROM exports e WHERE e.error IS NOT NULL AND e.state != 'delivered'"
            f" AND e.state IN ({marks(states)})"
            " AND e.error_config IS NOT NULL AND e.error_config != ?"
            f" AND NOT {SUPERSEDED} ORDER BY e.id",
            (*states, config),
        )

    def retry_export_now(self, row_id: int, config: str) -> None:
        """Make a failed export due now, as retried under ``config`` (a fingerprint):
        the next failure or success replaces that, and the same change of config
        does not make it due again."""
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET retry_at = ?, error_config = ?"
                " WHERE id = ? AND error IS NOT NULL",
                (now(), config, row_id),
            )

    # --- files -----------------------------------------------------------------------

    def add_file(
        self,
        *,
        path: Path | str,
        name: str,
        export_row: int | None = None,
        export_type: str | None = None,
        bytes: int | None = None,
        rows: int | None = None,
        sha256: str | None = None,
    ) -> File:
        """Record a deliverable file (replacing the record of the same name for that export)."""
        stamp = now()
        with self._transaction() as db:
            existing = None
            if export_row is not None:
                existing = db.execute(
                    "SELECT id FROM files WHERE export_row = ? AND name = ?", (export_row, name)
                ).fetchone()
            if existing:
                db.execute(
                    "UPDATE files SET path = ?, export_type = ?, bytes = ?, rows = ?, sha256 = ?,"
                    " updated_at = ? WHERE id = ?",
                    (str(path), export_type, bytes, rows, sha256, stamp, existing[0]),
                )
                file_id = existing[0]
            else:
                cursor = db.execute(
                    "INSERT INTO files (export_row, path, name, export_type, bytes, rows, sha256,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (export_row, str(path), name, export_type, bytes, rows, sha256, stamp, stamp),
                )
                file_id = cursor.lastrowid
        file = self.file(int(file_id or 0))
        assert file is not None
        return file

    def file(self, file_id: int) -> File | None:
        return self._one(File, "SELECT * FROM files WHERE id = ?", (file_id,))

    def file_by_path(self, path: Path | str) -> File | None:
        return self._one(
            File, "SELECT * FROM files WHERE path = ? ORDER BY id DESC LIMIT 1", (str(path),)
        )

    def files(self, export_row: int) -> list[File]:
        return self._all(
            File, "SELECT * FROM files WHERE export_row = ? ORDER BY id", (export_row,)
        )

    def update_file(self, file_id: int, **fields: Any) -> None:
        """Update ``bytes``, ``rows``, ``sha256``, ``path`` or ``rewritten`` of a file."""
        allowed = {"bytes", "rows", "sha256", "path", "rewritten"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"not a file field: {', '.join(sorted(unknown))}")
        if not fields:
            return
        sets = ", ".join(f"{column} = ?" for column in fields)
        with self._transaction() as db:
            db.execute(
                f"UPDATE files SET {sets}, updated_at = ? WHERE id = ?",
                (*[str(v) if isinstance(v, Path) else v for v in fields.values()], now(), file_id),
            )

    # --- deliveries ------------------------------------------------------------------

    # --- named reads for status and alerts --------------------------------------------

    def failing_exports(self) -> list[Export]:
        """Failed, undelivered exports that no later delivered export has superseded."""
        return self._all(
            Export,
            "SELECT * FROM exports e WHERE e.error IS NOT NULL AND e.state != 'delivered'"
            f" AND NOT {SUPERSEDED} ORDER BY e.id",
        )

    def superseded(self, export: Export) -> bool:
        """Whether a later export of the same export id has been delivered."""
        return bool(self._value(f"SELECT {SUPERSEDED} FROM exports e WHERE e.id = ?", (export.id,)))

    def last_delivered_at(self) -> str | None:
        """When the latest delivery of any export completed."""
        return self._text("SELECT max(delivered_at) FROM exports")

    def last_received_at(self, export_id: int | None) -> str | None:
        """When the latest export of ``export_id`` was received."""
        return self._text("SELECT max(created_at) FROM exports WHERE export_id IS ?", (export_id,))

    def last_failed_export(self, export_id: int | None) -> Export | None:
        """The export of ``export_id`` that failed last (still failing or not)."""
        return self._one(
            Export,
            "SELECT * FROM exports WHERE export_id IS ? AND error IS NOT NULL"
            " ORDER BY error_at DESC LIMIT 1",
            (export_id,),
        )

    def stalled_exports(self, received_before: str) -> list[StalledExports]:
        """Per export id: work received before ``received_before`` and still unfinished
        (not delivered, not failing)."""
        return self._all(
            StalledExports,
            "SELECT export_id, count(*) AS count, min(created_at) AS oldest FROM exports"
            " WHERE state != 'delivered' AND error IS NULL AND created_at < ?"
            " GROUP BY export_id ORDER BY export_id",
            (received_before,),
        )

    def latest_row_counts(self, export_id: int) -> tuple[Export | None, dict[str, int]]:
        """The latest export of ``export_id`` whose files have been counted, and its rows
        per export type (the file name for files without a type)."""
        latest = self._value(
            "SELECT max(e.id) FROM exports e JOIN files f ON f.export_row = e.id"
            " WHERE e.export_id = ? AND f.rows IS NOT NULL",
            (export_id,),
        )
        if latest is None:
            return None, {}
        counts = {
            row["export_type"]: row["rows"]
            for row in self._rows(
                "SELECT coalesce(export_type, name) AS export_type, sum(rows) AS rows FROM files"
                " WHERE export_row = ? AND rows IS NOT NULL GROUP BY 1",
                (latest,),
            )
        }
        return self.export(latest), counts

    def latest_row_counts_by_type(self, export_id: int) -> dict[str, tuple[int, Export]]:
        """Per export type (the file name for files without a type): the rows of the
        latest export of ``export_id`` with counted files of that type, and that export.

        For sources where every file is its own export (a drop folder), so that the
        users file's rows are not lost when the memberships file came last."""
        found: dict[str, tuple[int, Export]] = {}
        for row in self._rows(
            "SELECT kind, rows, export_row FROM (SELECT coalesce(f.export_type, f.name) AS kind,"
            " sum(f.rows) AS rows, f.export_row, row_number() OVER (PARTITION BY"
            " coalesce(f.export_type, f.name) ORDER BY f.export_row DESC) AS rank"
            " FROM files f JOIN exports e ON f.export_row = e.id"
            " WHERE e.export_id = ? AND f.rows IS NOT NULL GROUP BY 1, 3) WHERE rank = 1",
            (export_id,),
        ):
            export = self.export(row["export_row"])
            if export is not None:
                found[row["kind"]] = (int(row["rows"]), export)
        return found

    def export_figures(self) -> list[ExportFigures]:
        """Counts and times per export id, over every export the ledger holds."""
        delivered_files = (
            "FROM files f JOIN exports d ON f.export_row = d.id"
            " WHERE d.export_id IS e.export_id AND d.state = 'delivered'"
        )
        return self._all(
            ExportFigures,
            "SELECT e.export_id,"
            " count(*) AS exports,"
            " coalesce(sum(e.state = 'delivered'), 0) AS delivered,"
            " coalesce(sum(e.state != 'delivered' AND e.error IS NULL), 0) AS pending,"
            " max(e.created_at) AS last_arrival,"
            " max(e.delivered_at) AS last_success,"
            f" (SELECT count(*) {delivered_files}) AS files_delivered,"
            f" (SELECT coalesce(sum(f.rows), 0) {delivered_files}) AS rows_delivered,"
            f" (SELECT coalesce(sum(f.bytes), 0) {delivered_files}) AS bytes_delivered"
            " FROM exports e GROUP BY e.export_id",
        )
