"""The ledger's SQLite file: opening it, its schema and migrations, transactions.

Every aggregate module of :mod:`exportmon.ledger` reads and writes through a
:class:`Database`: ``_transaction()`` is one short ``BEGIN IMMEDIATE`` transaction,
and inside :meth:`Database.atomic` the changes of several aggregates (a mail and
all of its exports, say) share one. Reads go through ``_all``/``_one`` (records)
and ``_rows``/``_value`` (aggregates), all under the same lock, so one ledger is
safe to share between the threads of a process.

Times are stored as ISO 8601 UTC text (``2026-11-23T08:40:00.123456Z``), which
sorts and compares correctly as text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from exportmon.crashpoints import crash_point
from exportmon.errors import LedgerError
from exportmon.safe_open import refuse_link

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# Each entry upgrades the schema by one version; PRAGMA user_version counts them.
# Never edit an entry that has shipped: append a new one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        status TEXT NOT NULL DEFAULT 'running',
        summary TEXT
    );
    CREATE TABLE mailbox_state (
        source TEXT NOT NULL,
        mailbox TEXT NOT NULL,
        uidvalidity INTEGER,
        last_uid INTEGER NOT NULL DEFAULT 0,
        extra TEXT,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (source, mailbox)
    );
    CREATE TABLE mails (
        id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        mailbox TEXT NOT NULL DEFAULT '',
        uidvalidity INTEGER,
        uid TEXT,
        message_id TEXT,
        sender TEXT,
        subject TEXT,
        sent_at TEXT,
        state TEXT NOT NULL,
        note TEXT,
        first_seen_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        archived_at TEXT
    );
    CREATE UNIQUE INDEX mails_by_uid ON mails (source, mailbox, uidvalidity, uid);
    CREATE INDEX mails_by_message_id ON mails (message_id);
    CREATE INDEX mails_by_state ON mails (state);
    CREATE TABLE exports (
        id INTEGER PRIMARY KEY,
        mail_id INTEGER REFERENCES mails (id),
        export_id INTEGER,
        key TEXT NOT NULL UNIQUE,
        token TEXT,
        kind TEXT NOT NULL,
        link TEXT,
        file_name TEXT,
        state TEXT NOT NULL DEFAULT 'new',
        error TEXT,
        error_step TEXT,
        error_at TEXT,
        retry_at TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        download_path TEXT,
        bytes INTEGER,
        sha256 TEXT,
        files INTEGER,
        rows INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        downloaded_at TEXT,
        unpacked_at TEXT,
        delivered_at TEXT
    );
    CREATE INDEX exports_by_state ON exports (state);
    CREATE INDEX exports_by_mail ON exports (mail_id);
    CREATE INDEX exports_by_download ON exports (download_path);
    CREATE INDEX exports_by_export_id ON exports (export_id, created_at);
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        export_row INTEGER REFERENCES exports (id),
        path TEXT NOT NULL,
        name TEXT NOT NULL,
        export_type TEXT,
        bytes INTEGER,
        rows INTEGER,
        sha256 TEXT,
        rewritten INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX files_by_export ON files (export_row, name);
    CREATE INDEX files_by_path ON files (path);
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        file_id INTEGER REFERENCES files (id),
        export_row INTEGER REFERENCES exports (id),
        destination TEXT NOT NULL,
        source_path TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'started',
        bytes INTEGER,
        sha256 TEXT,
        error TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE INDEX deliveries_by_file ON deliveries (file_id, destination, state);
    CREATE INDEX deliveries_by_time ON deliveries (started_at);
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        subject_key TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE INDEX alerts_by_subject ON alerts (subject_key, kind, created_at);
    CREATE INDEX alerts_by_state ON alerts (state);
    CREATE TABLE notices (
        key TEXT PRIMARY KEY,
        first_at TEXT NOT NULL,
        last_at TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 1
    );
    """,
    # 2: alert bookkeeping (what a failure alert concerns, when it was resolved, which
    # channels already carried it) and failures of whole steps such as reading the mailbox.
    """
    ALTER TABLE alerts ADD COLUMN scope TEXT;
    ALTER TABLE alerts ADD COLUMN resolved_at TEXT;
    ALTER TABLE alerts ADD COLUMN channels TEXT;
    CREATE INDEX alerts_by_scope ON alerts (scope, resolved_at);
    CREATE TABLE step_failures (
        step TEXT PRIMARY KEY,
        error TEXT NOT NULL,
        first_at TEXT NOT NULL,
        last_at TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 1
    );
    """,
    # 3: each channel's own record of each alert (sent, or waiting to be retried and why),
    # so channels are sent and retried independently.
    """
    CREATE TABLE alert_channels (
        alert_id INTEGER NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
        channel TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        last_at TEXT NOT NULL,
        sent_at TEXT,
        PRIMARY KEY (alert_id, channel)
    );
    CREATE INDEX alert_channels_by_channel ON alert_channels (channel, state);
    """,
    # 4: running totals that only ever grow (pruning leaves them), counted from what the
    # ledger holds when the table is made.
    """
    CREATE TABLE counters (
        name TEXT NOT NULL,
        export_id TEXT NOT NULL DEFAULT '',
        destination TEXT NOT NULL DEFAULT '',
        value INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (name, export_id, destination)
    );
    INSERT INTO counters (name, export_id, value)
        SELECT 'delivered_exports', coalesce(export_id, ''), count(*) FROM exports
        WHERE state = 'delivered' GROUP BY 1, 2;
    INSERT INTO counters (name, export_id, value)
        SELECT 'delivered_files', coalesce(e.export_id, ''), count(*)
        FROM files f JOIN exports e ON f.export_row = e.id
        WHERE e.state = 'delivered' GROUP BY 1, 2;
    INSERT INTO counters (name, export_id, value)
        SELECT 'delivered_rows', coalesce(e.export_id, ''), coalesce(sum(f.rows), 0)
        FROM files f JOIN exports e ON f.export_row = e.id
        WHERE e.state = 'delivered' GROUP BY 1, 2;
    INSERT INTO counters (name, export_id, value)
        SELECT 'delivered_bytes', coalesce(e.export_id, ''), coalesce(sum(f.bytes), 0)
        FROM files f JOIN exports e ON f.export_row = e.id
        WHERE e.state = 'delivered' GROUP BY 1, 2;
    INSERT INTO counters (name, export_id, value)
        SELECT 'export_failures', coalesce(export_id, ''), sum(attempts) FROM exports
        WHERE attempts > 0 GROUP BY 1, 2;
    INSERT INTO counters (name, destination, value)
        SELECT 'destination_files', destination, count(*) FROM deliveries
        WHERE state = 'done' GROUP BY 1, 2;
    INSERT INTO counters (name, destination, value)
        SELECT 'destination_bytes', destination, coalesce(sum(bytes), 0) FROM deliveries
        WHERE state = 'done' GROUP BY 1, 2;
    INSERT INTO counters (name, destination, value)
        SELECT 'destination_failures', destination, count(*) FROM deliveries
        WHERE state = 'failed' GROUP BY 1, 2;
    """,
    # 5: the export type a drop-folder source found for a file (its [[types]] rule), which
    # wins over the one its name gives.
    """
    ALTER TABLE exports ADD COLUMN export_type TEXT;
    """,
    # 6: the fingerprint of the config an export failed under, so that a run retries
    # the failure once that config has changed.
    """
    ALTER TABLE exports ADD COLUMN error_config TEXT;
    """,
    # 7: what a receiving system reports about a delivery it processes later (HTTPS
    # with status_url): its reference, the processing status and the answer's fields.
    """
    ALTER TABLE deliveries ADD COLUMN reference TEXT;
    ALTER TABLE deliveries ADD COLUMN status TEXT;
    ALTER TABLE deliveries ADD COLUMN status_fields TEXT;
    ALTER TABLE deliveries ADD COLUMN submitted_at TEXT;
    ALTER TABLE deliveries ADD COLUMN polled_at TEXT;
    CREATE INDEX deliveries_by_status ON deliveries (status);
    """,
)


