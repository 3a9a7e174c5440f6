"""The ledger: one SQLite file per monitor that records every mail, export, file and delivery.

It is the single truth for "has this export been delivered", "what failed" and
"what arrived when": a process killed at any moment resumes from it without
losing or repeating work. Every change goes through the methods of
:class:`Ledger`, each one short transaction.

Progress of an export is its ``state`` (``new`` → ``downloaded`` → ``unpacked``
→ ``delivered``); a failure does not change the state but sets ``error`` (and
``retry_at`` when it may be retried automatically), so a retry resumes from the
last completed step. A mail's ``state`` is ``new`` until all of its exports are
delivered, then ``delivered`` until it is ``archived`` (or ``kept`` where there
is no archive folder). Mails that are not exports for this monitor are
``ignored``; mails that cannot be read at all are ``failed``.

Times are stored as ISO 8601 UTC text (``2026-11-23T08:40:00.123456Z``), which
sorts and compares correctly as text.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from exportmon.crashpoints import crash_point
from exportmon.errors import LedgerError

EXPORT_STATES = ("new", "downloaded", "unpacked", "delivered")
MAIL_STATES = ("new", "delivered", "archived", "kept", "ignored", "failed")
DELIVERY_STATES = ("started", "done", "failed")

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


@dataclass
class MailboxState:
    source: str
    mailbox: str
    uidvalidity: int | None
    last_uid: int
    extra: str | None
    updated_at: str


@dataclass
class Mail:
    id: int
    source: str
    mailbox: str
    uidvalidity: int | None
    uid: str | None
    message_id: str | None
    sender: str | None
    subject: str | None
    sent_at: str | None
    state: str
    note: str | None
    first_seen_at: str
    updated_at: str
    archived_at: str | None


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


@dataclass
class Alert:
    id: int
    kind: str
    subject_key: str
    state: str
    payload: str
    attempts: int
    error: str | None
    created_at: str
    sent_at: str | None
    #: What the alert concerns: ``export:<id>`` or ``monitor``; recoveries are per scope.
    scope: str | None = None
    resolved_at: str | None = None
    #: Comma-separated channels (``mail``, ``command``) that have carried the alert.
    channels: str | None = None

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.payload)

    @property
    def sent_via(self) -> set[str]:
        return set(filter(None, (self.channels or "").split(",")))


@dataclass
class StepFailure:
    """A step of a whole run (reading the mailbox, say) that is failing."""

    step: str
    error: str
    first_at: str
    last_at: str
    count: int


@dataclass
class Run:
    id: int
    command: str
    pid: int
    started_at: str
    finished_at: str | None
    status: str
    summary: str | None


Row = TypeVar("Row")


class Ledger:
    """An open ledger file. Safe to share between threads of one process.

    Open with :meth:`open` (creates and migrates the file) and close with
    :meth:`close` or a ``with`` block.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self.path = path
        self._db = connection
        self._lock = threading.RLock()
        #: Open transactions of the thread holding the lock (more than one inside atomic()).
        self._depth = 0

    # --- opening -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path) -> Ledger:
        """Open (creating and migrating if needed) the ledger at ``path``."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
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

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

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
    def atomic(self) -> Iterator[Ledger]:
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

    def _all(self, cls: type[Row], sql: str, params: Sequence[Any] = ()) -> list[Row]:
        with self._lock:
            try:
                rows = self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path}: {exc}") from None
        return [cls(**dict(row)) for row in rows]

    def _one(self, cls: type[Row], sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = self._all(cls, sql, params)
        return rows[0] if rows else None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run a read-only query (reports and status use this for aggregates)."""
        with self._lock:
            try:
                return [dict(row) for row in self._db.execute(sql, params).fetchall()]
            except sqlite3.Error as exc:
                raise LedgerError(f"ledger {self.path}: {exc}") from None

    # --- runs ------------------------------------------------------------------------

    def start_run(self, command: str) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO runs (command, pid, started_at) VALUES (?, ?, ?)",
                (command, os.getpid(), now()),
            )
            return int(cursor.lastrowid or 0)

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any] | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
                (now(), status, json.dumps(summary) if summary else None, run_id),
            )

    def runs(self, limit: int = 20) -> list[Run]:
        return self._all(Run, "SELECT * FROM runs ORDER BY id DESC LIMIT ?", (limit,))

    # --- incremental mailbox reading -------------------------------------------------

    def mailbox_state(self, source: str, mailbox: str) -> MailboxState | None:
        return self._one(
            MailboxState,
            "SELECT * FROM mailbox_state WHERE source = ? AND mailbox = ?",
            (source, mailbox),
        )

    def save_mailbox_state(
        self,
        source: str,
        mailbox: str,
        uidvalidity: int | None,
        last_uid: int,
        extra: dict[str, Any] | None = None,
    ) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO mailbox_state"
                " (source, mailbox, uidvalidity, last_uid, extra, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (source, mailbox) DO UPDATE SET"
                " uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid,"
                " extra = excluded.extra, updated_at = excluded.updated_at",
                (
                    source,
                    mailbox,
                    uidvalidity,
                    last_uid,
                    json.dumps(extra) if extra else None,
                    now(),
                ),
            )

    # --- mails -----------------------------------------------------------------------

    def find_mail(
        self,
        *,
        source: str | None = None,
        mailbox: str = "",
        uidvalidity: int | None = None,
        uid: str | None = None,
        message_id: str | None = None,
    ) -> Mail | None:
        """The mail seen before at this UID, or else with this Message-ID."""
        if uid is not None and source is not None:
            found = self._one(
                Mail,
                "SELECT * FROM mails WHERE source = ? AND mailbox = ? AND uid = ?"
                " AND uidvalidity IS ?",
                (source, mailbox, uid, uidvalidity),
            )
            if found:
                return found
        if message_id:
            return self._one(
                Mail, "SELECT * FROM mails WHERE message_id = ? ORDER BY id LIMIT 1", (message_id,)
            )
        return None

    def add_mail(
        self,
        *,
        source: str,
        mailbox: str = "",
        uidvalidity: int | None = None,
        uid: str | None = None,
        message_id: str | None = None,
        sender: str | None = None,
        subject: str | None = None,
        sent_at: str | None = None,
        state: str = "new",
        note: str | None = None,
    ) -> Mail:
        """Record a mail seen for the first time."""
        _check(state, MAIL_STATES, "mail")
        stamp = now()
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO mails (source, mailbox, uidvalidity, uid, message_id, sender,"
                " subject, sent_at, state, note, first_seen_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    source,
                    mailbox,
                    uidvalidity,
                    uid,
                    message_id,
                    sender,
                    subject,
                    sent_at,
                    state,
                    note,
                    stamp,
                    stamp,
                ),
            )
            mail_id = cursor.lastrowid
        mail = self.mail(int(mail_id or 0))
        assert mail is not None
        return mail

    def mail(self, mail_id: int) -> Mail | None:
        return self._one(Mail, "SELECT * FROM mails WHERE id = ?", (mail_id,))

    def mails(self, *states: str) -> list[Mail]:
        for state in states:
            _check(state, MAIL_STATES, "mail")
        marks = ",".join("?" * len(states))
        where = f"WHERE state IN ({marks})" if states else ""
        return self._all(Mail, f"SELECT * FROM mails {where} ORDER BY id", states)

    def set_mail_state(
        self,
        mail_id: int,
        state: str,
        *,
        note: str | None = None,
        uid: str | None = None,
        mailbox: str | None = None,
    ) -> None:
        """Move a mail to ``state``; ``uid``/``mailbox`` record where an archive move put it."""
        _check(state, MAIL_STATES, "mail")
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "UPDATE mails SET state = ?, note = coalesce(?, note), updated_at = ?,"
                " archived_at = CASE WHEN ? = 'archived' THEN ? ELSE archived_at END"
                " WHERE id = ?",
                (state, note, stamp, state, stamp, mail_id),
            )

    def settle_mail(self, mail_id: int) -> str:
        """Mark the mail ``delivered`` once every one of its exports is; return its state.

        :meth:`advance_export` does this itself when an export becomes delivered.
        """
        with self._transaction() as db:
            self._settle_mail(db, mail_id)
            return str(db.execute("SELECT state FROM mails WHERE id = ?", (mail_id,)).fetchone()[0])

    @staticmethod
    def _settle_mail(db: sqlite3.Connection, mail_id: int) -> None:
        pending = db.execute(
            "SELECT count(*) FROM exports WHERE mail_id = ? AND state != 'delivered'",
            (mail_id,),
        ).fetchone()[0]
        total = db.execute("SELECT count(*) FROM exports WHERE mail_id = ?", (mail_id,)).fetchone()[
            0
        ]
        if total and not pending:
            db.execute(
                "UPDATE mails SET state = 'delivered', updated_at = ?"
                " WHERE id = ? AND state = 'new'",
                (now(), mail_id),
            )

    # --- exports ---------------------------------------------------------------------

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
    ) -> Export:
        """Record a new export; an export with the same ``key`` is returned as it is.

        ``key`` identifies the export file for deduplication: the token of an ITRP
        export, or the Message-ID plus the attachment name.
        """
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO exports (mail_id, export_id, key, token, kind, link, file_name,"
                " download_path, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO NOTHING",
                (
                    mail_id,
                    export_id,
                    key,
                    token,
                    kind,
                    link,
                    file_name,
                    download_path,
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
        clauses, params = [], []
        if states:
            for state in states:
                _check(state, EXPORT_STATES, "export")
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
        ``delivered`` settles its mail (:meth:`settle_mail`) in the same transaction,
        so no crash can leave a mail whose exports are all delivered unsettled, and
        so never archived.
        """
        _check(state, EXPORT_STATES, "export")
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
            if state == "delivered":
                mail_id = db.execute(
                    "SELECT mail_id FROM exports WHERE id = ?", (row_id,)
                ).fetchone()[0]
                if mail_id is not None:
                    self._settle_mail(db, mail_id)
        export = self.export(row_id)
        assert export is not None
        return export

    def fail_export(self, row_id: int, step: str, error: str, retry_at: str | None) -> Export:
        """Record that ``step`` of an export failed; ``retry_at`` None means only on request."""
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET error = ?, error_step = ?, error_at = ?, retry_at = ?,"
                " attempts = attempts + 1, updated_at = ? WHERE id = ?",
                (error, step, stamp, retry_at, stamp, row_id),
            )
        export = self.export(row_id)
        if export is None:
            raise LedgerError(f"no export {row_id} in the ledger")
        return export

    def reset_export(self, row_id: int, state: str = "new") -> None:
        """Send an export back to ``state`` (an explicit re-run asked for by the user)."""
        _check(state, EXPORT_STATES, "export")
        with self._transaction() as db:
            db.execute(
                "UPDATE exports SET state = ?, error = NULL, error_step = NULL, retry_at = NULL,"
                " updated_at = ? WHERE id = ?",
                (state, now(), row_id),
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

    def finish_delivery(self, delivery_id: int, *, bytes: int, sha256: str | None = None) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'done', bytes = ?, sha256 = ?, error = NULL,"
                " finished_at = ? WHERE id = ?",
                (bytes, sha256, now(), delivery_id),
            )

    def fail_delivery(self, delivery_id: int, error: str) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'failed', error = ?, finished_at = ? WHERE id = ?",
                (error, now(), delivery_id),
            )

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
        clauses, params = [], []
        if state is not None:
            _check(state, DELIVERY_STATES, "delivery")
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
        """The completed delivery of a file to a destination, if there is one."""
        return self._one(
            Delivery,
            "SELECT * FROM deliveries WHERE file_id = ? AND destination = ? AND state = 'done'"
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

    # --- alerts ----------------------------------------------------------------------

    def add_alert(
        self,
        kind: str,
        subject_key: str,
        payload: dict[str, Any],
        *,
        scope: str | None = None,
        state: str = "pending",
        at: str | None = None,
    ) -> Alert:
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT INTO alerts (kind, subject_key, scope, state, payload, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (kind, subject_key, scope, state, json.dumps(payload, default=str), at or now()),
            )
            alert_id = cursor.lastrowid
        alert = self.alert(int(alert_id or 0))
        assert alert is not None
        return alert

    def alert(self, alert_id: int) -> Alert | None:
        return self._one(Alert, "SELECT * FROM alerts WHERE id = ?", (alert_id,))

    def set_alert_state(
        self,
        alert_id: int,
        state: str,
        error: str | None = None,
        *,
        channel: str | None = None,
    ) -> None:
        """Record a send attempt; ``channel`` adds a channel that carried the alert."""
        with self._transaction() as db:
            db.execute(
                "UPDATE alerts SET state = ?, error = ?, attempts = attempts + 1,"
                " sent_at = CASE WHEN ? = 'sent' THEN ? ELSE sent_at END WHERE id = ?",
                (state, error, state, now(), alert_id),
            )
            if channel is not None:
                self._add_alert_channel(db, alert_id, channel)

    def add_alert_channel(self, alert_id: int, channel: str) -> None:
        """Remember that ``channel`` carried the alert, so a retry does not repeat it there."""
        with self._transaction() as db:
            self._add_alert_channel(db, alert_id, channel)

    @staticmethod
    def _add_alert_channel(db: sqlite3.Connection, alert_id: int, channel: str) -> None:
        db.execute(
            "UPDATE alerts SET channels = CASE WHEN channels IS NULL OR channels = '' THEN ?"
            " WHEN instr(',' || channels || ',', ',' || ? || ',') > 0 THEN channels"
            " ELSE channels || ',' || ? END WHERE id = ?",
            (channel, channel, channel, alert_id),
        )

    def resolve_alerts(self, subject_keys: Sequence[str], at: str | None = None) -> int:
        """Mark the unresolved alerts about ``subject_keys`` resolved; return how many."""
        if not subject_keys:
            return 0
        marks = ",".join("?" * len(subject_keys))
        with self._transaction() as db:
            return db.execute(
                f"UPDATE alerts SET resolved_at = ? WHERE resolved_at IS NULL"
                f" AND subject_key IN ({marks})",
                (at or now(), *subject_keys),
            ).rowcount

    def unresolved_alerts(self) -> list[Alert]:
        """Problem alerts (not recoveries) whose problem has not been seen to end."""
        return self._all(
            Alert,
            "SELECT * FROM alerts WHERE resolved_at IS NULL AND kind != 'recovery' ORDER BY id",
        )

    def alerts(
        self,
        *,
        state: str | None = None,
        subject_key: str | None = None,
        kind: str | None = None,
        scope: str | None = None,
    ) -> list[Alert]:
        clauses, params = [], []
        for column, value in (
            ("state", state),
            ("subject_key", subject_key),
            ("kind", kind),
            ("scope", scope),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._all(Alert, f"SELECT * FROM alerts {where} ORDER BY id", params)

    # --- failures of whole steps ------------------------------------------------------

    def record_step_failure(self, step: str, error: str, at: str | None = None) -> StepFailure:
        """Record that ``step`` (e.g. ``fetch``) failed as a whole; repeats are counted."""
        stamp = at or now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO step_failures (step, error, first_at, last_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (step) DO UPDATE SET error = excluded.error,"
                " last_at = excluded.last_at, count = count + 1",
                (step, error, stamp, stamp),
            )
        failure = self._one(StepFailure, "SELECT * FROM step_failures WHERE step = ?", (step,))
        assert failure is not None
        return failure

    def clear_step_failure(self, step: str) -> bool:
        """Forget the failure of ``step`` (it worked again); True if there was one."""
        with self._transaction() as db:
            return db.execute("DELETE FROM step_failures WHERE step = ?", (step,)).rowcount > 0

    def step_failures(self) -> list[StepFailure]:
        return self._all(StepFailure, "SELECT * FROM step_failures ORDER BY first_at")

    # --- notices: things logged once -------------------------------------------------

    def notice_once(self, key: str) -> bool:
        """Count an occurrence of ``key``; True only the first time it is seen."""
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO notices (key, first_at, last_at) VALUES (?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET count = count + 1, last_at = excluded.last_at",
                (key, stamp, stamp),
            )
            count = db.execute("SELECT count FROM notices WHERE key = ?", (key,)).fetchone()[0]
            return bool(count == 1)

    # --- maintenance -----------------------------------------------------------------

    def prune(self, before: str, *, dry_run: bool = False) -> dict[str, int]:
        """Delete finished records created before ``before``; return counts per table.

        ``dry_run`` counts what would be deleted and changes nothing.
        """
        counts = {}
        with self._transaction(commit=not dry_run) as db:
            old = "SELECT id FROM exports WHERE state = 'delivered' AND created_at < ?"
            counts["deliveries"] = db.execute(
                f"DELETE FROM deliveries WHERE export_row IN ({old}) OR"
                " (export_row IS NULL AND started_at < ?)",
                (before, before),
            ).rowcount
            counts["files"] = db.execute(
                f"DELETE FROM files WHERE export_row IN ({old})", (before,)
            ).rowcount
            counts["exports"] = db.execute(
                "DELETE FROM exports WHERE state = 'delivered' AND created_at < ?", (before,)
            ).rowcount
            counts["mails"] = db.execute(
                "DELETE FROM mails WHERE first_seen_at < ? AND state IN ('archived', 'kept',"
                " 'ignored') AND id NOT IN (SELECT mail_id FROM exports WHERE mail_id IS NOT NULL)",
                (before,),
            ).rowcount
            counts["runs"] = db.execute(
                "DELETE FROM runs WHERE started_at < ? AND status != 'running'", (before,)
            ).rowcount
            # Unresolved problem alerts stay: they are what keeps a failure from being
            # alerted again as if it were new.
            counts["alerts"] = db.execute(
                "DELETE FROM alerts WHERE created_at < ? AND state != 'pending'"
                " AND (resolved_at IS NOT NULL OR kind = 'recovery')",
                (before,),
            ).rowcount
        return counts

    def integrity_check(self) -> str:
        """SQLite's own consistency check: ``"ok"`` when the file is sound."""
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])


def _check(state: str, allowed: tuple[str, ...], what: str) -> None:
    if state not in allowed:
        raise ValueError(f"{state!r} is not a {what} state ({', '.join(allowed)})")


def as_dict(record: Any) -> dict[str, Any]:
    """A ledger record as a plain dict (for ``--json`` output)."""
    return dataclasses.asdict(record)
