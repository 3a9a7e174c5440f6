"""Alerts: what was (or is to be) told to people, and through which channels.

An alert is ``pending`` until every channel has carried it (``sent``) or a channel
has refused it for good (``failed``). A problem alert stays unresolved until its
problem is seen to end; recoveries are alerts of kind ``recovery``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from exportmon.ledger.db import Database, check_state, marks, now


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
        data: dict[str, Any] = json.loads(self.payload)  # always written from a dict
        return data

    @property
    def sent_via(self) -> set[str]:
        return set(filter(None, (self.channels or "").split(",")))


@dataclass
class AlertChannel:
    """One channel's record of one alert."""

    alert_id: int
    channel: str
    #: ``sent``, ``pending`` (retried later) or ``failed`` (never works).
    state: str
    attempts: int
    error: str | None
    last_at: str
    sent_at: str | None


@dataclass
class UnsentAlerts:
    """Alerts still pending after at least one failed attempt to send them."""

    count: int
    #: One of their errors.
    error: str | None


class AlertRecords(Database):
    """The ledger's alerts."""

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

    # --- each channel's own queue ---------------------------------------------------

    def record_channel_attempt(
        self, alert_id: int, channel: str, state: str, error: str | None = None
    ) -> None:
        """Record one attempt of ``channel`` at the alert: ``sent``, ``pending`` or ``failed``."""
        check_state(state, ("sent", "pending", "failed"), "alert channel")
        stamp = now()
        with self._transaction() as db:
            db.execute(
                "INSERT INTO alert_channels (alert_id, channel, state, attempts, error, last_at,"
                " sent_at) VALUES (?, ?, ?, 1, ?, ?, CASE WHEN ? = 'sent' THEN ? END)"
                " ON CONFLICT (alert_id, channel) DO UPDATE SET state = excluded.state,"
                " attempts = attempts + 1, error = excluded.error, last_at = excluded.last_at,"
                " sent_at = coalesce(excluded.sent_at, sent_at)",
                (alert_id, channel, state, error, stamp, state, stamp),
            )
            if state == "sent":
                self._add_alert_channel(db, alert_id, channel)

    def alert_channels(self, alert_id: int | None = None) -> list[AlertChannel]:
        """The channels' records of one alert, or of every alert."""
        if alert_id is None:
            return self._all(AlertChannel, "SELECT * FROM alert_channels ORDER BY alert_id")
        return self._all(
            AlertChannel,
            "SELECT * FROM alert_channels WHERE alert_id = ? ORDER BY channel",
            (alert_id,),
        )

    def channel_queue(self, channel: str) -> list[Alert]:
        """Pending alerts ``channel`` has neither carried nor given up on, oldest first."""
        return self._all(
            Alert,
            "SELECT a.* FROM alerts a WHERE a.state = 'pending'"
            " AND instr(',' || coalesce(a.channels, '') || ',', ',' || ? || ',') = 0"
            " AND NOT EXISTS (SELECT 1 FROM alert_channels c WHERE c.alert_id = a.id"
            " AND c.channel = ? AND c.state = 'failed') ORDER BY a.id",
            (channel, channel),
        )

    def settle_alert(self, alert_id: int, channels: Sequence[str]) -> str:
        """Set the alert's own state from its channels' records and return it.

        ``sent`` once every one of ``channels`` carried it (or gave up for good;
        ``failed`` if all gave up), ``pending`` while one is still to retry.
        """
        with self._transaction() as db:
            rows = {
                row["channel"]: row["state"]
                for row in db.execute(
                    "SELECT channel, state FROM alert_channels WHERE alert_id = ?", (alert_id,)
                ).fetchall()
            }
            carried = db.execute("SELECT channels FROM alerts WHERE id = ?", (alert_id,)).fetchone()
            for name in filter(None, ((carried[0] if carried else None) or "").split(",")):
                rows.setdefault(name, "sent")
            states = [rows.get(name, "pending") for name in channels]
            if any(state == "pending" for state in states):
                state = "pending"
            elif states and all(state == "failed" for state in states):
                state = "failed"
            else:
                state = "sent"
            error = db.execute(
                "SELECT error FROM alert_channels WHERE alert_id = ? AND state != 'sent'"
                " AND error IS NOT NULL ORDER BY last_at DESC LIMIT 1",
                (alert_id,),
            ).fetchone()
            db.execute(
                "UPDATE alerts SET state = ?, error = ?, attempts = attempts + 1,"
                " sent_at = CASE WHEN ? = 'sent' THEN coalesce(sent_at, ?) ELSE sent_at END"
                " WHERE id = ?",
                (state, error[0] if error else None, state, now(), alert_id),
            )
        return state

    def resolve_alerts(self, subject_keys: Sequence[str], at: str | None = None) -> int:
        """Mark the unresolved alerts about ``subject_keys`` resolved; return how many."""
        if not subject_keys:
            return 0
        with self._transaction() as db:
            return db.execute(
                f"UPDATE alerts SET resolved_at = ? WHERE resolved_at IS NULL"
                f" AND subject_key IN ({marks(subject_keys)})",
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
        clauses: list[str] = []
        params: list[Any] = []
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

    # --- named reads for status --------------------------------------------------------

    def count_alerts(self, state: str) -> int:
        """How many alerts are in ``state``."""
        return int(self._value("SELECT count(*) FROM alerts WHERE state = ?", (state,)))

    def unsent_alerts(self) -> UnsentAlerts:
        """The alerts that could not be sent so far (and are still to be)."""
        row = self._rows(
            "SELECT count(*) AS count, max(error) AS error FROM alerts"
            " WHERE state = 'pending' AND attempts > 0"
        )[0]
        return UnsentAlerts(count=row["count"], error=row["error"])

    def latest_alert(self, *, scope: str, kind: str) -> Alert | None:
        """The latest alert of ``kind`` about ``scope``."""
        return self._one(
            Alert,
            "SELECT * FROM alerts WHERE scope = ? AND kind = ? ORDER BY id DESC LIMIT 1",
            (scope, kind),
        )