def now() -> str:
    """The current time as ledger text."""
    return to_text(datetime.now(timezone.utc))


def to_text(moment: datetime) -> str:
    """``moment`` (timezone-aware) as ledger text."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def from_text(text: str) -> datetime:
    """Ledger text back to an aware UTC datetime."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


def check_state(state: str, allowed: tuple[str, ...], what: str) -> None:
    """Refuse a state that is not one of ``allowed`` (a programming error)."""
    if state not in allowed:
        raise ValueError(f"{state!r} is not a {what} state ({', '.join(allowed)})")


def marks(values: Sequence[Any]) -> str:
    """``?, ?, ?``: the placeholders of an ``IN (...)`` list of ``values``."""
    return ",".join("?" * len(values))


Row = TypeVar("Row", bound="DataclassInstance")
Opened = TypeVar("Opened", bound="Database")


#: Files SQLite keeps beside the ledger.
LEDGER_SIDE_FILES = ("-wal", "-shm", "-journal")


@functools.cache
def _field_names(cls: type[DataclassInstance]) -> frozenset[str]:
    return frozenset(field.name for field in dataclasses.fields(cls))


class Database:
    """An open ledger file. The aggregate modules add their methods to it."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.RLock()
        #: Open transactions of the thread holding the lock (more than one inside atomic()).
        self._depth = 0

    @classmethod
    def open(cls: type[Opened], path: Path) -> Opened:
        """Open (creating and migrating if needed) the ledger at ``path``."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # SQLite follows links: the ledger and its side files must not be one.
            for name in (path, *(Path(f"{path}{side}") for side in LEDGER_SIDE_FILES)):
                refuse_link(name)
            created = not path.exists()
            connection = sqlite3.connect(
                path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            if created:
                os.chmod(path, 0o600)
            connection.execute("PRAGMA journal_mode = WAL")
            # FULL: a committed transition survives power loss, which is what lets a
            # restarted process trust the ledger.
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.row_factory = sqlite3.Row
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from None
        except OSError as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc.strerror}") from None
        ledger = cls(connection, path)
        ledger._migrate()
        return ledger

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self: Opened) -> Opened:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._value("PRAGMA user_version") or 0)

    @property
    def journal_mode(self) -> str:
        """SQLite's journal mode (``wal``)."""
        return str(self._value("PRAGMA journal_mode"))

    def integrity_check(self) -> str:
        """SQLite's own consistency check: ``"ok"`` when the file is sound."""
        return str(self._value("PRAGMA integrity_check"))

    def _migrate(self) -> None:
        version = self.schema_version
        if version > len(MIGRATIONS):
            raise LedgerError(
                f"ledger {self.path} has schema version {version}, newer than this "
                f"exportmon understands ({len(MIGRATIONS)})",
                hint="upgrade exportmon",
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._transaction() as db:
                for statement in script.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {number}")

    @contextlib.contextmanager
    def atomic(self: Opened) -> Iterator[Opened]:
        """Make the changes made in the block one transaction: after a crash either all
        of them are in the ledger or none is (e.g. a mail and all of its exports)."""
        with self._transaction():
            yield self

    @contextlib.contextmanager
    def _transaction(self, *, commit: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._depth:
                # Inside atomic(): part of the transaction already open.
                if not commit:
                    raise LedgerError("a rolled-back transaction cannot be nested")
                yield self._db
                return
            self._depth += 1
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                if commit:
                    crash_point("ledger.commit")
                self._db.execute("COMMIT" if commit else "ROLLBACK")
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path}: {exc}") from None
            finally:
                self._depth -= 1

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path}: {exc}") from None

    def _value(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """The first column of the first row (None for no row)."""
        rows = self._rows(sql, params)
        return rows[0][0] if rows else None

    def _text(self, sql: str, params: Sequence[Any] = ()) -> str | None:
        """:meth:`_value` for a text (or NULL) column, such as a time."""
        value = self._value(sql, params)
        return None if value is None else str(value)

    def _all(self, cls: type[Row], sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [self._record(cls, row) for row in self._rows(sql, params)]

    def _record(self, cls: type[Row], row: sqlite3.Row) -> Row:
        """``row`` as a ``cls``; columns the record does not know (added by a newer
        exportmon or by hand) are ignored, missing ones are a :class:`LedgerError`."""
        known = _field_names(cls)
        values = {key: value for key, value in dict(row).items() if key in known}
        missing = known - set(values)
        if missing:
            raise LedgerError(
                f"ledger {self.path} lacks the column(s) {', '.join(sorted(missing))}",
                hint="restore the ledger from a backup or move it aside to start afresh",
            )
        return cls(**values)

    def _one(self, cls: type[Row], sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self._all(cls, sql, params)
        return rows[0] if rows else None
