"""Mails and mailbox reading state.

A mail's ``state`` is ``new`` until all of its exports are delivered, then
``delivered`` until it is ``archived`` (or ``kept`` where there is no archive
folder). Mails that are not exports for this monitor are ``ignored``; mails that
cannot be read at all are ``failed``. The mailbox state remembers, per source
and mailbox, how far an incremental reader (IMAP UIDs) has got.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from exportmon.ledger.db import Database, check_state, marks, now

MAIL_STATES = ("new", "delivered", "archived", "kept", "ignored", "failed")


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


def settle_mail_in(db: sqlite3.Connection, mail_id: int) -> None:
    """In the open transaction ``db``: mark the mail ``delivered`` if all its exports are."""
    pending, total = db.execute(
        "SELECT sum(state != 'delivered'), count(*) FROM exports WHERE mail_id = ?",
        (mail_id,),
    ).fetchone()
    if total and not pending:
        db.execute(
            "UPDATE mails SET state = 'delivered', updated_at = ? WHERE id = ? AND state = 'new'",
            (now(), mail_id),
        )


class MailRecords(Database):
    """The ledger's mails and mailbox state."""

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

    def known_uids(
        self, source: str, mailbox: str = "", uidvalidity: int | None = None
    ) -> set[str]:
        """The UIDs (or keys) of mails taken from ``source`` before, in one query.

        A mail recorded as new but without exports (a crash cut its intake short)
        is left out, so it is taken again.
        """
        rows = self._rows(
            "SELECT uid FROM mails AS m WHERE source = ? AND mailbox = ? AND uidvalidity IS ?"
            " AND uid IS NOT NULL AND NOT (state = 'new' AND NOT EXISTS"
            " (SELECT 1 FROM exports AS e WHERE e.mail_id = m.id))",
            (source, mailbox, uidvalidity),
        )
        return {str(row["uid"]) for row in rows}

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
        check_state(state, MAIL_STATES, "mail")
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
            check_state(state, MAIL_STATES, "mail")
        where = f"WHERE state IN ({marks(states)})" if states else ""
        return self._all(Mail, f"SELECT * FROM mails {where} ORDER BY id", states)

    def count_mails(self, state: str) -> int:
        """How many mails are in ``state``."""
        check_state(state, MAIL_STATES, "mail")
        return int(self._value("SELECT count(*) FROM mails WHERE state = ?", (state,)))

    def failed_mails(self, *, changed_after: str | None = None) -> list[Mail]:
        """Mails that could not be processed, last changed after ``changed_after`` (if given)."""
        return self._all(
            Mail,
            "SELECT * FROM mails WHERE state = 'failed' AND (? IS NULL OR updated_at > ?)"
            " ORDER BY id",
            (changed_after, changed_after),
        )

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
        check_state(state, MAIL_STATES, "mail")
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

        :meth:`~exportmon.ledger.Ledger.advance_export` does this itself when an
        export becomes delivered.
        """
        with self._transaction() as db:
            settle_mail_in(db, mail_id)
            return str(db.execute("SELECT state FROM mails WHERE id = ?", (mail_id,)).fetchone()[0])
